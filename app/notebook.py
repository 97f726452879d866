"""What notebooks/mnist_tensorboard.ipynb needs beyond train(config): kept here, so the notebook stays short.

- `settings(...)`: a Config as `python -m app` would build it, continuing the run when it exists
  (resume auto), so that after the kernel's stop button the same cell carries on from the last epoch.
- `tensorboard_logdir(log_dir)`: `%tensorboard`'s --logdir, quoted: the magic splits its line as a shell
  would (shlex, `#` starting a comment), so a space or a `#` in log_dir would cut it.
- `clear_stale_tensorboards()`: before `%tensorboard`. The magic reuses any TensorBoard that left an
  info file in $TMPDIR/.tensorboard-info with the same arguments, without checking that it still
  runs (tensorboard#2057): after a kernel restart, which kills the kernel's children, the frame would
  point at a dead port.
- `stack_tensorboard()`: a link to the compose stack's own TensorBoard service, when it answers.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import urllib.request
from pathlib import Path

from app import runs
from app.config import Config


def settings(**given) -> Config:
    """The run's Config from the notebook's values, as the CLI builds it from flags.

    With `resume="auto"` (the notebook's choice) an existing run is continued with the settings it
    began with, and only those a resume may change (epochs, data, log_dir) taken from `given`.
    """
    config = runs.settled_config(given)
    runs.check_writable(config.log_dir)
    return config


def tensorboard_logdir(log_dir: str | os.PathLike) -> str:
    """The runs' folder, log_dir/fit, as one argument of `%tensorboard --logdir ...`."""
    return shlex.quote(str(Path(log_dir) / "fit"))


def clear_stale_tensorboards() -> list[int]:
    """Remove the info files of TensorBoards that no longer run; return their process ids."""
    from tensorboard import manager

    gone = [info.pid for info in manager.get_all() if not _alive(info.pid)]
    for pid in gone:
        (info_dir() / f"pid-{pid}.info").unlink(missing_ok=True)
    return gone


def info_dir() -> Path:
    """Where tensorboard.manager keeps its info files, one pid-<pid>.info per TensorBoard. BORROWED:
    its private _get_info_dir; app/borrowed.py checks the two agree."""
    return Path(tempfile.gettempdir()) / ".tensorboard-info"


def _alive(pid: int) -> bool:
    try:
        # A TensorBoard this kernel started and that died is a zombie until reaped: reap it.
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:  # not this process's child: ask whether it exists
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process, alive
        return True
    return True


def stack_tensorboard():
    """A link to the stack's TensorBoard service (`make tensorboard`), or a line on how to start it.

    In the notebook container, compose sets STACK_TENSORBOARD (the service, as the container reaches
    it) and STACK_TENSORBOARD_URL (the same, as the browser on the host reaches it).
    """
    from IPython.display import Markdown

    inside, url = os.environ.get("STACK_TENSORBOARD"), os.environ.get("STACK_TENSORBOARD_URL")
    if not inside or not url:  # a local Jupyter or Colab: the port 6006 may be the inline one's
        return Markdown("Outside the notebook container, `make tensorboard` serves every run in "
                        "`logs/fit` at http://localhost:6006.")
    try:
        urllib.request.urlopen(f"{inside}/data/runs", timeout=3).close()
    except OSError:
        return Markdown(f"The stack's TensorBoard does not answer at {inside}: `make tensorboard` "
                        "starts it.")
    return Markdown(f"The stack's TensorBoard, with every run in `logs/fit`: [{url}]({url})")
