"""Sweeps whose study is in a real PostgreSQL server (the `postgresql` fixture): two sweepers, kill -9
of one mid-trial, the same command again; a stop by SIGTERM; a database that cannot be reached."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from helpers import SLICE, cli_env, latest_checkpoint, metrics, run_folders, wait_for

SWEEP = """\
name: s
trials: {trials}
storage: {url}
heartbeat: {{interval: 1, grace_period: {grace}}}
parameters:
  learning_rate: {{low: 0.001, high: 0.01, log: true}}
  batch_size: {{choices: [64, 128]}}
fixed:
  epochs: {epochs}
"""


def setup(tmp_path: Path, postgresql, trials: int, epochs: int, grace: int = 4) -> dict:
    """The sweep file, its database, and the environment every sweeper gets: the password in a file."""
    url = postgresql.create_database(tmp_path.name.lower().replace("-", "_")[:60])
    (tmp_path / "s.yaml").write_text(SWEEP.format(trials=trials, url=url, grace=grace, epochs=epochs))
    secret = tmp_path / "password"
    secret.write_text(postgresql.password + "\n")
    secret.chmod(0o600)
    return {"SWEEP_DB_PASSWORD_FILE": str(secret)}


def sweeper(tmp_path: Path, env: dict) -> subprocess.Popen:
    """`python -m app.sweep s.yaml --data SLICE`: the same command every time."""
    return subprocess.Popen([sys.executable, "-m", "app.sweep", "s.yaml", "--data", str(SLICE)],
                            cwd=tmp_path, env={**cli_env(), **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, out + err
    return out


def study_trials(postgresql, tmp_path: Path, env: dict):
    import optuna

    url = (tmp_path / "s.yaml").read_text().split("storage: ")[1].split()[0]
    password = {"connect_args": {"password": postgresql.password}}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=password)
    try:
        return optuna.load_study(study_name="s", storage=storage).get_trials()
    finally:
        storage.engine.dispose()


def summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "logs" / "sweeps" / "s" / "summary.json").read_text())


def test_two_sweepers_kill_9_of_one_and_the_same_command_again_finish_every_trial_once(tmp_path, postgresql):
    env = setup(tmp_path, postgresql, trials=3, epochs=8)
    sweepers = [sweeper(tmp_path, env), sweeper(tmp_path, env)]
    fit = tmp_path / "logs" / "fit"
    try:
        wait_for(lambda: all(0 < latest_checkpoint(fit / f"s-trial-00{i}")[0] < 8 for i in (0, 1)), 300,
                 "both trials mid-way", interval=0.02, process=sweepers[0])
        for p in sweepers:  # both mid-trial, however fast this machine, while the owner is looked up
            p.send_signal(signal.SIGSTOP)
        # The one running trial 0 dies, mid-trial, its beats with it.
        owner = int(study_trials(postgresql, tmp_path, env)[0].user_attrs["sweeper"].split("-")[-2])
        [doomed] = [p for p in sweepers if p.pid == owner]
        [survivor] = [p for p in sweepers if p.pid != owner]
        killed_at = latest_checkpoint(fit / "s-trial-000")[0]
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.communicate()
        survivor.send_signal(signal.SIGCONT)
        assert killed_at < 8 and not (fit / "s-trial-000" / "metrics.json").exists()

        again = sweeper(tmp_path, env)  # the same command, as a user (or Docker) starts it again
        outputs = [finish(survivor), finish(again)]
    finally:
        for p in sweepers:
            p.kill()
    both = "\n".join(outputs)
    # Exactly the asked number of trials, each started once; trial 0 continued from its checkpoint once.
    trials = study_trials(postgresql, tmp_path, env)
    assert [(t.number, t.state.name) for t in trials] == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]
    assert run_folders(fit) == ["s-trial-000", "s-trial-001", "s-trial-002"]
    started = sorted(line.split(" run ")[-1] for line in both.splitlines() if ": starting run " in line)
    assert started == ["logs/fit/s-trial-001", "logs/fit/s-trial-002"]
    assert both.count("continuing run logs/fit/s-trial-000") == 1, both
    assert both.count(f"resuming s-trial-000 after epoch {killed_at} of 8") == 1, both
    result = metrics(fit / "s-trial-000")
    assert result["epochs_completed"] == 8 and len(result["history"]["val_accuracy"]) == 8
    assert list(trials[0].intermediate_values) == list(range(8))  # every epoch reported, once
    assert trials[0].value == result["history"]["val_accuracy"][result["exported_epoch"] - 1]
    report = summary(tmp_path)
    assert [(t["number"], t["state"]) for t in report["trials"]] == [(0, "complete"), (1, "complete"),
                                                                      (2, "complete")]
    assert report["complete"] == 3
    for out in outputs:
        assert "sweep s: 3 trials (3 complete, 0 pruned, 0 failed)" in out
        assert "study in the database postgresql://sweeps@127.0.0.1:" in out
    # Nothing of the journal's: the study is in the database.
    assert sorted(p.name for p in (tmp_path / "logs" / "sweeps" / "s").iterdir()) == ["summary.json"]


def test_sigterm_gives_the_trial_up_at_once_and_the_same_command_continues_it(tmp_path, postgresql):
    # A grace period far longer than the test: the trial is free because it was given up, not stale.
    env = setup(tmp_path, postgresql, trials=1, epochs=8, grace=600)
    run = tmp_path / "logs" / "fit" / "s-trial-000"
    stopped = sweeper(tmp_path, env)
    try:
        wait_for(lambda: latest_checkpoint(run)[0] >= 1, 300, "trial 0's first checkpoint", process=stopped)
        stopped.send_signal(signal.SIGTERM)
        _, err = stopped.communicate(timeout=60)
    finally:
        stopped.kill()
    assert stopped.returncode == 143, err
    saved = latest_checkpoint(run)[0]
    [trial] = summary(tmp_path)["trials"]
    assert trial["state"] == "interrupted" and saved < 8

    out = finish(sweeper(tmp_path, env), timeout=300)
    assert "continuing run logs/fit/s-trial-000" in out and "waiting:" not in out
    assert f"resuming s-trial-000 after epoch {saved} of 8" in out
    [trial] = study_trials(postgresql, tmp_path, env)
    assert trial.state.name == "COMPLETE" and list(trial.intermediate_values) == list(range(8))


def test_a_database_that_cannot_be_reached_or_refuses_the_password_is_one_line_and_nothing_written(
        tmp_path, postgresql):
    env = setup(tmp_path, postgresql, trials=1, epochs=1)
    (tmp_path / "password").write_text("not the password\n")
    wrong = subprocess.run([sys.executable, "-m", "app.sweep", "s.yaml"], cwd=tmp_path,
                           env={**cli_env(), **env}, capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
    assert wrong.returncode == 1 and wrong.stdout == ""
    [line] = wrong.stderr.splitlines()
    assert line.startswith("error: cannot reach the sweep's database postgresql://sweeps@127.0.0.1:")
    assert "password authentication failed" in line and "not the password" not in line
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nowhere = subprocess.run([sys.executable, "-m", "app.sweep", "s.yaml", "--storage",
                              f"postgresql://sweeps@127.0.0.1:{port}/s"], cwd=tmp_path,
                             env={**cli_env(), **env}, capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
    assert nowhere.returncode == 1 and nowhere.stdout == ""
    [line] = nowhere.stderr.splitlines()
    assert line.startswith(f"error: cannot reach the sweep's database postgresql://sweeps@127.0.0.1:{port}/s")
    assert "Connection refused" in line or "connection refused" in line
    assert not (tmp_path / "logs").exists()
