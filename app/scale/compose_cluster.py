"""python -m app.scale.compose_cluster [app flags]: one container of the compose multiworker profile.

Builds TF_CONFIG for this container, then replaces itself with `python -m app [app flags]
$MULTIWORKER_ARGS`, so that `docker stop` signals the trainer directly. docker-compose.yml runs it
in the chief and worker services; docs/compose-multiworker.md says how to use them.

Compose gives a container no replica index, but its name is fixed: PROJECT-chief-1 and
PROJECT-worker-1 ... PROJECT-worker-N, which Docker's embedded DNS resolves on the project network.
So every member builds the same cluster from two variables the compose file sets,
COMPOSE_PROJECT_NAME and WORKERS (N), with the function JobSet's pods use too (cluster_spec.py: the
chief first, then the workers), waits until every name resolves (a member starting late or
restarting is not resolvable yet), and finds its own task as the one name that resolves to an
address of its own (one it can bind to). Where Docker handed the container NVIDIA GPUs
(docker-compose.gpu.yml reserves all of them), it keeps one: the chief GPU 0, worker i GPU i + 1,
round robin when there are fewer GPUs than members.

Exit codes, before the trainer takes over: 2 bad settings, 1 a peer that never appeared.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping

from app.scale.cluster_spec import (
    PORT,  # reachable on the compose network only
    ClusterError,
    cluster_spec,
    exec_trainer,
    is_mine,
    resolve,
    tasks,
    tf_config,
    wait_for_names,
)
from app.scale.hardware import count_gpus

WAIT_SECONDS = 180.0  # for every member's name to resolve; a restarting peer takes a few seconds


def settings(environ: Mapping[str, str]) -> tuple[str, int]:
    """(compose project name, number of workers) from the variables docker-compose.yml sets."""
    project = environ.get("COMPOSE_PROJECT_NAME", "").strip()
    if not project:
        raise ClusterError("COMPOSE_PROJECT_NAME is not set: run this in the chief or worker service "
                           "of docker-compose.yml (docker compose --profile multiworker up)")
    raw = environ.get("WORKERS", "").strip()
    if not re.fullmatch(r"[0-9]+", raw) or int(raw) < 1:
        raise ClusterError(f"WORKERS={raw!r}: want the number of worker containers, 1 or more "
                           "(set it in the environment or .env, e.g. WORKERS=2)")
    return project, int(raw)


def cluster(project: str, workers: int, port: int = PORT) -> dict[str, list[str]]:
    """TF_CONFIG's cluster: the chief and the workers by their compose container names."""
    members = [f"{project}-chief-1", *(f"{project}-worker-{i}" for i in range(1, workers + 1))]
    return cluster_spec(members, port)


def find_task(spec: Mapping[str, list[str]], resolve: Callable[[str], Iterable[str]],
              is_mine: Callable[[str], bool], wait_seconds: float = WAIT_SECONDS,
              clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep) -> tuple[str, int]:
    """This container's (task type, index): the one member whose name resolves to its own address.

    `resolve(host)` gives the host's addresses (raising OSError while it has none); `is_mine(address)`
    says whether the address is this container's. Waits up to `wait_seconds` for all names.
    """
    members = tasks(spec)
    found, missing = wait_for_names([host for _, _, host in members], resolve, wait_seconds, clock, sleep)
    if missing:
        workers = len(spec.get("worker", []))
        raise ClusterError(
            f"{', '.join(missing)} did not resolve within {wait_seconds:.0f} s: start every member "
            f"together (docker compose --profile multiworker up, or make multiworker), with the same "
            f"WORKERS ({workers}) for all", exit_code=1)
    addresses = {(kind, index): found[host] for kind, index, host in members}
    mine = [task for task, found in addresses.items() if any(is_mine(a) for a in found)]
    if len(mine) != 1:
        names = ", ".join(host for _, _, host in members)
        raise ClusterError(
            f"{'none' if not mine else 'more than one'} of {names} resolves to this container's "
            f"address: run this only in the chief or worker service, and scale the workers with WORKERS "
            f"(not docker compose --scale)")
    return mine[0]


def gpu_for(task: tuple[str, int], gpus: int) -> str | None:
    """The GPU this member keeps (nvidia-smi numbering): the chief GPU 0, worker index i GPU i + 1,
    round robin when there are fewer GPUs than members."""
    if gpus < 1:
        return None
    kind, index = task
    return str((0 if kind == "chief" else index + 1) % gpus)


def app_args(argv: list[str], extra: str) -> list[str]:
    """The app's flags: this command's, then MULTIWORKER_ARGS split as a shell would."""
    try:
        return [*argv, *shlex.split(extra)]
    except ValueError as e:
        raise ClusterError(f"MULTIWORKER_ARGS={extra!r}: {e}; quote it as in a shell") from None


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None, *,
         resolve: Callable[[str], Iterable[str]] = resolve, is_mine: Callable[[str], bool] = is_mine,
         wait_seconds: float = WAIT_SECONDS, dev: str = "/dev",
         execve: Callable[[str, list[str], dict], object] = os.execve) -> int:
    """Build TF_CONFIG, then exec python -m app; the keywords are stand-ins for the tests."""
    argv = sys.argv[1:] if argv is None else argv
    env = dict(os.environ if environ is None else environ)
    try:
        args = app_args(argv, env.get("MULTIWORKER_ARGS", ""))
        if not {"-h", "--help"} & set(args):
            project, workers = settings(env)
            spec = cluster(project, workers)
            task = find_task(spec, resolve, is_mine, wait_seconds)
            env["TF_CONFIG"] = tf_config(spec, task)
            gpu = gpu_for(task, count_gpus(dev)) if "CUDA_VISIBLE_DEVICES" not in env else None
            if gpu is not None:
                env["CUDA_DEVICE_ORDER"], env["CUDA_VISIBLE_DEVICES"] = "PCI_BUS_ID", gpu
            print(f"compose cluster: this is {task[0]}:{task[1]} of a chief and {workers} "
                  f"worker{'s' * (workers != 1)}" + (f", on GPU {gpu}" if gpu is not None else ""),
                  flush=True)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    exec_trainer(args, env, execve)
    return 0  # only reached with a stand-in for execve (the tests')


if __name__ == "__main__":
    sys.exit(main())
