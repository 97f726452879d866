"""The compose dashboard profile for real: a small `make sweep` as the unprivileged user, then `make
dashboard` on its study. Optuna Dashboard answers on 127.0.0.1 with the sweep's trials, their parameters
and one value per epoch, runs as that user, not root, and cannot write ./logs; Chromium shows its page
with the optimisation history and the parameter importances. A sweep that never ran is refused in one
line. The test names its own sweep (e2e-dashboard) and removes the container it started."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.request

import pytest
from stack import ARTIFACTS, PROJECT, sh
from test_sweep import Chromium

from tools.common import free_port

pytestmark = pytest.mark.e2e
NAME, TRIALS, EPOCHS = "e2e-dashboard", 3, 2
SWEEP_FILE = f"""\
# tests/e2e/test_dashboard.py's sweep: a study for the dashboard to show.
name: {NAME}
trials: {TRIALS}
pruning: false
parameters:
  learning_rate: {{low: 0.0005, high: 0.01, log: true}}
  batch_size: {{choices: [32, 64]}}
fixed:
  epochs: {EPOCHS}
"""
PORT = free_port()


def get(path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def dashboard(stack):
    yield {"DASHBOARD_PORT": str(PORT)}
    stack.run("docker", "compose", "--profile", "dashboard", "rm", "--force", "--stop", "dashboard")


def test_make_dashboard_shows_the_sweeps_study_as_the_user_read_only_on_this_machine(stack, dashboard):
    sweep_file = stack.dir / "sweeps" / f"{NAME}.yaml"
    sweep_file.write_text(SWEEP_FILE)
    sh("chown", f"{stack.uid}:{stack.gid}", str(sweep_file), check=False)
    shutil.rmtree(stack.dir / "logs" / "sweeps" / NAME, ignore_errors=True)
    for old in (stack.dir / "logs" / "fit").glob(f"{NAME}-trial-*"):
        shutil.rmtree(old)

    # No study yet: one line, exit status 2, nothing started.
    refused = stack.run("make", "dashboard", f"SWEEP_NAME={NAME}", env=dashboard)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"error: no sweep named {NAME} in logs/sweeps" in refused.stderr, refused.stderr
    assert not stack.containers("label=com.docker.compose.service=dashboard")

    done = stack.run("make", "sweep", f"SWEEP=sweeps/{NAME}.yaml", "SWEEPERS=1",
                     f"SWEEP_ARGS=--data {stack.train_data}", timeout=3600)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((stack.dir / "logs" / "sweeps" / NAME / "summary.json").read_text())
    journal = stack.dir / "logs" / "sweeps" / NAME / "journal.log"
    written = journal.read_bytes()

    started = stack.run("make", "dashboard", f"SWEEP_NAME={NAME}", env=dashboard)
    print(started.stdout)
    assert started.returncode == 0, started.stdout + started.stderr
    assert (f"Optuna Dashboard: http://localhost:{PORT} (sweep {NAME} (logs/sweeps/{NAME}/journal.log); "
            "make down stops it)") in started.stdout.splitlines(), started.stdout

    # Its API through 127.0.0.1: the study, every trial with its parameters and each epoch's value.
    [study] = get("/api/studies")["study_summaries"]
    assert study["study_name"] == NAME
    detail = get(f"/api/studies/{study['study_id']}")
    assert detail["has_intermediate_values"] is True
    assert [t["number"] for t in detail["trials"]] == [t["number"] for t in summary["trials"]] == [0, 1, 2]
    for trial, expected in zip(detail["trials"], summary["trials"], strict=True):
        params = {p["name"]: json.loads(p["param_external_value"]) for p in trial["params"]}
        assert (trial["state"], params) == ("Complete", expected["params"]), trial
        assert [v["step"] for v in trial["intermediate_values"]] == list(range(EPOCHS)), trial
        assert trial["values"] == [pytest.approx(expected["value"])]
    [importances] = get(f"/api/studies/{study['study_id']}/param_importances")["param_importances"]
    assert sorted(i["name"] for i in importances) == ["batch_size", "learning_rate"]

    # The container: the user's, never root; ./logs read-only; published on 127.0.0.1 only.
    [container] = stack.containers("label=com.docker.compose.service=dashboard")
    assert sh("docker", "inspect", "--format", "{{.Config.User}}", container).stdout.strip() == \
        f"{stack.uid}:{stack.gid}"
    assert sh("docker", "exec", container, "id", "-u").stdout.strip() == str(stack.uid) != "0"
    mounts = json.loads(sh("docker", "inspect", "--format", "{{json .Mounts}}", container).stdout)
    # ./logs, and the sweep database's password (a compose secret, unused with a journal): neither writable.
    binds = {m["Destination"]: m["RW"] for m in mounts if m["Type"] == "bind"}
    assert binds.get("/logs") is False and not any(binds.values()), mounts
    bindings = sh("docker", "inspect", "--format", "{{json .HostConfig.PortBindings}}", container).stdout
    ports = json.loads(bindings)
    assert ports == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(PORT)}]}, ports
    denied = sh("docker", "exec", container, "touch", f"/logs/sweeps/{NAME}/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied.stderr
    assert journal.read_bytes() == written
    name = sh("docker", "inspect", "--format", "{{.Name}}", container).stdout.strip()
    assert re.fullmatch(rf"/{PROJECT}-dashboard-1", name), name

    # What a user sees: the study's page, its history and importances drawn.
    shot = ARTIFACTS / "optuna-dashboard.png"
    shot.unlink(missing_ok=True)
    with Chromium() as chromium:
        text = chromium.text_once_it_shows(f"http://localhost:{PORT}/dashboard/studies/{study['study_id']}",
                                           [f"{NAME} (id={study['study_id']})", "History",
                                            "Hyperparameter Importance", "learning_rate"])
        time.sleep(1)  # the plots are drawn; let them settle
        chromium.screenshot(shot)
    assert shot.stat().st_size > 30_000, "the screenshot looks empty"
    print(f"dashboard page text: {text[:300]!r}")
    used = sh("docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", container).stdout.strip()
    print(f"dashboard container memory after the page and its plots: {used}")
    assert journal.read_bytes() == written
