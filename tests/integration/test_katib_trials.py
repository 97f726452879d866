"""The Katib trial's command of `python -m app.sweep FILE --katib`, run for real for one epoch on the slice:
its output, parsed as Katib's StdOut collector parses it, gives the objective and every metric; a
restarted trial continues its own run folder. The same for a TrainJob trial (`--katib-trial trainjob`),
its two pods played by two processes. The Experiment's offline checks: tests/unit/test_katib.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import SLICE, cli_env, metrics, run_command, run_folders
from test_katib import CHIEF, WORKER, collected, generated, run_spec, trial_name, trial_pods
from test_kubernetes import container

from app.sweep import katib as katib_sweep
from tools.common import free_port


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


def test_the_trainjob_trials_chief_prints_the_objective_and_every_metric(tmp_path):
    """The TrainJob trial's two pods as two local processes, as tests/integration/test_distribution.py plays
    a JobSet's: each runs its container's command (the runtime's launcher, the trial's flags) with the
    environment its pod gets (WORKERS from the TrainJob; the JobSet's names by the downward API and the
    completion index, written here) and CLUSTER_ADDRESSES on 127.0.0.1 for the pods' DNS names. The chief's
    output, parsed as Katib's collector parses it, gives the objective and every metric; the run folder is
    the trial's name."""
    exp = generated(trial="trainjob")
    found = trial_pods(exp, values={"learning_rate": "0.002", "batch_size": "64"})
    ports = {free_port()}
    while len(ports) < 2:
        ports.add(free_port())
    processes = []
    for index, where in enumerate((CHIEF["TrainJob"], WORKER["TrainJob"])):
        node = container(found[where].spec, katib_sweep.NODE)
        assert node["command"][:1] == ["python3"], node["command"]
        given = {var["name"]: var["value"] for var in node["env"] if "value" in var}
        downward = {var["name"] for var in node["env"] if "valueFrom" in var}
        assert (given, downward) == ({"WORKERS": "1"}, {"JOBSET_NAME", "REPLICATED_JOB_NAME", "JOB_INDEX"})
        pod = {**given, "JOBSET_NAME": trial_name(exp), "REPLICATED_JOB_NAME": "node", "JOB_INDEX": "0",
               "JOB_COMPLETION_INDEX": str(index),
               "CLUSTER_ADDRESSES": ",".join(f"127.0.0.1:{p}" for p in sorted(ports))}
        command = [sys.executable, *node["command"][1:], *node["args"], "--epochs", "1", "--data", str(SLICE)]
        processes.append(subprocess.Popen(command, cwd=tmp_path, text=True, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          env={**cli_env(), **pod}))
    outputs = []
    try:
        for each in processes:
            outputs.append(each.communicate(timeout=300)[0])
    finally:
        for each in processes:
            each.kill()
    assert [each.returncode for each in processes] == [0, 0], outputs
    objective = exp["spec"]["objective"]
    names = [objective["objectiveMetricName"], *objective["additionalMetricNames"]]
    filters = exp["spec"]["metricsCollectorSpec"]["source"]["filter"]["metricsFormat"]
    chief = collected(outputs[0], names, filters)
    assert sorted(name for _, name, _ in chief) == sorted(names), outputs[0]
    history = metrics(tmp_path / "logs" / "fit" / trial_name(exp))["history"]
    for _, name, value in chief:
        assert float(value) == pytest.approx(history[name][0], rel=1e-5), name
    assert run_folders(tmp_path / "logs" / "fit") == [trial_name(exp)]
