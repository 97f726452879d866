"""Runs on a folder of pictures: what a user sees of it in the run folder and in TensorBoard over
HTTP, predictions equal to the run's own evaluation, kill -9 and resume, a sweep and two workers."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import (
    TensorBoard,
    cli_env,
    metrics,
    run_command,
    run_config,
    run_folders,
    wait_for,
    with_fault,
)
from PIL import Image

from tools.common import COLOURS, write_pictures

ARGS = ["--epochs", "2", "--batch-size", "8"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder of pictures (3 classes, colour, two sizes, PNG and JPEG, litter) and a picture cache."""
    work = tmp_path_factory.mktemp("pictures")
    write_pictures(work / "pics", COLOURS, per_class=12)
    return work


def env(workdir) -> dict[str, str]:
    return {"MNIST_TB_CACHE": str(workdir / "cache")}


def cli(workdir, *args: str, fault: str = ""):
    return run_command(with_fault(fault, "--data", str(workdir / "pics"), *args), workdir, env=env(workdir))


@pytest.fixture(scope="module")
def run(workdir):
    result = cli(workdir, *ARGS, "--run-name", "pics")
    assert result.returncode == 0, result.stderr
    return result, workdir / "logs" / "fit" / "pics"


def test_the_run_records_its_pictures(run, workdir):
    result, run_dir = run
    assert (f"data: {workdir / 'pics'}: 3 classes (Red apple: 10, green leaf: 10, sky blue: 10); 30 training "
            "pictures, 6 held out for validation (0.2 of each class, by seed 42); 24x32, 3 channel(s)"
            ) in result.stdout
    config = run_config(run_dir)
    assert (config["image_size"], config["channels"], config["validation_split"]) == ("24x32", "3", 0.2)
    record = json.loads((run_dir / "data.json").read_text())
    assert record["classes"] == ["Red apple", "green leaf", "sky blue"]
    assert (record["train_images"], record["validation_images"]) == ([10, 10, 10], [2, 2, 2])
    assert len(record["validation_files"]) == 6 and record["layout"] == "classes"
    assert metrics(run_dir)["test_images"] == 6


def test_tensorboard_shows_the_class_names_and_the_data(run):
    _, run_dir = run
    server = TensorBoard(run_dir.parent)
    try:
        wait_for(lambda: "pics/validation" in server.get("/data/runs"), 60, "TensorBoard to list the run")
        groups = server.post("/data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"], "colParams": [],
            "startIndex": 0, "sliceSize": 10})["sessionGroups"]
        [text] = server.get("/data/plugin/text/text?run=pics&tag=config")
        pr = server.get("/data/plugin/pr_curves/tags")["pics"]
        images = server.get("/data/plugin/images/images?run=pics&tag=misclassified")
        matrix = server.get("/data/plugin/images/images?run=pics&tag=confusion_matrix")
        picture = server.get("/data/plugin/images/individualImage?" + matrix[-1]["query"])
    finally:
        server.stop()
    [group] = [g for g in groups if g["name"] == "pics"]
    hparams = group["hparams"]
    assert (hparams["classes"], hparams["image_size"], hparams["channels"]) == (3, "24x32", "3")
    assert (hparams["train_images"], hparams["validation_images"]) == (30, 6)
    assert hparams["data"].endswith("/pics")
    # The Text tab lists the classes with their pictures; the PR curves are named after them.
    for name in ("Red apple", "green leaf", "sky blue"):  # as TensorBoard renders the table
        assert f"<td>{name}</td>\n<td>10</td>\n<td>2</td>" in text["text"], name
    assert sorted(v["displayName"] for v in pr.values()) == ["0: Red apple", "1: green leaf", "2: sky blue"]
    assert [e["step"] for e in images] == [0, 1]
    confusion = np.asarray(Image.open(io.BytesIO(picture)))
    assert confusion.shape[1] > 250 and confusion.shape[2] == 3  # the class names' column and the cells


def test_predictions_of_the_export_are_the_runs_own_evaluation(run, workdir):
    _, run_dir = run
    record = json.loads((run_dir / "data.json").read_text())
    files = [str(workdir / "pics" / f) for f in record["validation_files"]]
    result = subprocess.run([sys.executable, "-m", "app.predict", "pics", *files, "--json", "--top", "3"],
                            cwd=workdir, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["file"] for a in answers] == files
    assert all(len(a["top"]) == 3 and a["top"][0]["class"] == a["class"] for a in answers)
    right = [a["class"] == a["file"].split("/")[-2] for a in answers]
    assert sum(right) / len(right) == pytest.approx(metrics(run_dir)["test_accuracy"], abs=1e-6)


KILL_AFTER_FIRST_EPOCH = """
import os, signal
from app import checkpoints
_save = checkpoints.save
def _save_and_die(run_dir, model, epochs_done, state, also=None):
    _save(run_dir, model, epochs_done, state, also)
    os.kill(os.getpid(), signal.SIGKILL)
checkpoints.save = _save_and_die
"""


def test_kill_9_and_resume_on_pictures_gives_the_uninterrupted_epochs(workdir):
    whole = cli(workdir, "--epochs", "3", "--batch-size", "8", "--run-name", "whole")
    killed = cli(workdir, "--epochs", "3", "--batch-size", "8", "--run-name", "cut",
                 fault=KILL_AFTER_FIRST_EPOCH)
    assert whole.returncode == 0 and killed.returncode == -signal.SIGKILL, whole.stderr + killed.stderr
    resumed = cli(workdir, "--epochs", "3", "--batch-size", "8", "--run-name", "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming cut after epoch 1 of 3" in resumed.stdout
    a, b = (metrics(workdir / "logs" / "fit" / name) for name in ("whole", "cut"))
    assert b["history"] == a["history"] and b["test_loss"] == a["test_loss"]


def test_a_changed_folder_is_refused_on_resume(workdir, tmp_path):
    moved = tmp_path / "pics"
    write_pictures(moved, COLOURS, per_class=12)
    args = ["--data", str(moved), "--epochs", "1", "--batch-size", "8", "--run-name", "changing"]
    first = run_command(with_fault("", *args), workdir, env=env(workdir))
    assert first.returncode == 0, first.stderr
    for picture in sorted((moved / "green leaf").glob("gre-*"))[:2]:
        picture.unlink()
    again = run_command(with_fault("", *args, "--epochs", "2", "--resume"), workdir, env=env(workdir))
    assert again.returncode == 2 and "the pictures changed since run changing began" in again.stderr


def test_a_sweep_on_a_train_and_test_folder_of_grey_pictures(tmp_path):
    root = tmp_path / "grey"
    write_pictures(root / "train", COLOURS, per_class=8, grey=True)
    write_pictures(root / "test", COLOURS, per_class=3, grey=True, seed=1)
    (tmp_path / "s.yaml").write_text("name: s\ntrials: 2\nsampler: grid\nparameters:\n"
                                      "  batch_size: {choices: [8, 16]}\nfixed:\n  epochs: 1\n")
    result = subprocess.run([sys.executable, "-m", "app.sweep", "s.yaml", "--data", str(root), "--image-size",
                             "16x16"], cwd=tmp_path, env={**cli_env(), **env(tmp_path)}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "sweep s: 2 trials (2 complete, 0 pruned, 0 failed)" in result.stdout
    for name in run_folders(tmp_path / "logs" / "fit"):
        config = run_config(tmp_path / "logs" / "fit" / name)
        assert (config["image_size"], config["channels"]) == ("16x16", "1")


def test_two_workers_train_one_run_on_pictures(workdir):
    from test_distribution import finish, start_job

    args = ["--data", str(workdir / "pics"), *ARGS, "--run-name", "job", "--resume", "auto"]
    results = finish(start_job("chief+worker", args, workdir, env=env(workdir)))
    assert [code for code, _, _ in results] == [0, 0], results
    job = metrics(workdir / "logs" / "fit" / "job")
    assert job["strategy"] == "multi-worker" and job["replicas"] == 2 and job["test_images"] == 6
