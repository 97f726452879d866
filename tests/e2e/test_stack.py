"""`make up`, TensorBoard in its container while training runs, Chromium, a second run, `make down`.

The tests run in file order and share one `make up`; each asserts one thing a user would see.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time

import pytest
from helpers import wait_for
from stack import ARTIFACTS, TB, tb_answers, tb_get, tb_post

pytestmark = pytest.mark.e2e
TABS = ["scalars", "graphs", "distributions", "histograms", "images", "hparams", "pr_curves", "text"]


def epochs(made_up) -> int:
    return json.loads((made_up["run_dir"] / "config.json").read_text())["epochs"]


def batch_points(run: str) -> int:
    try:
        return len(tb_get(f"/data/plugin/scalars/scalars?run={run}&tag=batch_loss"))
    except OSError:  # not logged yet
        return 0


@pytest.fixture(scope="module")
def made_up(stack):
    """`make up` as the user types it, watched from outside while it trains."""
    started = time.monotonic()
    process = stack.start("make", "up", f"TRAIN_ARGS={' '.join(stack.long_run)}")
    try:
        wait_for(lambda: tb_answers() and stack.runs(), 1200, "make up to start TensorBoard and a run")
        run = stack.runs()[0].name
        wait_for(lambda: run in tb_get("/data/runs"), 60, "TensorBoard to list the run")
        # Poll TensorBoard every second while the trainer trains: (batch points, still training).
        polls = []
        while process.poll() is None and not (stack.runs()[0] / "metrics.json").exists():
            points = batch_points(run)
            polls.append((points, process.poll() is None and not (stack.runs()[0] / "metrics.json").exists()))
            time.sleep(1)
        output, _ = process.communicate(timeout=1200)
    finally:
        process.kill()
    print(f"make up took {time.monotonic() - started:.0f} s; batch points seen while training: {polls}")
    return {"run": run, "output": output, "code": process.returncode, "polls": polls,
            "run_dir": stack.dir / "logs" / "fit" / run}


def test_make_up_trains_while_tensorboard_shows_it_live(made_up):
    assert made_up["code"] == 0, made_up["output"]
    during = [points for points, training in made_up["polls"] if training]
    # Live, not only at the end: TensorBoard served a growing number of points mid-training.
    assert len(set(p for p in during if p > 0)) >= 2, f"no growth seen while training: {made_up['polls']}"
    lines = made_up["output"].splitlines()
    assert "TensorBoard: http://localhost:6006" in lines
    assert any(line.startswith("GPU: none usable by Docker here") for line in lines)
    assert any(line.startswith(f"run logs/fit/{made_up['run']}: test accuracy ") for line in lines)


def test_tensorboard_container_serves_every_tab_of_the_run(made_up):
    run = made_up["run"]
    plugins = tb_get("/data/plugins_listing")
    assert [tab for tab in TABS if not plugins[tab]["enabled"]] == []
    for subrun, tag in [("train", "epoch_loss"), ("train", "epoch_accuracy"),
                        ("validation", "epoch_loss"), ("validation", "epoch_accuracy")]:
        points = tb_get(f"/data/plugin/scalars/scalars?run={run}/{subrun}&tag={tag}")
        assert len(points) == epochs(made_up), (subrun, tag)
    assert tb_get("/data/plugin/graphs/info")[run]["run_graph"]
    assert len(tb_get(f"/data/plugin/histograms/histograms?run={run}/train"
                      "&tag=mnist_cnn/conv1/kernel/histogram")) == epochs(made_up)
    assert tb_get(f"/data/plugin/distributions/distributions?run={run}/train"
                  "&tag=mnist_cnn/dense/bias/histogram")
    assert tb_get(f"/data/plugin/images/images?run={run}&tag=confusion_matrix")
    assert len(tb_get("/data/plugin/pr_curves/tags")[run]) == 10
    assert "config" in tb_get("/data/plugin/text/tags")[run]
    groups = tb_post("/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN"], "colParams": [], "startIndex": 0,
        "sliceSize": 100})
    assert run in [g["name"] for g in groups["sessionGroups"]]


def test_logs_belong_to_the_user_who_ran_make_up(made_up, stack):
    foreign = [p for p in [made_up["run_dir"], *made_up["run_dir"].rglob("*")]
               if (p.stat().st_uid, p.stat().st_gid) != (stack.uid, stack.gid)]
    assert foreign == []


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with a fresh profile, given 20 s of page time to fetch and draw."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", "--window-size=1500,1000", "--virtual-time-budget=20000",
             f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180)


def test_chromium_shows_the_run_and_its_curves(made_up):
    site = TB.replace("127.0.0.1", "localhost")
    # The Time Series dashboard renders without shadow DOM, so its page lists runs and tags.
    page = chromium("--dump-dom", f"{site}/#timeseries").stdout
    for text in (f"{made_up['run']}/validation", "epoch_accuracy", "epoch_loss", "batch_loss"):
        assert text in page, text
    # The Scalars dashboard with the epoch curves, train against validation, for the README.
    shot = ARTIFACTS / "tensorboard-scalars.png"
    shot.unlink(missing_ok=True)
    chromium(f"--screenshot={shot}", f"{site}/#scalars&tagFilter=epoch_&_smoothingWeight=0")
    assert shot.stat().st_size > 30_000, "the screenshot looks empty"


def test_compose_run_adds_a_run_that_tensorboard_picks_up(made_up, stack):
    before = {p.name for p in stack.runs()}
    # Straight compose, as the README says for a user whose UID is not 1000.
    as_user = {"HOST_UID": str(stack.uid), "HOST_GID": str(stack.gid)}
    result = stack.run("docker", "compose", "run", "--rm", "trainer", "--epochs", "1",
                       "--data", stack.train_data, env=as_user)
    assert result.returncode == 0, result.stdout + result.stderr
    [new] = {p.name for p in stack.runs()} - before
    wait_for(lambda: f"{new}/validation" in tb_get("/data/runs"), 30, "TensorBoard to pick up the new run")


def test_gpu_check_says_what_tensorflow_sees(made_up, stack):
    result = stack.run("make", "gpu-check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Docker cannot give this host's GPU to containers" in result.stdout
    assert "TensorFlow 2.21.0; a CPU-only build" in result.stdout  # the stand-in has tensorflow-cpu
    assert "no GPU visible: training on CPU" in result.stdout


def test_make_down_stops_every_container_and_keeps_the_logs(made_up, stack):
    result = stack.run("make", "down")
    assert result.returncode == 0, result.stdout + result.stderr
    assert stack.containers() == []
    assert len(stack.runs()) == 2 and all((p / "metrics.json").is_file() for p in stack.runs())
    assert not tb_answers()
