"""The best epoch, not the last: the model tested and exported is the best epoch's by --monitor, with
or without --early-stopping, and a run killed and resumed keeps its best epoch and its patience count.

The validation set is the test set here (the slice's 300 test digits), so the exported model's test
loss is exactly the best epoch's validation loss: what shows that the best weights, not the last,
were restored."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from helpers import SLICE, metrics, run_cli, run_command, with_fault

ARGS = ["--data", str(SLICE), "--batch-size", "32", "--lr-schedule", "constant"]
# A learning rate too small to change a prediction: validation accuracy stays exactly where it starts,
# so it never improves after the first epoch, whatever the CPU.
STILL = [*ARGS, "--learning-rate", "1e-9", "--monitor", "val_accuracy"]


def test_the_best_epoch_is_tested_and_exported_not_the_last(tmp_path):
    # A learning rate high enough that validation loss does not fall every epoch.
    result = run_cli(*ARGS, "--learning-rate", "0.02", "--epochs", "6", "--run-name", "best", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = metrics(tmp_path / "logs" / "fit" / "best")
    losses = run["history"]["val_loss"]
    best = int(np.argmin(losses)) + 1
    assert run["epochs_completed"] == 6 and run["exported_epoch"] == best
    assert run["best"] == {"epoch": best, "val_loss": pytest.approx(losses[best - 1])}
    assert run["test_loss"] == pytest.approx(losses[best - 1], rel=1e-5)
    if best != 6:
        assert f"best: testing and exporting epoch {best}, the best by val_loss" in result.stdout


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path):
    result = run_cli(*STILL, "--epochs", "8", "--early-stopping", "2", "--run-name", "es", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "early stopping after epoch 3: val_accuracy has not improved for 2 epochs; the best was epoch 1" \
        in result.stdout
    run = metrics(tmp_path / "logs" / "fit" / "es")
    assert (run["epochs_completed"], run["exported_epoch"]) == (3, 1)
    assert run["test_accuracy"] == pytest.approx(run["history"]["val_accuracy"][0])


KILL_AFTER_EPOCH_2 = """
import os, signal
from app import checkpoints
_save = checkpoints.save
def _save_and_die(run_dir, model, epochs_done, state, also=None):
    _save(run_dir, model, epochs_done, state, also)
    if epochs_done == 2:
        os.kill(os.getpid(), signal.SIGKILL)
checkpoints.save = _save_and_die
"""


def test_a_killed_run_resumes_with_its_best_epoch_and_its_patience_count(tmp_path):
    args = [*STILL, "--epochs", "8", "--early-stopping", "2"]
    whole = run_cli(*args, "--run-name", "whole", cwd=tmp_path)
    killed = run_command(with_fault(KILL_AFTER_EPOCH_2, *args, "--run-name", "cut"), tmp_path)
    assert whole.returncode == 0 and killed.returncode == -signal.SIGKILL, whole.stderr + killed.stderr
    resumed = run_cli(*args, "--run-name", "cut", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    # One epoch more, not two: the count of epochs without improvement went on from the checkpoint.
    assert [line for line in resumed.stdout.splitlines() if line.startswith("Epoch ")] == ["Epoch 3/8"]
    a, b = (metrics(tmp_path / "logs" / "fit" / name) for name in ("whole", "cut"))
    ended = [(m["epochs_completed"], m["exported_epoch"]) for m in (a, b)]
    assert ended == [(3, 1), (3, 1)]
    assert b["test_loss"] == a["test_loss"] and b["history"] == a["history"]
