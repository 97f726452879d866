"""notebooks/mnist_tensorboard.ipynb, executed headless with a real kernel, as a user runs it.

Papermill's convention sets the cell tagged `parameters` (the slice, one epoch, a temporary log
folder); nbclient runs the cells in a real ipykernel, from `notebooks/` as JupyterLab would. The
kernel stays up while the tests look at what the user sees: the inline TensorBoard frame, and
that TensorBoard itself, which the magic started as the kernel's child, listing the new run.
TMPDIR is the test's own, so the magic's info files ($TMPDIR/.tensorboard-info) are too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading

import pytest
from helpers import ROOT, SLICE, http_get, wait_for
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook
from tensorboard import manager

NOTEBOOK = ROOT / "notebooks" / "mnist_tensorboard.ipynb"
RUN = "nb-test"


def kernel_env(tmp_path) -> dict[str, str]:
    # The venv's bin first on PATH, as for a user who activated it: the magic runs `tensorboard`.
    return dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
                TMPDIR=str(tmp_path / "tmp"), TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def executed(tmp_path, **parameters):
    """The notebook with `parameters` injected, and a started client; the caller executes and stops it."""
    notebook = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), parameters)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    return notebook, client


def text_of(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def tensorboard_pids(tmp_path) -> list[int]:
    info_dir = tmp_path / "tmp" / ".tensorboard-info"
    files = sorted(info_dir.glob("pid-*.info")) if info_dir.is_dir() else []
    return [json.loads(p.read_text())["pid"] for p in files]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The whole notebook, executed, with its kernel (and so its TensorBoard) still running."""
    tmp_path = tmp_path_factory.mktemp("notebook")
    notebook, client = executed(tmp_path, epochs=1, data=str(SLICE), log_dir=str(tmp_path / "logs"),
                                run_name=RUN)
    with client.setup_kernel(env=kernel_env(tmp_path), cwd=str(ROOT / "notebooks")):
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)
        yield notebook, tmp_path
        pids = tensorboard_pids(tmp_path)
    for pid in pids:  # the kernel's shutdown usually takes its children along; make sure
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass


def cell_with(notebook, source: str):
    [cell] = [c for c in notebook.cells if c.cell_type == "code" and source in c.source]
    return cell


def test_no_cell_shows_an_error(run):
    notebook, _ = run
    errors = [(c.source[:60], o.get("ename"), o.get("evalue")) for c in notebook.cells
              if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    trained = text_of(cell_with(notebook, "train(config)"))
    assert f"run {run[1] / 'logs' / 'fit' / RUN}: test accuracy" in trained


def test_the_magic_draws_the_frame_and_its_tensorboard_lists_the_run_with_every_kind_of_data(run):
    notebook, _ = run
    [frame] = [o["data"]["text/html"] for o in cell_with(notebook, "%tensorboard").outputs
               if o.output_type == "display_data" and "text/html" in o.get("data", {})]
    assert '<iframe id="tensorboard-frame-' in frame
    port = int(re.search(r"const port = (\d+);", frame)[1])
    assert port > 0

    def get(path):
        return http_get(f"http://127.0.0.1:{port}{path}")

    # The run's three parts (the run, train/, validation/), each once TensorBoard has read it.
    wait_for(lambda: {RUN, f"{RUN}/train", f"{RUN}/validation"} <= set(get("/data/plugin/scalars/tags")),
             60, "the inline TensorBoard to list the run")
    scalars = get("/data/plugin/scalars/tags")
    assert {"epoch_loss", "epoch_accuracy"} <= set(scalars[f"{RUN}/validation"])
    assert "test_accuracy" in scalars[RUN]  # batch_* every 20 steps: one epoch of the slice has 5
    histograms = get("/data/plugin/histograms/tags")
    assert any(tag.startswith("mnist_cnn/conv1/kernel") for tag in histograms[f"{RUN}/train"])
    images = get("/data/plugin/images/tags")
    assert images[RUN], images


def test_the_last_cell_shows_the_exported_models_predictions(run):
    notebook, _ = run
    cell = cell_with(notebook, "signatures[\"serving_default\"]")
    shown = [o for o in cell.outputs if o.output_type == "display_data"]
    assert any("image/png" in o["data"] for o in shown), "no picture of the digits"
    shown_text = re.search(r"^predicted: ([0-9 ]+)\ntrue: +([0-9 ]+)$", text_of(cell), re.MULTILINE)
    predicted, true = shown_text.groups()
    assert len(predicted.split()) == len(true.split()) == 12
    # One epoch on 1,200 digits already gets most of them right.
    assert sum(p == t for p, t in zip(predicted.split(), true.split(), strict=True)) >= 6, text_of(cell)


def test_a_restarted_kernel_starts_a_new_tensorboard_instead_of_showing_the_dead_one(run, tmp_path):
    """tensorboard#2057: the magic reuses an info file whose process is gone; the notebook clears them."""
    notebook, first = run
    # What a kernel killed with its TensorBoard leaves behind: an info file of a process that is gone.
    info_dir = tmp_path / "tmp" / ".tensorboard-info"
    info_dir.mkdir(parents=True)
    [old] = (first / "tmp" / ".tensorboard-info").glob("pid-*.info")
    dead = json.loads(old.read_text())
    dead.update(pid=2**22 + 1, port=1)  # no such process (above Linux's pid_max default)
    (info_dir / f"pid-{dead['pid']}.info").write_text(json.dumps(dead))
    again, client = executed(tmp_path, epochs=1, data=str(SLICE), log_dir=str(first / "logs"), run_name=RUN)
    with client.setup_kernel(env=kernel_env(tmp_path), cwd=str(ROOT / "notebooks")):
        for index, cell in enumerate(again.cells[:again.cells.index(cell_with(again, "%tensorboard")) + 1]):
            client.execute_cell(cell, index)
        outputs = cell_with(again, "%tensorboard").outputs
        pids = tensorboard_pids(tmp_path)
    for pid in pids:
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass
    assert not any("Reusing TensorBoard" in str(o) for o in outputs), outputs
    assert dead["pid"] not in pids
    [frame] = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert "const port = 1;" not in frame


def test_the_kernels_stop_button_stops_training_and_the_same_cell_continues_the_run(tmp_path):
    notebook, client = executed(tmp_path, epochs=12, data=str(SLICE), log_dir=str(tmp_path / "logs"),
                                run_name="stopped")
    training = cell_with(notebook, "train(config)")
    index = notebook.cells.index(training)
    checkpoints = tmp_path / "logs" / "fit" / "stopped" / "checkpoints"
    with client.setup_kernel(env=kernel_env(tmp_path), cwd=str(ROOT / "notebooks")):
        for i, cell in enumerate(notebook.cells[:index]):
            if "%tensorboard" not in cell.source:  # not needed here
                client.execute_cell(cell, i)

        def stop_button():
            wait_for(lambda: checkpoints.is_dir() and any(checkpoints.glob("epoch-*")), 120, "a checkpoint")
            # What the stop button does (jupyter_client's LocalProvisioner.send_signal): SIGINT to the
            # kernel's process group.
            os.killpg(client.km.provisioner.pgid, signal.SIGINT)

        stopper = threading.Thread(target=stop_button)
        stopper.start()
        with pytest.raises(CellExecutionError):
            client.execute_cell(training, index)
        stopper.join()
        stopped = text_of(training)
        saved = int(re.search(r"SIGINT: stopped; stopped is saved after epoch (\d+)\.", stopped)[1])
        assert 0 < saved < 12, stopped
        [error] = [o for o in training.outputs if o.output_type == "error"]
        assert error.ename == "Interrupted"

        training.outputs = []  # the user runs the same cell again, in the same kernel
        client.execute_cell(training, index)
        again = text_of(training)
    assert f"resuming stopped after epoch {saved} of 12" in again, again
    assert re.search(r"^run .*stopped: test accuracy", again, re.MULTILINE), again
    done = json.loads((tmp_path / "logs" / "fit" / "stopped" / "metrics.json").read_text())
    assert done["epochs_completed"] == 12


def test_the_magic_gets_a_log_dir_with_spaces_and_shell_characters_whole(tmp_path):
    """`%tensorboard` splits its line as a shell would (shlex, `#` starting a comment): log_dir is quoted."""
    log_dir = tmp_path / "my logs; touch pwned #1 $HOME"
    notebook, client = executed(tmp_path, epochs=1, data=str(SLICE), log_dir=str(log_dir), run_name=RUN)
    magic = cell_with(notebook, "%tensorboard")
    with client.setup_kernel(env=kernel_env(tmp_path), cwd=str(ROOT / "notebooks")):
        for index, cell in enumerate(notebook.cells[:notebook.cells.index(magic) + 1]):
            client.execute_cell(cell, index)
        info_files = sorted((tmp_path / "tmp" / ".tensorboard-info").glob("pid-*.info"))
        info = [json.loads(p.read_text()) for p in info_files]
    for started in info:
        try:
            os.kill(started["pid"], 15)
        except ProcessLookupError:
            pass
    # The arguments TensorBoard was started with, as its own cache key records them (cwd: the root).
    arguments = ["--logdir", str(log_dir / "fit"), "--reload_interval", "2"]
    assert [(i["logdir"], i["cache_key"]) for i in info] == [
        (str(log_dir / "fit"), manager.cache_key(str(ROOT), arguments, {}))], magic.outputs
