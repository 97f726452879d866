"""Stopping a run for real (kill -9, SIGTERM) and continuing it with --resume."""

from __future__ import annotations

import signal
import time

from helpers import (
    SLICE,
    events,
    latest_checkpoint,
    metrics,
    run_cli,
    run_config,
    scalar_steps,
    start_cli,
    wait_for,
)

from app import runs


def _batch_steps(run_dir) -> list[int]:
    try:
        return scalar_steps(run_dir, "batch_loss")
    except KeyError:
        return []


def test_kill_9_mid_epoch_then_resume_continues_one_unbroken_run(tmp_path):
    args = ["--data", str(SLICE), "--epochs", "6", "--batch-size", "32", "--run-name", "k",
            "--batch-log-every", "2"]
    run_dir = tmp_path / "logs" / "fit" / "k"
    process = start_cli(*args, cwd=tmp_path)
    try:
        # Kill in the middle of an epoch, once batch points past the checkpoint are on disk. The
        # process is paused while that is checked, so no checkpoint can land in between.
        while True:
            wait_for(lambda: latest_checkpoint(run_dir)[0] >= 1, 120, "the first checkpoint")
            process.send_signal(signal.SIGSTOP)
            epochs_done, saved_steps = latest_checkpoint(run_dir)
            if max(_batch_steps(run_dir), default=0) > saved_steps:
                break
            process.send_signal(signal.SIGCONT)
            assert process.poll() is None, "the run ended before it could be killed mid-epoch"
            time.sleep(0.1)
        process.kill()
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()

    result = run_cli(*args, "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resuming k after epoch {epochs_done} of 6" in result.stdout
    assert [line for line in result.stdout.splitlines() if line.startswith("Epoch ")] == \
        [f"Epoch {e}/6" for e in range(epochs_done + 1, 7)]
    # One continuous run in TensorBoard: every epoch exactly once, batch steps strictly rising.
    for directory, tag in [("train", "epoch_loss"), ("validation", "epoch_accuracy"),
                           ("train", "mnist_cnn/dense/kernel/histogram")]:
        assert scalar_steps(run_dir / directory, tag) == list(range(6)), (directory, tag)
    for tag in ("confusion_matrix", "class_3/pr_curves"):
        assert [e.step for e in events(run_dir).Tensors(tag)] == list(range(6))
    steps = _batch_steps(run_dir)
    assert steps == sorted(set(steps)) and steps[-1] == 6 * 38  # 38 steps an epoch
    finished = metrics(run_dir)
    assert finished["epochs_completed"] == 6 and len(finished["history"]["val_loss"]) == 6


def test_sigterm_stops_within_seconds_with_progress_saved_then_resume_and_extend(tmp_path):
    args = ["--data", str(SLICE), "--run-name", "t"]
    run_dir = tmp_path / "logs" / "fit" / "t"
    process = start_cli(*args, "--epochs", "3", cwd=tmp_path)
    try:
        wait_for(lambda: (run_dir / "checkpoints" / "epoch-0001").is_dir(), 120, "the first checkpoint")
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)  # what `docker stop` sends
        _, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert time.monotonic() - sent < 10
    assert process.returncode == 128 + signal.SIGTERM
    assert "SIGTERM" in stderr and "--run-name t --resume" in stderr and "Traceback" not in stderr
    assert list((run_dir / "checkpoints").glob("epoch-*")), "progress was not saved"

    # The same command with --resume finishes the run with the settings it started with...
    finished = run_cli(*args, "--resume", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert metrics(run_dir)["epochs_completed"] == 3
    # ...and a larger --epochs trains it further, its curves continuing at the right step.
    extended = run_cli(*args, "--resume", "--epochs", "4", cwd=tmp_path)
    assert extended.returncode == 0, extended.stderr
    assert scalar_steps(run_dir / "validation", "epoch_accuracy") == [0, 1, 2, 3]
    assert [e.step for e in events(run_dir).Tensors("test_accuracy")] == [4]
    assert run_config(run_dir)["epochs"] == 4


def test_resume_auto_starts_a_run_then_continues_it_with_the_same_command(tmp_path):
    command = ["--data", str(SLICE), "--batch-size", "64", "--run-name", "again", "--resume", "auto"]
    first = run_cli(*command, "--epochs", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "resuming" not in first.stdout
    second = run_cli(*command, "--epochs", "2", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "resuming again after epoch 1 of 2" in second.stdout
    assert scalar_steps(tmp_path / "logs" / "fit" / "again" / "validation", "epoch_accuracy") == [0, 1]


def test_resume_refuses_to_change_what_shapes_the_model(trained):
    result, run_dir = trained
    workdir = run_dir.parents[2]
    own = run_config(run_dir)["batch_size"]
    refused = run_cli("--run-name", "tiny", "--resume", "--batch-size", str(own + 1), cwd=workdir)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: --batch-size {own + 1} differs from the run's own {own}")


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20261126-190000")
    folders = [runs.claim(str(tmp_path), None) for _ in range(3)]
    assert [f.name for f in folders] == ["20261126-190000", "20261126-190000-2", "20261126-190000-3"]
