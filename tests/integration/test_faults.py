"""Faults injected for real: kill -9 at exact moments, NaN, a full disk, a failing download."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import threading

import keras
import pytest
from helpers import (
    SLICE,
    events,
    fill,
    latest_checkpoint,
    metrics,
    run_cli,
    run_command,
    scalar_steps,
    small_disk,
    with_fault,
)

KILL_WHILE_CHECKPOINTING = """
import os, signal
from app import durable
_sync_tree = durable.sync_tree
def _sync_then_die(folder):
    _sync_tree(folder)
    if folder.name == ".tmp-epoch-{epochs:04d}":  # written and synced, not yet renamed into place
        os.kill(os.getpid(), signal.SIGKILL)
durable.sync_tree = _sync_then_die
"""

KILL_WHILE_VALIDATING = """
import os, signal
from app import validation
_validate = validation.Validation.on_epoch_end
def _validate_and_die(self, epoch, logs=None):
    if epoch == {epoch}:
        self.model.predict(self.batches.take(2), verbose=0)  # part-way through the validation pass
        os.kill(os.getpid(), signal.SIGKILL)
    return _validate(self, epoch, logs)
validation.Validation.on_epoch_end = _validate_and_die
"""

KILL_MID_EPOCH = """
import os, signal
from app.tabs import batch_scalars
_log = batch_scalars.BatchScalars.on_train_batch_end
def _log_and_die(self, batch, logs=None):
    _log(self, batch, logs)
    if int(self.model.optimizer.iterations.numpy()) == {step}:
        os.kill(os.getpid(), signal.SIGKILL)
batch_scalars.BatchScalars.on_train_batch_end = _log_and_die
"""

POISON_AFTER_FIRST_CHECKPOINT = """
from app import checkpoints
_save = checkpoints.save
def _save_then_poison(run_dir, model, epochs_done, state, also=None):
    _save(run_dir, model, epochs_done, state, also)
    if epochs_done == 1:  # a real NaN in the real weights, as a diverging run would have
        for variable in model.trainable_variables:
            variable.assign(variable * float("nan"))
checkpoints.save = _save_then_poison
"""

STEPS = 19  # an epoch of the slice's 1,200 images in batches of 64


@pytest.mark.slow
def test_three_kills_at_the_worst_moments_still_give_the_uninterrupted_result(tmp_path):
    args = ["--data", str(SLICE), "--epochs", "6", "--batch-size", "64", "--batch-log-every", "3"]
    whole = run_cli(*args, "--run-name", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    run = [*args, "--run-name", "killed"]
    run_dir = tmp_path / "logs" / "fit" / "killed"

    # 1. Half-way through writing epoch 2's checkpoint: epoch 1's stands, the half-written one is ignored.
    first = run_command(with_fault(KILL_WHILE_CHECKPOINTING.format(epochs=2), *run), tmp_path)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert (run_dir / "checkpoints" / ".tmp-epoch-0002" / "model.keras").is_file()
    assert latest_checkpoint(run_dir)[0] == 1
    # 2. During the validation pass of epoch 4 (index 3), after the checkpoint of epoch 3.
    second = run_command(with_fault(KILL_WHILE_VALIDATING.format(epoch=3), *run, "--resume"), tmp_path)
    assert second.returncode == -signal.SIGKILL, second.stderr
    assert "resuming killed after epoch 1 of 6" in second.stdout
    assert latest_checkpoint(run_dir)[0] == 3 and not (run_dir / "checkpoints" / ".tmp-epoch-0002").exists()
    # 3. In the middle of epoch 5.
    third = run_command(with_fault(KILL_MID_EPOCH.format(step=4 * STEPS + 7), *run, "--resume"), tmp_path)
    assert third.returncode == -signal.SIGKILL, third.stderr
    assert latest_checkpoint(run_dir)[0] == 4
    finished = run_cli(*run, "--resume", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr

    # The same result as without the kills (a resumed run sees the very same batches)...
    killed, expected = metrics(run_dir), metrics(tmp_path / "logs" / "fit" / "whole")
    assert killed["epochs_completed"] == 6
    assert abs(killed["test_accuracy"] - expected["test_accuracy"]) <= 0.003
    # In fact to the last bit: the same batches, dropout masks, weights and optimizer state.
    assert killed["history"] == expected["history"] and killed["test_loss"] == expected["test_loss"]
    # ...and one continuous run in TensorBoard: each epoch once, batch steps strictly rising.
    assert scalar_steps(run_dir / "validation", "epoch_accuracy") == list(range(6))
    assert scalar_steps(run_dir / "train", "mnist_cnn/conv2/kernel/histogram") == list(range(6))
    assert [e.step for e in events(run_dir).Tensors("misclassified")] == list(range(6))
    batch_steps = scalar_steps(run_dir, "batch_loss")
    assert batch_steps == sorted(set(batch_steps)) and batch_steps[-1] == 6 * STEPS
    assert batch_steps == scalar_steps(tmp_path / "logs" / "fit" / "whole", "batch_loss")


def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path):
    run = ["--data", str(SLICE), "--epochs", "4", "--batch-size", "64", "--run-name", "nan"]
    run_dir = tmp_path / "logs" / "fit" / "nan"
    result = run_command(with_fault(POISON_AFTER_FIRST_CHECKPOINT, *run), tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: the loss became NaN or infinite at step {STEPS + 1}: training "
                                "diverged; nan keeps its checkpoint after epoch 1. Lower --learning-rate")
    assert "Traceback" not in result.stderr
    assert "Epoch 3/4" not in result.stdout  # it stopped in epoch 2, at the first NaN
    assert latest_checkpoint(run_dir)[0] == 1
    model = keras.models.load_model(run_dir / "checkpoints" / "epoch-0001" / "model.keras")
    assert all(keras.ops.all(keras.ops.isfinite(w)) for w in model.weights)


def test_a_learning_rate_that_diverges_is_reported_in_one_line(tmp_path):
    result = run_cli("--data", str(SLICE), "--epochs", "2", "--learning-rate", "1e12", "--run-name", "huge",
                     cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: the loss became ")
    assert "Lower --learning-rate" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_fails_clearly_and_resumes_once_space_is_freed(tmp_path):
    # Room for one checkpoint (2.7 MB: weights and Adam's moments) but not for a second beside it.
    with small_disk(tmp_path / "logs", "4m") as logs:
        run = ["--data", str(SLICE), "--epochs", "4", "--batch-size", "64", "--log-dir", str(logs),
               "--run-name", "full"]
        result = run_cli(*run, cwd=tmp_path)
        assert result.returncode == 1
        message = result.stderr.strip().splitlines()[-1]
        assert message.startswith("error: cannot write ") and "No space left on device" in message
        assert "full keeps its checkpoint after epoch 1" in message and "--run-name full --resume" in message
        run_dir = logs / "fit" / "full"
        assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["epoch-0001"]  # no half-written one

        subprocess.run(["mount", "-o", "remount,size=64m", str(logs)], check=True)
        resumed = run_cli("--log-dir", str(logs), "--run-name", "full", "--resume", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming full after epoch 1 of 4" in resumed.stdout
        assert metrics(run_dir)["epochs_completed"] == 4
        assert scalar_steps(run_dir / "validation", "epoch_loss") == [0, 1, 2, 3]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_disk_full_before_the_first_file_leaves_no_run_folder_so_the_same_command_starts_it(tmp_path):
    with small_disk(tmp_path / "logs", "16m") as logs:
        (logs / "fit").mkdir()
        fill(logs)  # every block taken: config.json cannot be written
        run = ["--data", str(SLICE), "--epochs", "1", "--log-dir", str(logs), "--run-name", "full"]
        result = run_cli(*run, cwd=tmp_path)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        message = result.stderr.strip().splitlines()[-1]
        assert message.startswith("error: cannot write ") and "No space left on device" in message, message
        assert "nothing was kept of run full" in message and "run the same command again" in message
        assert list((logs / "fit").iterdir()) == []  # else the same command would be refused: it exists

        (logs / "filler").unlink()
        again = run_cli(*run, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert metrics(logs / "fit" / "full")["epochs_completed"] == 1


# --- the keras.datasets download ---------------------------------------------------------------

SERVE_ERROR_PAGE = """
from keras.src.utils import file_utils
def _proxy_error_page(url, filename, reporthook=None, data=None):
    with open(filename, "w") as f:  # what a proxy's block page looks like on disk: HTTP 200, HTML
        f.write("<html><body><h1>Access denied by policy</h1></body></html>")
file_utils.urlretrieve = _proxy_error_page
"""


def _refused_download(result, workdir) -> None:
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: could not download mnist from "
                              "https://storage.googleapis.com/tensorflow/tf-keras-datasets/")
    assert "--data PATH" in message and "Traceback" not in result.stderr
    cache = workdir / "keras" / "datasets"  # (keras.json beside it is Keras' own settings file)
    assert [p for p in cache.rglob("*") if p.is_file()] == [], "a broken download stayed cached"
    fit = workdir / "logs" / "fit"
    assert not fit.exists() or not list(fit.iterdir()), "a run folder was left behind"


def test_download_without_network_names_the_url_and_the_offline_way(tmp_path):
    with socket.socket() as closed:  # a port that nothing listens on: the connection is refused
        closed.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
    env = {"KERAS_HOME": str(tmp_path / "keras"), "https_proxy": proxy, "HTTPS_PROXY": proxy}
    _refused_download(run_command(with_fault("", "--epochs", "1"), tmp_path, env=env), tmp_path)


def test_download_refused_by_a_proxy_names_the_url(tmp_path):
    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_CONNECT(self):  # noqa: N802 (http.server's naming)
            self.send_error(502, "Bad Gateway", "<html>upstream unreachable</html>")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proxy = f"http://127.0.0.1:{server.server_address[1]}"
        result = run_command(with_fault("", "--epochs", "1"), tmp_path,
                             env={"KERAS_HOME": str(tmp_path / "keras"), "https_proxy": proxy,
                                  "HTTPS_PROXY": proxy})
    finally:
        server.shutdown()
    _refused_download(result, tmp_path)
    assert "502" in result.stderr


def test_an_error_page_served_as_the_file_is_not_left_in_the_cache(tmp_path):
    result = run_command(with_fault(SERVE_ERROR_PAGE, "--epochs", "1"), tmp_path,
                         env={"KERAS_HOME": str(tmp_path / "keras")})
    _refused_download(result, tmp_path)
    assert "hash does not match" in result.stderr
