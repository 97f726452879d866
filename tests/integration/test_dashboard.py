"""Optuna Dashboard on a real sweep's study: the compose service's own command (its entrypoint script,
read from docker-compose.yml), the real optuna-dashboard, the journal a real tiny sweep wrote, in a folder
it cannot write to. What a user opens it for is in its API: the study, every trial with its parameters,
state and one intermediate value per epoch, the parameter importances; a trial added while it runs shows
at once; a change made in the page fails and leaves the journal as it was. The same on a study in a real
PostgreSQL server (the integration tests' own), whose password comes from the secret, read-only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, SLICE, cli_env, wait_for

from tools.common import free_port

SWEEP = """\
name: s
trials: {trials}
pruning: {{startup_trials: 1}}
parameters:
  learning_rate: {{low: 0.0000001, high: 0.01, log: true}}
  batch_size: {{choices: [64, 128]}}
fixed:
  epochs: 2
"""


def sweep(tmp_path: Path, trials: int) -> str:
    (tmp_path / "s.yaml").write_text(SWEEP.format(trials=trials))
    done = subprocess.run([sys.executable, "-m", "app.sweep", "s.yaml", "--data", str(SLICE)],
                          cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def dashboard_command(port: int) -> list[str]:
    """The dashboard service's entrypoint as compose runs it, on 127.0.0.1:port instead of 0.0.0.0:8080."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["dashboard"]
    shell, flag, script, name = service["entrypoint"]
    published = "--host 0.0.0.0 --port 8080 "
    assert published in script
    script = script.replace("$$", "$").replace(published, f"--host 127.0.0.1 --port {port} ")
    return [shell, flag, script, name]


def read_only(folder: Path, command: list[str]) -> list[str]:
    """`command` with `folder` read-only for it: a read-only bind mount of its own as root, as compose's
    `:ro` (root could write anywhere else), else the folder's write bits taken away (restored after)."""
    if os.geteuid() == 0:
        return ["unshare", "--mount", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(folder),
                *command]
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    return command


def get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return json.loads(response.read())


def answers(port: int) -> bool:
    try:
        get(port, "/api/studies")
        return True
    except OSError:
        return False


def test_the_dashboard_shows_a_sweeps_study_read_only_and_live(tmp_path):
    sweep(tmp_path, trials=3)
    study = tmp_path / "logs" / "sweeps" / "s"
    journal = study / "journal.log"
    written = journal.read_bytes()
    summary = json.loads((study / "summary.json").read_text())
    port = free_port()
    env = {**cli_env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = read_only(study, [*dashboard_command(port), str(journal)])
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: answers(port), 60, "the dashboard to answer", interval=0.3, process=server)
        [listed] = get(port, "/api/studies")["study_summaries"]
        assert (listed["study_name"], listed["directions"]) == ("s", ["maximize"])

        # Every trial as the sweep's summary.json has it: state, parameters, value, an epoch's value a step.
        detail = get(port, f"/api/studies/{listed['study_id']}")
        assert detail["has_intermediate_values"] is True
        trials = {t["number"]: t for t in detail["trials"]}
        assert sorted(trials) == [t["number"] for t in summary["trials"]] == [0, 1, 2]
        for expected in summary["trials"]:
            trial = trials[expected["number"]]
            assert trial["state"] == expected["state"].capitalize(), (trial, expected)
            params = {p["name"]: json.loads(p["param_external_value"]) for p in trial["params"]}
            assert params == expected["params"]
            steps = [v["step"] for v in trial["intermediate_values"]]
            assert steps == list(range(2 if expected["state"] == "complete" else len(steps))) and steps, trial
            if expected["state"] == "complete":
                assert trial["values"] == [pytest.approx(expected["value"])]
                assert trial["intermediate_values"][-1]["value"] == pytest.approx(expected["value"])
        [importances] = get(port, f"/api/studies/{listed['study_id']}/param_importances")["param_importances"]
        assert sorted(i["name"] for i in importances) == ["batch_size", "learning_rate"]

        # A change from the page (a note) cannot be written: refused, and the journal is as it was.
        assert note_refused(port, listed["study_id"])
        assert journal.read_bytes() == written
        assert sorted(p.name for p in study.iterdir()) == ["claim.lock", "journal.log", "summary.json",
                                                           "sweep.json", "sweepers"]

        # The sweep goes on (another trial) while the dashboard runs: the next request shows it.
        if os.geteuid() != 0:
            for path in [study, *study.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)
        sweep(tmp_path, trials=4)
        detail = get(port, f"/api/studies/{listed['study_id']}")
        assert [t["number"] for t in detail["trials"]] == [0, 1, 2, 3]
        assert detail["trials"][3]["state"] in ("Complete", "Pruned")
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_dashboard_refuses_a_sweep_that_is_not_there(tmp_path):
    missing = tmp_path / "logs" / "sweeps" / "nope" / "journal.log"
    done = subprocess.run([*dashboard_command(free_port()), str(missing)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stderr.strip()) == \
        (2, f"error: no study at {missing}: no sweep of that name ran in ./logs")
    assert not missing.parent.exists()  # Optuna would have made it


def test_the_dashboard_reads_a_postgresql_study_with_the_secret_and_changes_nothing(postgresql, tmp_path):
    """The same command on SWEEP_STORAGE's URL: the password from the compose secret, read-only."""
    import optuna
    from optuna.storages import RDBStorage

    url = postgresql.create_database("dashboard")
    storage = RDBStorage(url, engine_kwargs={"connect_args": {"password": postgresql.password}})
    study = optuna.create_study(study_name="pg", storage=storage, direction="maximize")
    for value in (0.5, 0.8):
        trial = study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        for epoch in range(2):
            trial.report(value * (epoch + 1) / 2, epoch)
        study.tell(trial, value)
    secret = tmp_path / "sweep_db_password"
    secret.write_text(postgresql.password)
    port = free_port()
    shell, flag, script, name = dashboard_command(port)
    command = [shell, flag, script.replace("/run/secrets/sweep_db_password", str(secret)), name, url]
    env = {**cli_env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env = {k: v for k, v in env.items() if not k.startswith("PG")}
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: answers(port), 60, "the dashboard to answer", interval=0.3, process=server)
        [listed] = get(port, "/api/studies")["study_summaries"]
        assert listed["study_name"] == "pg"
        detail = get(port, f"/api/studies/{listed['study_id']}")
        assert [t["values"] for t in detail["trials"]] == [[0.5], [0.8]]
        assert [len(t["intermediate_values"]) for t in detail["trials"]] == [2, 2]
        assert note_refused(port, listed["study_id"])
        assert storage.get_study_system_attrs(study._study_id) == {}
    finally:
        server.terminate()
        server.wait(timeout=30)
    # Refused by the server itself: its log has the reason (the dashboard's shows Optuna's wrapper only).
    log = (Path(postgresql.folder) / "log").read_text(errors="replace")
    assert "cannot execute INSERT in a read-only transaction" in log, log[-2000:]


def note_refused(port: int, study_id: int) -> bool:
    """Whether a note written from the page (PUT .../note) is refused: the study is read-only."""
    note = urllib.request.Request(f"http://127.0.0.1:{port}/api/studies/{study_id}/note",
                                  data=json.dumps({"version": 1, "body": "mine"}).encode(), method="PUT",
                                  headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(note, timeout=30)
    return refused.value.code == 500
