"""Helpers for the tests: run the real CLI, read event files back, talk to a real TensorBoard."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from tools.common import free_port

ROOT = Path(__file__).resolve().parents[1]
SLICE = ROOT / "tests" / "data" / "mnist-slice.npz"  # 1,200 + 300 real MNIST digits


def slice_arrays() -> dict[str, np.ndarray]:
    """The committed slice: x_train (1,200), y_train, x_test (300), y_test, as keras.datasets has them."""
    with np.load(SLICE) as npz:
        return {k: npz[k] for k in npz.files}


def idx_bytes(array: np.ndarray) -> bytes:
    """`array` (uint8 images (N, 28, 28) or labels (N,)) as an uncompressed MNIST IDX file."""
    header = (0x803 if array.ndim == 3 else 0x801).to_bytes(4, "big")
    return header + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


def this_cpu() -> tuple[str, bool]:
    """(model name, native bfloat16) of this machine, read from /proc/cpuinfo here, independently of
    app/scale/hardware.py, to check what the benchmarks report."""
    text = Path("/proc/cpuinfo").read_text()
    name = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE).group(1).strip()
    flags = set(re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE).group(1).split())
    return name, bool({"avx512_bf16", "amx_bf16"} & flags)


def run_folders(fit: Path) -> list[str]:
    """The names of the run folders in log folder `fit`, sorted; not its `_hparams` run, which holds
    the HParams tab's columns (app/tabs/hparams.py), nor hidden files."""
    if not fit.is_dir():
        return []
    return sorted(p.name for p in fit.iterdir() if p.is_dir() and p.name[0].isalnum())


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def run_config(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())


def latest_checkpoint(run_dir: Path) -> tuple[int, int]:
    """(epochs, steps) of the run's newest complete checkpoint, (0, 0) before the first."""
    folders = sorted((run_dir / "checkpoints").glob("epoch-*")) if (run_dir / "checkpoints").is_dir() else []
    if not folders:
        return 0, 0
    return int(folders[-1].name[6:]), json.loads((folders[-1] / "state.json").read_text())["steps"]


def cli_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("KERAS_HOME", None)
    return env


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m app ARGS` in `cwd`, as a user would run it."""
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def run_main(main, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A command line's `main(args)` run in this process, in `cwd`, with `env` set: its exit code and
    output as a user sees them (the fast tier's way to run the CLIs; argparse's exits included)."""
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env or {}}
    previous = os.getcwd()
    try:
        os.environ.update(env or {})
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(previous)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app", *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05,
             process: subprocess.Popen | None = None):
    """Poll `predicate` until it returns something true, and return that.

    With `process` (one that has to bring the awaited state about), its exit ends the wait at once:
    an AssertionError with its return code and output, not a wait for the timeout.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            value = predicate()  # it may have got there just before it exited
            if value:
                return value
            output = "".join(_read(stream) for stream in (process.stdout, process.stderr))
            raise AssertionError(f"{what}: the process exited first, with code {process.returncode}; "
                                 f"its output:\n{output}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _read(stream) -> str:
    """What is left in a process's stdout or stderr pipe (nothing if it is not a pipe)."""
    if stream is None or stream.closed:
        return ""
    data = stream.read()
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def events(directory: Path):
    """TensorBoard's own loader over one run directory (not its subdirectories)."""
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        str(directory), size_guidance={k: 0 for k in event_accumulator.DEFAULT_SIZE_GUIDANCE})
    accumulator.Reload()
    return accumulator


def scalar_steps(directory: Path, tag: str) -> list[int]:
    return [e.step for e in events(directory).Tensors(tag)]


def scalar_values(directory: Path, tag: str) -> list[float]:
    import tensorflow as tf

    return [float(tf.make_ndarray(e.tensor_proto)) for e in events(directory).Tensors(tag)]


def http_get(url: str):
    """A GET to TensorBoard's HTTP API: JSON decoded, anything else (a PNG, say) as bytes."""
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
        return json.loads(body) if "json" in response.headers.get("Content-Type", "") else body


def http_post(url: str, payload: dict):
    """A JSON POST to TensorBoard's HTTP API (the HParams plugin's queries), with its XSRF header."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class TensorBoard:
    """A real TensorBoard process serving a log folder on a free local port, as the compose file
    starts it (app/tensorboard_server.py: TensorBoard sharing its answers for --reload_interval)."""

    def __init__(self, logdir: Path):
        # A free port can be taken by another process before TensorBoard binds it: then try another.
        for attempt in range(3):
            self.port = free_port()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.tensorboard_server", "--logdir", str(logdir),
                 "--port", str(self.port), "--host", "127.0.0.1", "--reload_interval", "1"], cwd=ROOT,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                wait_for(self._up, 60, "TensorBoard to answer", interval=0.3, process=self.process)
                return
            except AssertionError as e:
                if attempt == 2 or "already in use" not in str(e):
                    raise

    def _up(self) -> bool:
        try:
            self.get("/data/logdir")
            return True
        except OSError:
            return False

    def get(self, path: str):
        return http_get(f"http://127.0.0.1:{self.port}{path}")

    def post(self, path: str, payload: dict):
        return http_post(f"http://127.0.0.1:{self.port}{path}", payload)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


def with_fault(fault: str, *args: str) -> list[str]:
    """The command line of `python -m app ARGS` with `fault` run first in the same process.

    The fault patches a function of the app so that the process kills itself with SIGKILL at an
    exact point (half-way through writing a checkpoint, say): a real kill -9, at a moment no
    outside timing could hit reliably.
    """
    code = f"{fault}\nimport sys\nfrom app.__main__ import main\nsys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *args]


def run_command(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env={**cli_env(), **(env or {})}, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


def loading_in_a_fresh_process(path) -> tuple[str, float, bool]:
    """data.load of `path` in a fresh process: its refusal message (or "loaded"), its peak resident
    memory in MB, and whether it imported TensorFlow."""
    # VmHWM, not getrusage: ru_maxrss carries the parent's peak over into a spawned child.
    code = ("import sys\nfrom app import data\ntry:\n    data.load('mnist', sys.argv[1])\n"
            "    print('loaded')\nexcept data.DataError as e:\n    print(e)\n"
            "print('tensorflow' in sys.modules)\nprint(next(int(line.split()[1]) for line in "
            "open('/proc/self/status') if line.startswith('VmHWM')) / 1024)")
    result = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, env=cli_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    message, tensorflow, peak = result.stdout.strip().splitlines()
    return message, float(peak), tensorflow == "True"


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of `size` mounted on `folder` (root only), for a real full disk; unmounted after."""
    folder.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def fill(disk: Path) -> None:
    """Take every free block of `disk` with the file `filler`, until the kernel says ENOSPC."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as e:
        assert e.errno == 28
    finally:
        os.close(fd)
