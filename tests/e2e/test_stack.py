"""`make up`, TensorBoard in its container while training runs, Chromium, a second run, `make down`.

The tests share one `make up` (the module fixture) and each asserts one thing a user would see. They
look only at the runs they made themselves, and start TensorBoard again if another test stopped it,
so neither their order nor what other tests left in ./logs matters.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager

import pytest
from helpers import wait_for
from stack import ARTIFACTS, IMAGE, TB_SHOWN, TF_VERSION, gpu_usable, sh, tb_answers, tb_get, tb_post

pytestmark = pytest.mark.e2e
TABS = ["scalars", "graphs", "distributions", "histograms", "images", "hparams", "pr_curves", "text"]


def epochs(made_up) -> int:
    return json.loads((made_up["run_dir"] / "config.json").read_text())["epochs"]


def batch_points(run: str) -> int:
    try:
        return len(tb_get(f"/data/plugin/scalars/scalars?run={run}&tag=batch_loss"))
    except OSError:  # not logged yet
        return 0


def new_runs(stack, before: set[str]) -> list[str]:
    return sorted({p.name for p in stack.runs()} - before)


@contextmanager
def env_file_as(stack, text: str | None):
    """The checkout's .env replaced by `text` (None: no .env) for a while, then put back as it was."""
    path = stack.dir / ".env"
    saved = path.read_text() if path.exists() else None

    def put(content: str | None) -> None:
        path.unlink(missing_ok=True)
        if content is not None:
            path.write_text(content)
            os.chown(path, stack.uid, stack.gid)

    try:
        put(text)
        yield path
    finally:
        put(saved)


@pytest.fixture(scope="module")
def made_up(stack):
    """`make up` as the user types it, watched from outside while it trains."""
    started = time.monotonic()
    before = {p.name for p in stack.runs()}
    process = stack.start("make", "up", f"TRAIN_ARGS={' '.join(stack.long_run)}")
    try:
        [run] = wait_for(lambda: tb_answers() and new_runs(stack, before), 1200,
                         "make up to start TensorBoard and a run", interval=0.5, process=process)
        run_dir = stack.dir / "logs" / "fit" / run
        wait_for(lambda: run in tb_get("/data/runs"), 60, "TensorBoard to list the run", process=process)
        # Poll TensorBoard every second while the trainer trains: (batch points, still training).
        polls = []
        while process.poll() is None and not (run_dir / "metrics.json").exists():
            points = batch_points(run)
            polls.append((points, process.poll() is None and not (run_dir / "metrics.json").exists()))
            time.sleep(1)
        output, _ = process.communicate(timeout=1200)
    finally:
        process.kill()
    print(f"make up took {time.monotonic() - started:.0f} s; batch points seen while training: {polls}")
    return {"run": run, "output": output, "code": process.returncode, "polls": polls, "run_dir": run_dir}


@pytest.fixture
def live(made_up, stack):
    """The made-up stack with TensorBoard serving, whatever other tests did to it (make down)."""
    if not tb_answers():
        result = stack.run("make", "tensorboard")
        assert result.returncode == 0, result.stdout + result.stderr
        wait_for(tb_answers, 120, "TensorBoard to answer again")
    run = made_up["run"]
    wait_for(lambda: f"{run}/validation" in tb_get("/data/runs"), 60, "TensorBoard to list the run")
    return made_up


def test_plain_compose_without_env_fails_naming_make_setup(stack):
    """Before the one setup step, plain compose stops at once and says what to run."""
    running = set(stack.containers())
    with env_file_as(stack, None):
        for command in (["run", "--rm", "trainer"], ["up", "-d", "tensorboard"]):
            result = stack.run("docker", "compose", *command, bare=True)
            assert result.returncode != 0, result.stdout + result.stderr
            assert "required variable HOST_UID is missing a value: run make setup first" in result.stderr, \
                result.stderr
    assert set(stack.containers()) == running


def test_make_up_writes_env_for_plain_compose(made_up, stack):
    assert (stack.dir / ".env").stat().st_mode & 0o777 == 0o600  # private: it may hold JUPYTER_TOKEN
    lines = (stack.dir / ".env").read_text().splitlines()
    assert lines[0].startswith("# Written by `make setup`")
    files = "docker-compose.yml:docker-compose.gpu.yml" if gpu_usable() else "docker-compose.yml"
    settings = dict(line.split("=", 1) for line in lines if not line.startswith("#"))
    assert settings == {"HOST_UID": str(stack.uid), "HOST_GID": str(stack.gid), "COMPOSE_FILE": files}


def test_make_setup_rewrites_its_own_lines_of_env_and_keeps_the_users(made_up, stack):
    ours = (stack.dir / ".env").read_text()
    mine = ["# my settings", "TB_HOST=127.0.0.1", "export HOST_UID=1000", "COMPOSE_FILE=gone.yml"]
    with env_file_as(stack, "\n".join(mine) + "\n") as path:
        path.chmod(0o644)
        result = stack.run("make", "setup")
        assert result.returncode == 0, result.stdout + result.stderr
        assert path.read_text() == ours + "# my settings\nTB_HOST=127.0.0.1\n"
        assert path.stat().st_mode & 0o777 == 0o600
        result = stack.run("make", "setup")  # and again: nothing doubles
        assert result.returncode == 0, result.stdout + result.stderr
        assert path.read_text() == ours + "# my settings\nTB_HOST=127.0.0.1\n"


@pytest.mark.parametrize("where", ["make", ".env"])
def test_tensorboard_on_every_interface_is_refused_without_the_opt_in(made_up, stack, where):
    """TensorBoard has no authentication: TB_HOST=0.0.0.0 stops make before anything is written or started."""
    running = {c: inspect_started(c) for c in stack.containers()}
    env = (stack.dir / ".env").read_text() + ("TB_HOST=0.0.0.0\n" if where == ".env" else "")
    with env_file_as(stack, env) as path:
        result = stack.run("make", "tensorboard", *(["TB_HOST=0.0.0.0"] if where == "make" else []))
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stdout == ""
        assert result.stderr.splitlines()[0].startswith(
            "error: TB_HOST=0.0.0.0 would publish TensorBoard, which has no authentication, beyond")
        assert path.read_text() == env
    assert {c: inspect_started(c) for c in stack.containers()} == running  # nothing started or restarted


def inspect_started(container: str) -> str:
    return sh("docker", "inspect", "--format", "{{.State.StartedAt}}", container).stdout.strip()


def test_make_up_trains_while_tensorboard_shows_it_live(made_up):
    assert made_up["code"] == 0, made_up["output"]
    during = [points for points, training in made_up["polls"] if training]
    # Live, not only at the end: TensorBoard served a growing number of points mid-training.
    assert len(set(p for p in during if p > 0)) >= 2, f"no growth seen while training: {made_up['polls']}"
    lines = made_up["output"].splitlines()
    assert f"TensorBoard: {TB_SHOWN}" in lines
    # One GPU line, from make setup's one probe, saying what this host really has.
    [gpu_line] = [line for line in lines if line.startswith("GPU: ")]
    assert gpu_line.startswith("GPU: Docker can use this host's NVIDIA GPU" if gpu_usable()
                               else "GPU: none usable by Docker here"), gpu_line
    # The probe ran before the build: a host without a usable GPU built without the CUDA wheels,
    # by itself (the stack's environment sets no CUDA_WHEELS).
    assert lines.index(gpu_line) < next(i for i, line in enumerate(lines) if "docker compose" in line and
                                         " build trainer" in line)
    nvidia = sh("docker", "run", "--rm", "--entrypoint", "python3", IMAGE, "-c",
                "import importlib.util; print(importlib.util.find_spec('nvidia') is not None)").stdout.strip()
    assert nvidia == str(gpu_usable()), nvidia
    assert any(line.startswith(f"run logs/fit/{made_up['run']}: test accuracy ") for line in lines)


def test_tensorboard_container_serves_every_tab_of_the_run(live):
    made_up = live
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


def test_chromium_shows_the_run_and_its_curves(live):
    made_up = live
    site = TB_SHOWN
    # The Time Series dashboard renders without shadow DOM, so its page lists runs and tags.
    page = chromium("--dump-dom", f"{site}/#timeseries").stdout
    for text in (f"{made_up['run']}/validation", "epoch_accuracy", "epoch_loss", "batch_loss"):
        assert text in page, text
    # The Scalars dashboard with the epoch curves, train against validation, for the README.
    shot = ARTIFACTS / "tensorboard-scalars.png"
    shot.unlink(missing_ok=True)
    chromium(f"--screenshot={shot}", f"{site}/#scalars&tagFilter=epoch_&_smoothingWeight=0")
    assert shot.stat().st_size > 30_000, "the screenshot looks empty"


def test_plain_compose_run_as_another_user_adds_a_run_that_tensorboard_shows(live, stack):
    """The issue's "done when": after `make up`, plain compose with nothing exported works as this user."""
    if os.geteuid() == 0:  # CI: the e2e user (setup_machine.sh); a developer runs as themselves
        assert stack.uid != 1000, "the e2e user must not have UID 1000, or UID bugs go unseen"
    before = {p.name for p in stack.runs()}
    # The data folder as a user would give it to plain compose: a line of their own in .env.
    env = (stack.dir / ".env").read_text() + f"DATA_DIR={stack.data_dir}\n"
    with env_file_as(stack, env):
        result = stack.run("docker", "compose", "run", "--rm", "trainer", "--epochs", "1",
                           "--data", stack.train_data, bare=True)
    assert result.returncode == 0, result.stdout + result.stderr
    [new] = new_runs(stack, before)
    wait_for(lambda: f"{new}/validation" in tb_get("/data/runs"), 30, "TensorBoard to pick up the new run")
    run_dir = stack.dir / "logs" / "fit" / new
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in [run_dir, *run_dir.rglob("*")]}
    assert owners == {(stack.uid, stack.gid)}


def test_gpu_check_says_what_tensorflow_sees(made_up, stack):
    result = stack.run("make", "gpu-check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    if gpu_usable():
        assert "GPU: Docker can use this host's NVIDIA GPU; the trainer reserves one" in lines
    else:
        assert any(line.startswith("GPU: none usable by Docker here") for line in lines)
    # The TensorFlow of the Dockerfile's TF_VERSION, a CUDA build or not (the stand-in has tensorflow-cpu).
    [build] = [line for line in lines if line.startswith("TensorFlow ")]
    assert re.fullmatch(rf"TensorFlow {re.escape(TF_VERSION)}; (a CPU-only build|built for CUDA .*)", build)
    if gpu_usable() and "built for CUDA" in build:
        assert any(line.startswith("training on GPU ") for line in lines), result.stdout
    else:
        assert any(line.startswith("no GPU visible: training on CPU") for line in lines), result.stdout


def test_make_train_where_the_image_is_missing_probes_in_the_base_image_then_builds(live, stack):
    """As on a fresh host: the probe cannot run in an image not built yet (it would find nothing and
    quietly pick the CPU), so it runs in the base image, and its answer decides the CUDA wheels."""
    sh("docker", "image", "rm", "--force", IMAGE)  # untagged; the running TensorBoard keeps its copy
    before = {p.name for p in stack.runs()}
    result = stack.run("make", "train", "TRAIN_ARGS=--epochs 1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sh("docker", "image", "inspect", IMAGE, check=False).returncode == 0
    lines = result.stdout.splitlines()
    probed = [line for line in lines if line.startswith("GPU: ")]
    assert len(probed) == 1, result.stdout  # one probe per make run
    assert probed[0].startswith("GPU: Docker can use" if gpu_usable() else "GPU: none usable by Docker")
    built = next(i for i, line in enumerate(lines) if " build trainer" in line)
    assert lines.index(probed[0]) < built, result.stdout
    assert len(new_runs(stack, before)) == 1


def test_make_down_stops_every_container_and_keeps_the_logs(made_up, stack):
    before = {p.name for p in stack.runs()}
    result = stack.run("make", "down")
    assert result.returncode == 0, result.stdout + result.stderr
    assert stack.containers() == []
    assert {p.name for p in stack.runs()} == before
    assert (made_up["run_dir"] / "metrics.json").is_file()
    assert not tb_answers()
