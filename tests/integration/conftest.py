"""Fixtures shared by the tests: one real trained run, and a real TensorBoard serving it."""

from __future__ import annotations

import pytest
from helpers import SLICE, TensorBoard, run_cli, wait_for


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One real two-epoch run on the slice, shared by the tests that inspect its results."""
    workdir = tmp_path_factory.mktemp("trained")
    # Batches of 64: 19 steps an epoch on the slice's 1,200 images, enough to learn something.
    result = run_cli("--data", str(SLICE), "--epochs", "2", "--batch-size", "64", "--run-name", "tiny",
                     "--batch-log-every", "5", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return result, workdir / "logs" / "fit" / "tiny"


@pytest.fixture(scope="session")
def tensorboard(trained):
    _, run_dir = trained
    server = TensorBoard(run_dir.parent)
    wait_for(lambda: "tiny/validation" in server.get("/data/runs"), 60, "TensorBoard to list the run")
    yield server
    server.stop()
