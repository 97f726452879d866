"""The compose multiworker profile for real: `make multiworker` as the unprivileged user starts a chief
and one worker container, which build TF_CONFIG from their compose names (app/scale/compose_cluster.py) and
train one run together, while the TensorBoard container shows it. Then a crash: one member's process
killed mid-run, Docker restarts the members, and the run finishes from its last checkpoint.

Each test names its own run and looks at that only, and removes whatever containers of the profile it
left, so neither the order of the tests nor what other tests left in ./logs matters.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from helpers import run_folders, wait_for
from stack import PROJECT, TB_SHOWN, sh, tb_get

pytestmark = pytest.mark.e2e
SERVICES = ("chief", "worker")


def members() -> list[str]:
    """The chief and worker containers, stopped ones too, whoever started them."""
    found = []
    for service in SERVICES:
        found += sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}",
                    "--filter", f"label=com.docker.compose.service={service}").stdout.split()
    return found


def epoch_steps(run: str, subrun: str = "validation") -> list[int]:
    try:
        points = tb_get(f"/data/plugin/scalars/scalars?run={run}/{subrun}&tag=epoch_loss")
        return [step for _, step, _ in points]
    except OSError:  # not listed yet
        return []


def checkpoints(stack, run: str) -> list[int]:
    folder = stack.dir / "logs" / "fit" / run / "checkpoints"
    return sorted(int(p.name[6:]) for p in folder.glob("epoch-*")) if folder.is_dir() else []


class MakeMultiworker:
    """`make multiworker` in the background, its output read as it comes (a full pipe would stall it)."""

    def __init__(self, stack, run: str, args: list[str]):
        self.stack, self.run = stack, run
        self.process = stack.start("make", "multiworker", f"MULTIWORKER_RUN={run}",
                                   f"MULTIWORKER_ARGS={' '.join(args)}")
        self.chunks: list[str] = []
        self.reader = threading.Thread(target=lambda: self.chunks.append(self.process.stdout.read()),
                                       daemon=True)
        self.reader.start()

    def finish(self, timeout: float) -> tuple[int, str]:
        self.process.wait(timeout=timeout)
        self.reader.join(timeout=30)
        return self.process.returncode, "".join(self.chunks)

    def stop(self) -> None:
        """However the test ended: no make and no member container left behind."""
        self.process.kill()
        if members():
            self.stack.run("docker", "compose", "--profile", "multiworker", "rm", "--force", "--stop",
                           *SERVICES)


@pytest.fixture
def make_multiworker(stack):
    started = []

    def start(run: str, args: list[str]) -> MakeMultiworker:
        started.append(MakeMultiworker(stack, run, args))
        return started[-1]

    yield start
    for each in started:
        each.stop()


def test_make_multiworker_trains_one_run_on_two_containers_that_tensorboard_shows(stack, make_multiworker):
    run = f"multiworker-e2e-{time.strftime('%H%M%S')}"
    fit = stack.dir / "logs" / "fit"
    before = set(run_folders(fit))
    started = time.monotonic()
    job = make_multiworker(run, ["--data", stack.train_data, "--epochs", "2"])
    polls = []  # (seconds, validation epochs TensorBoard serves) while make multiworker runs
    while job.process.poll() is None:
        polls.append((round(time.monotonic() - started), len(epoch_steps(run))))
        time.sleep(1)
    code, output = job.finish(timeout=60)
    print(f"make multiworker took {time.monotonic() - started:.0f} s; TensorBoard's validation epochs: "
          f"{[p for p in polls if p[1]]}")
    assert code == 0, output
    lines = output.splitlines()
    assert f"multiworker: done, all 2 containers exited with 0; TensorBoard: {TB_SHOWN}" in lines
    for task in ("chief:0", "worker:0"):
        said = f"| compose cluster: this is {task} of a chief and 1 worker"
        assert any(line.endswith(said) for line in lines), output
    assert any(f"chief-1   | run logs/fit/{run}: test accuracy " in line for line in lines), output

    # One new run, nothing else: the worker wrote nothing into the logs folder.
    assert set(run_folders(fit)) - before == {run}  # one run folder more
    run_dir = fit / run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["strategy"], metrics["replicas"], metrics["epochs_completed"]) == ("multi-worker", 2, 2)
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in [run_dir, *run_dir.rglob("*")]}
    assert owners == {(stack.uid, stack.gid)}

    # The TensorBoard container lists the run and serves its epoch curves.
    wait_for(lambda: f"{run}/validation" in tb_get("/data/runs"), 60, "TensorBoard to list the run")
    wait_for(lambda: epoch_steps(run) == [0, 1], 30, "TensorBoard to serve both validation epochs")
    assert epoch_steps(run, "train") == [0, 1]
    assert members() == [], "make multiworker left containers of the profile behind"


def test_a_member_killed_mid_run_is_restarted_and_the_run_finishes_from_its_checkpoint(stack,
                                                                                       make_multiworker):
    if os.geteuid() != 0:
        pytest.skip("killing a container's process from the host needs root (make e2e runs as root)")
    run = f"multiworker-crash-{time.strftime('%H%M%S')}"
    epochs = 6
    # long_run's data and batch size (a run long enough to kill mid-way), over fewer epochs
    job = make_multiworker(run, [*stack.long_run, "--epochs", str(epochs)])
    wait_for(lambda: checkpoints(stack, run), 1200, f"{run}'s first checkpoint", interval=0.2,
             process=job.process)
    # SIGKILL from the host, as the kernel's OOM killer would: a crash, which Docker's restart policy
    # answers (docker kill or stop would not be restarted: those count as stopped by hand).
    pid = sh("docker", "inspect", "--format", "{{.State.Pid}}", f"{PROJECT}-worker-1").stdout.strip()
    sh("kill", "-9", pid)
    code, output = job.finish(timeout=900)
    assert code == 0, output
    assert "worker-1 exited with code 137 (restarting)" in output
    resumed = [line for line in output.splitlines() if f"| resuming {run} after epoch " in line]
    assert {line.split("|")[0].strip() for line in resumed} == {"chief-1", "worker-1"}, output
    metrics = json.loads((stack.dir / "logs" / "fit" / run / "metrics.json").read_text())
    assert metrics["epochs_completed"] == epochs
    # Every epoch once in TensorBoard, none twice.
    wait_for(lambda: epoch_steps(run) == list(range(epochs)), 60, "TensorBoard to serve every epoch once")
    assert members() == []
