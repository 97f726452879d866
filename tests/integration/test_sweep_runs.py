"""Real sweeps on the slice: parallel sweepers, pruning, kill -9 and takeover, the HParams tab."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SLICE, TensorBoard, cli_env, latest_checkpoint, metrics, run_folders, wait_for

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


def sweeper(tmp_path: Path, *flags: str, env: dict | None = None) -> subprocess.Popen:
    """`python -m app.sweep s.yaml --data SLICE FLAGS` in tmp_path, as a user starts it."""
    return subprocess.Popen([sys.executable, "-m", "app.sweep", "s.yaml", "--data", str(SLICE), *flags],
                            cwd=tmp_path, env={**cli_env(), **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, out + err
    return out


def summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "logs" / "sweeps" / "s" / "summary.json").read_text())


def trial_folders(tmp_path: Path) -> list[str]:
    return run_folders(tmp_path / "logs" / "fit")


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
    # A random sampler, an integer range and a minimised objective; SWEEPERS as compose sets it.
    (tmp_path / "s.yaml").write_text(SWEEP.format(trials=4, epochs=1, pruning="false").replace(
        "batch_size: {choices: [64, 128]}", "batch_size: {low: 48, high: 160}") +
        "sampler: random\nobjective: val_loss\n")
    first, second = (sweeper(tmp_path, env={"SWEEPERS": "2"}) for _ in range(2))
    outputs = [finish(first), finish(second)]

    report = summary(tmp_path)
    assert report["objective"] == {"metric": "val_loss", "direction": "minimize"}
    assert [t["number"] for t in report["trials"]] == [0, 1, 2, 3]
    assert {t["state"] for t in report["trials"]} == {"complete"} and report["complete"] == 4
    assert trial_folders(tmp_path) == [f"s-trial-00{i}" for i in range(4)]
    for trial in report["trials"]:
        run = Path(tmp_path / trial["run"])
        assert {"config.json", "metrics.json", "model.keras", "saved_model", "checkpoints"} <= {
            p.name for p in run.iterdir()}
        config = json.loads((run / "config.json").read_text())
        assert (config["sweep"], config["trial"]) == ("s", trial["number"])
        assert config["learning_rate"] == trial["params"]["learning_rate"]
        assert isinstance(config["batch_size"], int) and 48 <= config["batch_size"] <= 160
        assert config["batch_size"] == trial["params"]["batch_size"]
        assert trial["value"] == metrics(run)["history"]["val_loss"][-1]
    # Each trial was started exactly once, and both sweepers trained, each with half the cores.
    started = [line for out in outputs for line in out.splitlines() if ": starting run " in line]
    started_runs = sorted(line.split(" run ")[-1] for line in started)
    assert started_runs == [f"logs/fit/s-trial-00{i}" for i in range(4)]
    assert all(": starting run " in out for out in outputs)
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert all(f"sweeper: one of 2 on this CPU host, {threads} thread" in out for out in outputs)
    # The lowest validation loss is the best, and the ranking ascends.
    values = sorted(t["value"] for t in report["trials"])
    assert report["best"]["value"] == values[0]
    for out in outputs:
        assert "sweep s: 4 trials (4 complete, 0 pruned, 0 failed)" in out
        ranked = [float(line.split()[2]) for line in out.splitlines() if re.match(r" *[1-5] +\d+ ", line)]
        assert ranked == [round(v, 4) for v in values], out
        [command] = [line for line in out.splitlines() if line.startswith("best: python -m app ")]
        assert f"--data {SLICE}" in command
        assert f"--learning-rate {report['best']['params']['learning_rate']}" in command
        assert f"--batch-size {report['best']['params']['batch_size']}" in command


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One real sweep that the pruning, failed-trial and HParams checks all read: a good trial, a
    hopeless one (learning rate 1e-7) that the median pruner stops after its first epoch, and one
    that diverges (learning rate 1e5: the loss becomes NaN). Then a TensorBoard over it."""
    from app.sweep import spec, study

    tmp_path = tmp_path_factory.mktemp("sweep")
    path = write_sweep(tmp_path, trials=3, epochs=3, pruning="{startup_trials: 1}")
    path.write_text(path.read_text().replace("high: 0.01", "high: 100000"))
    the_study = study.open_study(spec.load(str(path), {}), str(tmp_path / "logs"))
    for params in ({"learning_rate": 0.005, "batch_size": 64}, {"learning_rate": 1e-7, "batch_size": 128},
                   {"learning_rate": 100000.0, "batch_size": 64}):
        the_study.enqueue_trial(params)
    out = finish(sweeper(tmp_path))
    server = TensorBoard(tmp_path / "logs" / "fit")
    try:
        groups = wait_for(lambda: len(session_groups(server)) == 3 and session_groups(server), 60,
                          "TensorBoard to list the three trials")
        experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    finally:
        server.stop()
    return tmp_path, out, groups, experiment


def test_pruning_stops_a_bad_trial_early(shared):
    import optuna

    tmp_path, out, _, _ = shared
    assert "trial 1: pruned after epoch 1" in out
    report = summary(tmp_path)
    assert [(t["number"], t["state"]) for t in report["trials"]] == [(0, "complete"), (1, "pruned"),
                                                                      (2, "failed")]
    good, pruned = (tmp_path / "logs" / "fit" / f"s-trial-00{i}" for i in (0, 1))
    assert metrics(good)["epochs_completed"] == 3 and metrics(pruned)["epochs_completed"] == 1
    # Which epoch's model each trial's run exported (the best by validation loss), and its value then.
    assert report["trials"][0]["exported_epoch"] == metrics(good)["exported_epoch"]
    assert report["trials"][0]["value"] == metrics(good)["history"]["val_accuracy"][
        metrics(good)["exported_epoch"] - 1]
    assert (pruned / "model.keras").is_file()  # a pruned trial is still a whole run
    trial_0, trial_1, _ = study_trials(tmp_path)
    assert trial_1.state == optuna.trial.TrialState.PRUNED and list(trial_1.intermediate_values) == [0]
    assert list(trial_0.intermediate_values) == [0, 1, 2]


def test_successive_halving_stops_a_trial_behind_after_epoch_1_and_lets_one_ahead_go_on(tmp_path):
    """The shipped sweep's pruner on a tiny sweep: the first trial sets the bar at epoch 1, a hopeless
    one (learning rate 1e-7) is behind it there and stops after that epoch, a better one goes on."""
    from app.sweep import spec, study

    path = write_sweep(tmp_path, trials=3, epochs=3,
                       pruning="{pruner: successive-halving, min_epochs: 1, reduction_factor: 3}")
    the_study = study.open_study(spec.load(str(path), {}), str(tmp_path / "logs"))
    for params in ({"learning_rate": 0.0005, "batch_size": 128}, {"learning_rate": 1e-7, "batch_size": 128},
                   {"learning_rate": 0.005, "batch_size": 64}):
        the_study.enqueue_trial(params)
    out = finish(sweeper(tmp_path))
    assert re.search(r"trial 1: pruned after epoch 1 \(val_accuracy [0-9.]+ is not in the best 1/3 of the "
                     r"trials that reached that epoch\)", out), out
    assert "sweep s: 3 trials (2 complete, 1 pruned, 0 failed)" in out
    states = [(t["number"], t["state"]) for t in summary(tmp_path)["trials"]]
    assert states == [(0, "complete"), (1, "pruned"), (2, "complete")]
    runs = [tmp_path / "logs" / "fit" / f"s-trial-00{i}" for i in range(3)]
    assert [metrics(run)["epochs_completed"] for run in runs] == [3, 1, 3]
    # Steps as ever (epoch N is step N - 1); each trial judged at the first rung, after epoch 1.
    trials = study_trials(tmp_path)
    assert [list(t.intermediate_values) for t in trials] == [[0, 1, 2], [0], [0, 1, 2]]
    assert all("completed_rung_0" in t.system_attrs for t in trials)


def test_a_diverging_trial_is_failed_and_the_sweep_goes_on(shared):
    tmp_path, out, _, _ = shared
    assert "sweep s: 3 trials (1 complete, 1 pruned, 1 failed)" in out
    assert not (tmp_path / "logs" / "fit" / "s-trial-002" / "metrics.json").exists()


def test_the_hparams_tab_shows_each_trial_with_how_it_ended(shared):
    from app.sweep import spec

    tmp_path, _, groups, experiment = shared
    # The settings a sweep can search first, then the objective, validation loss, test accuracy.
    hparam_names = [h["name"] for h in experiment["hparamInfos"]]
    assert hparam_names[:8] == ["batch_size", "channels", "dataset", "epochs", "image_size", "learning_rate",
                                "lr_schedule", "seed"] == sorted(spec.sweepable())
    assert [m["displayName"] for m in experiment["metricInfos"]][:3] == [
        "validation accuracy", "validation loss", "test accuracy"]
    hparams = groups["s-trial-001"]["hparams"]
    assert hparams == {**hparams, "learning_rate": 1e-7, "batch_size": 128, "sweep": "s", "trial": 1}
    values = {n: {m["name"]["tag"] if not m["name"]["group"] else f"{m['name']['group']}/{m['name']['tag']}":
                  m["value"] for m in g["metricValues"]} for n, g in groups.items()}
    assert values["s-trial-001"]["trial_pruned"] == 1 and values["s-trial-000"]["trial_pruned"] == 0
    assert values["s-trial-001"]["epochs_trained"] == 1 and values["s-trial-000"]["epochs_trained"] == 3
    assert values["s-trial-000"]["validation/epoch_accuracy"] == pytest.approx(
        metrics(tmp_path / "logs" / "fit" / "s-trial-000")["history"]["val_accuracy"][-1])
    assert [groups[f"s-trial-00{i}"]["sessions"][0]["status"] for i in range(3)] == [
        "STATUS_SUCCESS", "STATUS_SUCCESS", "STATUS_FAILURE"]


def test_kill_9_of_a_sweeper_mid_trial_then_the_same_command_continues_that_trial(tmp_path):
    write_sweep(tmp_path, trials=2, epochs=6)
    server = TensorBoard(tmp_path / "logs" / "fit")
    try:
        doomed = sweeper(tmp_path)
        run = tmp_path / "logs" / "fit" / "s-trial-000"
        wait_for(lambda: latest_checkpoint(run)[0] >= 2, 300, "trial 0's second checkpoint", process=doomed)
        doomed.send_signal(signal.SIGSTOP)  # mid-trial, however fast this machine, while TensorBoard is asked
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
    assert trial_folders(tmp_path) == ["s-trial-000", "s-trial-001"]
    result = metrics(run)
    assert result["epochs_completed"] == 6 and len(result["history"]["val_accuracy"]) == 6
    # The same trial went on (no third trial), every epoch reported once, the last is its value.
    trials = study_trials(tmp_path)
    assert len(trials) == 2 and list(trials[0].intermediate_values) == [0, 1, 2, 3, 4, 5]
    assert trials[0].value == result["history"]["val_accuracy"][result["exported_epoch"] - 1]


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
    assert len(study_trials(tmp_path)) == 2 and trial_folders(tmp_path) == ["s-trial-000", "s-trial-001"]


def test_a_grid_sweep_runs_every_point_once_and_ends_like_any_other(tmp_path):
    (tmp_path / "s.yaml").write_text("name: s\nsampler: grid\nparameters:\n"
                                     "  batch_size: {choices: [64, 128]}\nfixed:\n  epochs: 1\n")
    out = finish(sweeper(tmp_path))  # no trials: the grid's two points
    assert "sweep s: 2 trials (2 complete, 0 pruned, 0 failed)" in out
    assert "best: python -m app " in out
    assert sorted(t["params"]["batch_size"] for t in summary(tmp_path)["trials"]) == [64, 128]


def test_sigterm_marks_the_trial_interrupted_and_the_same_command_continues_it(tmp_path):
    write_sweep(tmp_path, trials=1, epochs=4)
    run = tmp_path / "logs" / "fit" / "s-trial-000"
    stopped = sweeper(tmp_path)
    try:
        wait_for(lambda: latest_checkpoint(run)[0] >= 1, 300, "trial 0's first checkpoint", process=stopped)
        stopped.send_signal(signal.SIGTERM)  # docker stop, make down
        _, err = stopped.communicate(timeout=60)
    finally:
        stopped.kill()
    assert stopped.returncode == 143, err
    assert "SIGTERM: sweeper stopped; run the same command to continue the sweep" in err
    saved = latest_checkpoint(run)[0]
    [trial] = summary(tmp_path)["trials"]
    assert trial["state"] == "interrupted" and saved < 4

    out = finish(sweeper(tmp_path))
    assert "continuing run logs/fit/s-trial-000" in out
    assert f"resuming s-trial-000 after epoch {saved} of 4" in out
    [trial] = summary(tmp_path)["trials"]
    assert trial["state"] == "complete" and metrics(run)["epochs_completed"] == 4
    assert list(study_trials(tmp_path)[0].intermediate_values) == [0, 1, 2, 3]


# The sweeper dies the moment the pruner has decided, before it tells the study.
DIE_WHEN_PRUNED = """
import os, signal, sys
from app.sweep import runner
_report = runner.ReportEachEpoch.on_epoch_end
def _report_and_die(self, epoch, logs=None):
    _report(self, epoch, logs)
    if self.pruned:
        os.kill(os.getpid(), signal.SIGKILL)
runner.ReportEachEpoch.on_epoch_end = _report_and_die
from app.sweep.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_trial_pruned_just_before_its_sweeper_died_is_evaluated_and_told_pruned_not_trained_on(tmp_path):
    from app.sweep import spec, study

    path = write_sweep(tmp_path, trials=2, epochs=3, pruning="{startup_trials: 1}")
    the_study = study.open_study(spec.load(str(path), {}), str(tmp_path / "logs"))
    the_study.enqueue_trial({"learning_rate": 0.005, "batch_size": 64})
    the_study.enqueue_trial({"learning_rate": 1e-7, "batch_size": 128})
    dying = subprocess.run([sys.executable, "-c", DIE_WHEN_PRUNED, "s.yaml", "--data", str(SLICE)],
                           cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert dying.returncode == -signal.SIGKILL, dying.stderr
    run = tmp_path / "logs" / "fit" / "s-trial-001"
    assert latest_checkpoint(run)[0] == 1 and not (run / "metrics.json").exists()
    assert [t.state.name for t in study_trials(tmp_path)] == ["COMPLETE", "RUNNING"]

    out = finish(sweeper(tmp_path))
    assert "s-trial-001 already has 1 epochs; evaluating and exporting it again" in out
    assert [(t["number"], t["state"]) for t in summary(tmp_path)["trials"]] == [(0, "complete"),
                                                                                  (1, "pruned")]
    assert metrics(run)["epochs_completed"] == 1 and (run / "model.keras").is_file()
    assert list(study_trials(tmp_path)[1].intermediate_values) == [0]  # reported once, not again
