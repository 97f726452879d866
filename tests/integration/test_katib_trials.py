"""The Katib trial's command of `python -m app.sweep FILE --katib`, run for real for one epoch on the slice:
its output, parsed as Katib's StdOut collector parses it, gives the objective and every metric; a
restarted trial continues its own run folder. The Experiment's offline checks: tests/unit/test_katib.py."""

from __future__ import annotations

import sys

import pytest
from helpers import SLICE, metrics, run_command, run_folders
from test_katib import collected, generated, run_spec, trial_name
from test_kubernetes import container

from app.sweep import katib as katib_sweep


@pytest.fixture(scope="module")
def trial_run(tmp_path_factory):
    """The default Experiment's trial command, run for real: one epoch on the slice."""
    exp = generated()
    job = run_spec(exp, {"learning_rate": "0.002", "batch_size": "64"})
    tensorflow = container(job["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"], katib_sweep.CONTAINER)
    command = [sys.executable, "-m", "app", *tensorflow["args"], "--epochs", "1", "--data", str(SLICE)]
    workdir = tmp_path_factory.mktemp("trial")
    first = run_command(command, cwd=workdir)
    assert first.returncode == 0, first.stderr
    return exp, command, workdir, first


def test_the_trial_prints_the_objective_and_every_metric_for_the_collector(trial_run):
    exp, _, workdir, result = trial_run
    objective = exp["spec"]["objective"]
    names = [objective["objectiveMetricName"], *objective["additionalMetricNames"]]
    filters = exp["spec"]["metricsCollectorSpec"]["source"]["filter"]["metricsFormat"]
    # Katib's collector reads stdout and stderr together (`1>file 2>&1`).
    found = collected(result.stdout + result.stderr, names, filters)
    history = metrics(workdir / "logs" / "fit" / trial_name(exp))["history"]
    # One value per metric and epoch (medianstop counts them as steps), the epoch's own, with a timestamp.
    assert sorted(name for _, name, _ in found) == sorted(names)
    for stamp, name, value in found:
        assert float(value) == pytest.approx(history[name][0], rel=1e-5), name
        assert not stamp.startswith("0001"), stamp
    # The check rejects what would leave Katib's objective "unavailable": a filter that matches nothing
    # the trainer prints, or an objective the trainer does not print each epoch.
    assert collected(result.stdout + result.stderr, names, [r"([\w-]+)=(\d+)x"]) == []
    assert collected(result.stdout + result.stderr, ["test_accuracy"], filters) == []


def test_a_restarted_trial_continues_its_own_run_folder(trial_run):
    """A container restart runs the same command: the same run folder, continued (--resume auto)."""
    exp, command, workdir, _ = trial_run
    again = run_command(command, cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert f"{trial_name(exp)} already has 1 epochs" in again.stdout
    # Run folders only: the log folder may also hold files of its own (TensorBoard's experiment).
    assert run_folders(workdir / "logs" / "fit") == [trial_name(exp)]
