"""Scaling out on the CPU: MirroredStrategy over two logical devices, and two real worker processes
with TF_CONFIG on 127.0.0.1 (workers only, and chief + worker), one killed and the job restarted; and
two pods of a JobSet (or TrainJob) played by two processes, whose TF_CONFIG the project's launcher builds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from helpers import (
    SLICE,
    cli_env,
    events,
    latest_checkpoint,
    metrics,
    run_cli,
    run_command,
    run_folders,
    scalar_steps,
    wait_for,
    with_fault,
)

from tools.common import free_port

ARGS = ["--data", str(SLICE), "--batch-size", "64"]
TWO_CPUS = """
import tensorflow as tf
[cpu] = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""


def tf_configs(layout: str) -> list[dict]:
    """One TF_CONFIG per process, as the Kubeflow training operator writes them."""
    ports = {free_port()}
    while len(ports) < 2:
        ports.add(free_port())
    a, b = (f"127.0.0.1:{p}" for p in sorted(ports))
    if layout == "chief+worker":
        cluster, tasks = {"chief": [a], "worker": [b]}, [("chief", 0), ("worker", 0)]
    else:
        cluster, tasks = {"worker": [a, b]}, [("worker", 0), ("worker", 1)]
    return [{"cluster": cluster, "task": {"type": t, "index": i}} for t, i in tasks]


def start_job(layout: str, args: list[str], cwd, env: dict | None = None) -> list[subprocess.Popen]:
    return [subprocess.Popen(with_fault("", *args), cwd=cwd, text=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**cli_env(), **(env or {}), "TF_CONFIG": json.dumps(config)})
            for config in tf_configs(layout)]


def finish(processes: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each; none may hang (a worker waits for its peers forever)."""
    results = []
    try:
        for p in processes:
            out, err = p.communicate(timeout=timeout)
            results.append((p.returncode, out, err))
    finally:
        for p in processes:
            p.kill()
    return results


def test_mirrored_over_two_logical_cpus(tmp_path):
    single = run_cli(*ARGS, "--epochs", "2", "--run-name", "single", cwd=tmp_path)
    mirrored = run_command(with_fault(TWO_CPUS, *ARGS, "--epochs", "2", "--strategy", "mirrored",
                                      "--run-name", "mirrored"), tmp_path)
    assert single.returncode == 0 and mirrored.returncode == 0, single.stderr + mirrored.stderr
    assert "strategy mirrored, 2 replicas" in mirrored.stdout.splitlines()[0]
    one, two = metrics(tmp_path / "logs" / "fit" / "single"), metrics(tmp_path / "logs" / "fit" / "mirrored")
    assert two["replicas"] == 2 and two["epochs_completed"] == 2
    # The same global batch, split in two: the same training up to float rounding.
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 0.01


def one_run_written_by_the_chief(fit, name: str, results, epochs: int) -> dict:
    """Both processes ended with 0, the first the chief: exactly one run, complete, with nothing from the
    other worker (no temporary files either); its metrics."""
    assert [code for code, _, _ in results] == [0, 0], results
    # The trainer's first line (after the launcher's, if one ran).
    chief_first, worker_first = (next(line for line in out.splitlines() if "cluster: this is" not in line)
                                 for _, out, _ in results)
    assert "strategy multi-worker, 2 replicas" in chief_first
    assert "(the chief writes the run)" in worker_first
    assert run_folders(fit) == [name]
    run_dir = fit / name
    assert {"config.json", "metrics.json", "model.keras", "saved_model", "train", "validation"} <= \
        {p.name for p in run_dir.iterdir()}
    assert not [p for p in run_dir.rglob("*") if p.name.startswith(".")]
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # one writer of the run's own events
    assert scalar_steps(run_dir / "validation", "epoch_accuracy") == list(range(epochs))
    assert [e.step for e in events(run_dir).Tensors("confusion_matrix")] == list(range(epochs))
    job = metrics(run_dir)
    assert job["strategy"] == "multi-worker" and job["replicas"] == 2
    return job


@pytest.mark.parametrize("layout", ["workers", "chief+worker"])
def test_two_workers_train_one_run_that_only_the_chief_writes(tmp_path, layout):
    alone = tmp_path / "alone"
    alone.mkdir()
    single = run_cli(*ARGS, "--epochs", "2", "--run-name", "single", cwd=alone)
    assert single.returncode == 0, single.stderr
    results = finish(start_job(layout, [*ARGS, "--epochs", "2", "--run-name", "job", "--resume", "auto"],
                               tmp_path))
    job = one_run_written_by_the_chief(tmp_path / "logs" / "fit", "job", results, epochs=2)
    # Within a point of one process with the same global batch.
    one_process = metrics(alone / "logs" / "fit" / "single")
    assert abs(job["test_accuracy"] - one_process["test_accuracy"]) <= 0.01


@pytest.mark.slow
def test_a_killed_worker_fails_the_job_within_a_minute_and_the_same_commands_resume_it(tmp_path):
    args = [*ARGS, "--epochs", "4", "--batch-size", "32", "--run-name", "job", "--resume", "auto"]
    run_dir = tmp_path / "logs" / "fit" / "job"
    chief, worker = start_job("chief+worker", args, tmp_path)
    try:
        wait_for(lambda: latest_checkpoint(run_dir)[0] >= 1, 300, "the first checkpoint", process=chief)
        worker.send_signal(signal.SIGKILL)  # mid-epoch 2
        killed = time.monotonic()
        _, stderr = chief.communicate(timeout=60)
        took = time.monotonic() - killed
    finally:
        chief.kill()
        worker.kill()
    assert chief.returncode == 1 and took < 60, stderr
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("error: chief:0 lost its peers") and "--resume auto" in message, message
    saved = latest_checkpoint(run_dir)[0]
    # The operator (or compose) restarts both with the very same command.
    results = finish(start_job("chief+worker", args, tmp_path))
    assert [code for code, _, _ in results] == [0, 0], results
    assert f"resuming job after epoch {saved} of 4" in results[0][1]
    assert metrics(run_dir)["epochs_completed"] == 4
    assert scalar_steps(run_dir / "validation", "epoch_accuracy") == [0, 1, 2, 3]  # no epoch twice
    batch_steps = scalar_steps(run_dir, "batch_loss")
    assert batch_steps == sorted(set(batch_steps))


def test_workers_that_see_different_checkpoints_stop_before_training(tmp_path):
    """A logs volume whose clients cache directory listings (NFS) can show the workers different
    newest checkpoints: they must find out and stop, not train from different epochs."""
    for folder, epochs in (("chief", "2"), ("worker", "1")):  # the same run, one epoch apart
        (tmp_path / folder).mkdir()
        done = run_cli(*ARGS, "--epochs", epochs, "--run-name", "job", cwd=tmp_path / folder)
        assert done.returncode == 0, done.stderr
    command = with_fault("", *ARGS, "--epochs", "3", "--run-name", "job", "--resume", "auto")
    processes = [subprocess.Popen(command, cwd=tmp_path / folder, text=True, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env={**cli_env(), "TF_CONFIG": json.dumps(config)})
                 for folder, config in zip(("chief", "worker"), tf_configs("chief+worker"), strict=True)]
    results = finish(processes, timeout=180)
    for code, out, err in results:
        assert code == 1 and "resuming" not in out, (out, err)
        message = err.strip().splitlines()[-1]
        assert message.startswith("error: the workers see different checkpoints of run job "
                                  "(after epoch 2 on chief:0, 1 on worker:0)"), message
        assert "docs/scaling.md" in message
    assert latest_checkpoint(tmp_path / "chief" / "logs" / "fit" / "job")[0] == 2  # nothing trained
    assert latest_checkpoint(tmp_path / "worker" / "logs" / "fit" / "job")[0] == 1


def test_two_pods_of_a_jobset_train_one_run_through_the_launcher(tmp_path):
    """The two pods of deploy/kubernetes/jobset (a TrainJob's are the same with other names) as two local
    processes: each gets the environment JobSet and the Job controller give a pod (its index, the
    JobSet's and replicated job's names through the downward API, WORKERS), and CLUSTER_ADDRESSES, the
    launcher's documented stand-in for the pods' DNS names, puts both on 127.0.0.1. The launcher builds
    TF_CONFIG and execs the trainer: one run, written by pod 0, the chief."""
    ports = {free_port()}
    while len(ports) < 2:
        ports.add(free_port())
    pod = {"JOBSET_NAME": "mnist-jobset", "REPLICATED_JOB_NAME": "node", "JOB_INDEX": "0", "WORKERS": "1",
           "CLUSTER_ADDRESSES": ",".join(f"127.0.0.1:{p}" for p in sorted(ports))}
    args = [*ARGS, "--epochs", "1", "--strategy", "auto", "--run-name", "mnist-jobset", "--resume", "auto"]
    processes = [subprocess.Popen([sys.executable, "-m", "app.scale.jobset_cluster", *args], cwd=tmp_path,
                                  text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE,
                                  env={**cli_env(), **pod, "JOB_COMPLETION_INDEX": str(index)})
                 for index in (0, 1)]
    results = finish(processes)
    for (_, out, _), task in zip(results, ("chief:0", "worker:0"), strict=True):
        assert out.startswith(f"jobset cluster: this is {task} of a chief and 1 worker (pod "), out
    one_run_written_by_the_chief(tmp_path / "logs" / "fit", "mnist-jobset", results, epochs=1)
