"""A real TensorBoard, started as docker-compose.yml starts it, with many runs: a new run shown within
seconds while users keep asking, and `make bench-tensorboard` in miniature."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time

import pytest
from helpers import ROOT, TensorBoard, cli_env, this_cpu, wait_for

from tools.tensorboard_bench import copy_run

RUNS_TABLE = {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_RUNNING"],
              "colParams": [], "startIndex": 0, "sliceSize": 1000}


@pytest.fixture
def copies(trained, tmp_path):
    """A log folder of three copies of the session's real run, each an HParams session of its own."""
    _, run = trained
    logdir = tmp_path / "fit"
    rng = random.Random(0)
    for n in range(3):
        copy_run(run, logdir / f"copy-{n}", rng)
    return run, logdir


def sessions(server) -> set[str]:
    groups = server.post("/data/plugin/hparams/session_groups", RUNS_TABLE)["sessionGroups"]
    return {s["name"] for g in groups for s in g["sessions"]}


def test_tensorboard_as_compose_starts_it_shows_a_new_run_within_seconds_while_users_keep_asking(copies):
    run, logdir = copies
    server = TensorBoard(logdir)
    asking, stop, user = [], threading.Event(), None
    try:
        wait_for(lambda: sessions(server) == {"copy-0", "copy-1", "copy-2"}, 60, "the three copies")

        def keep_asking():  # a user's HParams tab, again and again: the answer is shared
            while not stop.is_set():
                asking.append(sessions(server))

        user = threading.Thread(target=keep_asking)
        user.start()
        copy_run(run, logdir / "copy-3", random.Random(1))
        started = time.monotonic()
        wait_for(lambda: "copy-3" in asking[-1], 10, "the new run in the HParams tab")
        shown_after = time.monotonic() - started
        # Its curves too, as the Scalars tab asks for them (the run's two epochs, in TensorBoard's order).
        points = server.get("/data/plugin/scalars/scalars?run=copy-3/validation&tag=epoch_accuracy")
        assert [step for _, step, _ in points] == [0, 1]
    finally:
        stop.set()
        if user:
            user.join(timeout=30)  # its last request answered before TensorBoard stops
        server.stop()
    assert len(asking) > 5 and shown_after < 10


def test_bench_tensorboard_in_miniature_names_the_cpu_and_times_every_request_without_errors(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "tools.tensorboard_bench", "--runs", "3", "--epochs", "2",
                             "--clients", "1,2", "--seconds", "2", "--work", str(tmp_path),
                             "--out", str(out)],
                            cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["cpu"].startswith(this_cpu()[0]) and report["cpu"] in result.stdout
    assert report["hparams_tab_trials"] == 3 and report["new_run"]["seconds"] < 10
    kinds = {"runs", "scalars tags", "scalars_multirun", "hparams experiment (HParams tab)",
             "hparams session_groups (HParams tab)", "hparams experiment (runs table)",
             "hparams session_groups (runs table)"}
    assert {(r["kind"], r["clients"]) for r in report["rounds"]} == {(k, c) for k in kinds for c in (1, 2)}
    assert all(r["errors"] == 0 and r["requests"] > 0 and 0 < r["p50"] <= r["p95"] <= r["max"]
               for r in report["rounds"])
    assert report["command"][1:3] == ["-m", "app.tensorboard_server"]  # as docker-compose.yml starts it
