"""Which sweepers are alive: each holds a lock that the kernel drops the moment it dies.

Optuna's journal storage has no heartbeat, so a trial whose sweeper was killed stays RUNNING.
Every sweeper holds an exclusive flock(2) on its own file, <sweep>/sweepers/<id>.lock, for as
long as it lives; a trial records the id of the sweeper that runs it. When a sweeper dies,
however (Ctrl-C, docker stop, kill -9, OOM), the kernel releases its lock at once: a trial whose
sweeper's lock can be taken is an orphan, and is taken over. No timeouts, no clocks to trust.
flock works between processes and containers of one host that share the folder (one kernel);
sweepers on several machines share a study in PostgreSQL instead, and a heartbeat (database.py).

`claiming()` serialises the choice of trials, so two sweepers never adopt the same orphan, and a
trial is never seen RUNNING without its owner: it is asked for and owned under this lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path

OWNER = "sweeper"  # the user attr naming the sweeper that runs a trial


class Sweeper:
    """This process's identity, alive while the object (and its open lock file) is."""

    def __init__(self, sweep_dir: Path):
        self.folder = sweep_dir / "sweepers"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._file = open(self.folder / f"{self.id}.lock", "w")  # noqa: SIM115 (held for life)
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.closed = False

    def is_alive(self, owner: str | None) -> bool:
        """Whether sweeper `owner` still lives; its leftover lock file goes once it is known dead."""
        if owner is None:
            return False
        if owner == self.id:
            return not self.closed
        path = self.folder / f"{owner}.lock"
        try:
            with open(path, "r+") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                path.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        return False

    # What study.py and runner.py ask of a sweeper, here and in database.Heartbeats.
    def claiming(self):
        return claiming(self.folder.parent)

    def dead(self, trials: Iterable) -> set[int]:
        """The numbers of the RUNNING trials (FrozenTrials) whose sweeper is dead."""
        return {t.number for t in trials
                if t.state.name == "RUNNING" and not self.is_alive(t.user_attrs.get(OWNER))}

    def take(self, trial) -> None:
        trial.set_user_attr(OWNER, self.id)

    def owns(self, trial) -> bool:
        return True  # the lock is held for life: no one takes a live sweeper's trial

    def beating(self, trial):
        return contextlib.nullcontext()  # the kernel keeps the lease

    def close(self) -> None:
        """Give up the lease: from now on this sweeper's trials are orphans, for it as for others."""
        self.closed = True
        path = Path(self._file.name)
        path.unlink(missing_ok=True)
        self._file.close()


@contextlib.contextmanager
def claiming(sweep_dir: Path):
    """Hold the sweep's claim lock: one sweeper at a time picks, adopts or asks for a trial."""
    with open(sweep_dir / "claim.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def keep_one_gpu(folder: Path, gpus: int, environ: dict) -> int | None:
    """Choose this sweeper's GPU among `gpus` handed to it; set CUDA_VISIBLE_DEVICES in `environ`.

    Compose replicas that each reserve `count: 1` may all get the same GPU, so every sweeper is
    handed all of them and keeps the first whose lock (folder/gpu-N.lock) it can take, for life.
    With more sweepers than GPUs, the extra ones share a GPU (by host name and process id). Returns the GPU.
    """
    if gpus < 2 or "CUDA_VISIBLE_DEVICES" in environ:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    # Every sweeper container is PID 1: the host name (the container's id) tells them apart.
    chosen = zlib.crc32(f"{socket.gethostname()}-{os.getpid()}".encode()) % gpus
    for index in range(gpus):
        f = open(folder / f"gpu-{index}.lock", "a")  # noqa: SIM115 (held for life when taken)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        _held.append(f)
        chosen = index
        break
    environ["CUDA_DEVICE_ORDER"], environ["CUDA_VISIBLE_DEVICES"] = "PCI_BUS_ID", str(chosen)
    return chosen


_held: list = []  # the GPU lock this process keeps
