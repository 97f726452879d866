"""Real sweeps on the slice: parallel sweepers, pruning, kill -9 and takeover, the HParams tab."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SLICE, TensorBoard, cli_env, latest_checkpoint, metrics, wait_for

SWEEP = """\
name: s
trials: {trials}
pruning: {pruning}
parameters:
  learning_rate: {{low: 0.0000001, high: 0.01, log: true}}
  batch_size: {{choices: [64, 128]}}
fixed:
  epochs: {epochs}
"""
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def write_sweep(tmp_path: Path, trials: int, epochs: int, pruning: str = "false") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(SWEEP.format(trials=trials, epochs=epochs, pruning=pruning))
    return path


def sweeper(tmp_path: Path, *flags: str) -> subprocess.Popen:
    """`python -m app.sweep s.yaml --data SLICE FLAGS` in tmp_path, as a user starts it."""
    return subprocess.Popen([sys.executable, "-m", "app.sweep", "s.yaml", "--data", str(SLICE), *flags],
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, out + err
    return out


def summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "logs" / "sweeps" / "s" / "summary.json").read_text())


def run_folders(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "logs" / "fit").iterdir() if p.is_dir())


def study_trials(tmp_path: Path):
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "logs" / "sweeps" / "s" / "journal.log")))
    return optuna.load_study(study_name="s", storage=storage).get_trials()


def session_groups(server: TensorBoard) -> dict[str, dict]:
    groups = server.post("/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ALL_STATUSES, "colParams": [], "startIndex": 0,
        "sliceSize": 100})
    return {g["name"]: g for g in groups["sessionGroups"]}


def test_two_sweepers_at_once_share_the_study_and_run_different_trials(tmp_path):
    write_sweep(tmp_path, trials=4, epochs=1)
    first, second = sweeper(tmp_path), sweeper(tmp_path)
    outputs = [finish(first), finish(second)]

    report = summary(tmp_path)
    assert [t["number"] for t in report["trials"]] == [0, 1, 2, 3]
    assert {t["state"] for t in report["trials"]} == {"complete"} and report["complete"] == 4
    assert run_folders(tmp_path) == [f"s-trial-00{i}" for i in range(4)]
    for trial in report["trials"]:
        run = Path(tmp_path / trial["run"])
        assert {"config.json", "metrics.json", "model.keras", "saved_model", "checkpoints"} <= {
            p.name for p in run.iterdir()}
        config = json.loads((run / "config.json").read_text())
        assert (config["sweep"], config["trial"]) == ("s", trial["number"])
        assert config["learning_rate"] == trial["params"]["learning_rate"]
        assert trial["value"] == metrics(run)["history"]["val_accuracy"][-1]
    # Each trial was started exactly once, and both sweepers trained.
    started = [line for out in outputs for line in out.splitlines() if ": starting run " in line]
    started_runs = sorted(line.split(" run ")[-1] for line in started)
    assert started_runs == [f"logs/fit/s-trial-00{i}" for i in range(4)]
    assert all(": starting run " in out for out in outputs)
    best = report["best"]
    for out in outputs:
        assert "sweep s: 4 trials (4 complete, 0 pruned, 0 failed)" in out
        [command] = [line for line in out.splitlines() if line.startswith("best: python -m app ")]
        assert f"--data {SLICE}" in command
        assert f"--learning-rate {best['params']['learning_rate']}" in command


def test_pruning_stops_a_bad_trial_early_and_the_hparams_tab_shows_it(tmp_path):
    import optuna

    from app.sweep import spec, study

    # A good trial, then a hopeless one (learning rate 1e-7): the second is behind the first's
    # validation accuracy after one epoch, and the median pruner stops it there.
    sweep = spec.load(str(write_sweep(tmp_path, trials=2, epochs=3, pruning="{startup_trials: 1}")), {})
    the_study = study.open_study(sweep, str(tmp_path / "logs"))
    the_study.enqueue_trial({"learning_rate": 0.005, "batch_size": 64})
    the_study.enqueue_trial({"learning_rate": 1e-7, "batch_size": 128})
    out = finish(sweeper(tmp_path))

    assert "trial 1: pruned after epoch 1" in out
    report = summary(tmp_path)
    assert [(t["number"], t["state"]) for t in report["trials"]] == [(0, "complete"), (1, "pruned")]
    good, pruned = (tmp_path / "logs" / "fit" / f"s-trial-00{i}" for i in (0, 1))
    assert metrics(good)["epochs_completed"] == 3 and metrics(pruned)["epochs_completed"] == 1
    assert (pruned / "model.keras").is_file()  # a pruned trial is still a whole run
    [trial_0, trial_1] = study_trials(tmp_path)
    assert trial_1.state == optuna.trial.TrialState.PRUNED and list(trial_1.intermediate_values) == [0]
    assert list(trial_0.intermediate_values) == [0, 1, 2]

    server = TensorBoard(tmp_path / "logs" / "fit")
    try:
        groups = wait_for(lambda: len(session_groups(server)) == 2 and session_groups(server), 60,
                          "TensorBoard to list both trials")
        experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    finally:
        server.stop()
    # The settings a sweep can search first, then the objective, validation loss, test accuracy.
    hparam_names = [h["name"] for h in experiment["hparamInfos"]]
    assert hparam_names[:len(spec.sweepable())] == sorted(spec.sweepable())
    assert [m["displayName"] for m in experiment["metricInfos"]][:3] == [
        "validation accuracy", "validation loss", "test accuracy"]
    hparams = groups["s-trial-001"]["hparams"]
    assert hparams == {**hparams, "learning_rate": 1e-7, "batch_size": 128, "sweep": "s", "trial": 1}
    values = {n: {m["name"]["tag"] if not m["name"]["group"] else f"{m['name']['group']}/{m['name']['tag']}":
                  m["value"] for m in g["metricValues"]} for n, g in groups.items()}
    assert values["s-trial-001"]["trial_pruned"] == 1 and values["s-trial-000"]["trial_pruned"] == 0
    assert values["s-trial-001"]["epochs_trained"] == 1 and values["s-trial-000"]["epochs_trained"] == 3
    assert values["s-trial-000"]["validation/epoch_accuracy"] == pytest.approx(report["trials"][0]["value"])
    assert all(g["sessions"][0]["status"] == "STATUS_SUCCESS" for g in groups.values())


def test_kill_9_of_a_sweeper_mid_trial_then_the_same_command_continues_that_trial(tmp_path):
    write_sweep(tmp_path, trials=2, epochs=6)
    server = TensorBoard(tmp_path / "logs" / "fit")
    try:
        doomed = sweeper(tmp_path)
        run = tmp_path / "logs" / "fit" / "s-trial-000"
        wait_for(lambda: latest_checkpoint(run)[0] >= 2, 300, "trial 0's second checkpoint", process=doomed)
        # While it trains, the trial is already in the HParams tab.
        assert "s-trial-000" in wait_for(lambda: session_groups(server), 60, "the running trial's session")
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.communicate()
        killed_at = latest_checkpoint(run)[0]
        assert killed_at < 6 and not (run / "metrics.json").exists()

        out = finish(sweeper(tmp_path))
    finally:
        server.stop()
    assert "trial 0 (" in out and "continuing run logs/fit/s-trial-000" in out
    assert f"resuming s-trial-000 after epoch {killed_at} of 6" in out
    report = summary(tmp_path)
    assert [(t["number"], t["state"]) for t in report["trials"]] == [(0, "complete"), (1, "complete")]
    assert run_folders(tmp_path) == ["s-trial-000", "s-trial-001"]
    result = metrics(run)
    assert result["epochs_completed"] == 6 and len(result["history"]["val_accuracy"]) == 6
    # The same trial went on (no third trial), every epoch reported once, the last is its value.
    trials = study_trials(tmp_path)
    assert len(trials) == 2 and list(trials[0].intermediate_values) == [0, 1, 2, 3, 4, 5]
    assert trials[0].value == result["history"]["val_accuracy"][-1]


def test_a_live_sweeper_takes_over_the_trial_of_one_that_died_but_not_a_live_ones(tmp_path):
    write_sweep(tmp_path, trials=2, epochs=8)
    sweepers = [sweeper(tmp_path), sweeper(tmp_path)]
    fit = tmp_path / "logs" / "fit"
    wait_for(lambda: all(latest_checkpoint(fit / f"s-trial-00{i}")[0] >= 1 for i in (0, 1)), 300,
             "both trials' first checkpoints", process=sweepers[0])
    # Neither took the other's trial while both lived; now the one running trial 0 dies.
    owner = int(study_trials(tmp_path)[0].user_attrs["sweeper"].split("-")[-2])
    [doomed] = [p for p in sweepers if p.pid == owner]
    [survivor] = [p for p in sweepers if p.pid != owner]
    assert not (fit / "s-trial-000" / "metrics.json").exists()
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.communicate()

    out = finish(survivor)
    # The survivor finished its own trial 1, then took over trial 0 from its checkpoint.
    assert "starting run logs/fit/s-trial-001" in out and "continuing run logs/fit/s-trial-000" in out
    report = summary(tmp_path)
    assert [(t["number"], t["state"]) for t in report["trials"]] == [(0, "complete"), (1, "complete")]
    assert len(study_trials(tmp_path)) == 2 and run_folders(tmp_path) == ["s-trial-000", "s-trial-001"]


def test_a_diverging_trial_is_failed_and_the_sweep_goes_on(tmp_path):
    from app.sweep import spec, study

    path = write_sweep(tmp_path, trials=2, epochs=1)
    path.write_text(path.read_text().replace("high: 0.01", "high: 100000"))
    the_study = study.open_study(spec.load(str(path), {}), str(tmp_path / "logs"))
    the_study.enqueue_trial({"learning_rate": 100000.0, "batch_size": 64})  # the loss becomes NaN
    the_study.enqueue_trial({"learning_rate": 0.005, "batch_size": 64})
    process = sweeper(tmp_path)
    out = finish(process)
    assert "sweep s: 2 trials (1 complete, 0 pruned, 1 failed)" in out
    assert [t["state"] for t in summary(tmp_path)["trials"]] == ["failed", "complete"]

    server = TensorBoard(tmp_path / "logs" / "fit")
    try:
        groups = wait_for(lambda: len(session_groups(server)) == 2 and session_groups(server), 60,
                          "TensorBoard to list both trials")
    finally:
        server.stop()
    assert groups["s-trial-000"]["sessions"][0]["status"] == "STATUS_FAILURE"
    assert groups["s-trial-001"]["sessions"][0]["status"] == "STATUS_SUCCESS"
