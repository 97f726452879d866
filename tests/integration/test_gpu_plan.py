"""The GPU path's settings, trained with on the CPU: no GPU is ever available to these tests.

The device plan is data (app/scale/devices.py): these runs take the GPU plan's execution settings
(20 steps per call, mixed float16, XLA) or a precision another host would pick, injected into
the real CLI, and train on the CPU with them.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from helpers import SLICE, cli_env, metrics, run_cli, run_command, scalar_steps, with_fault

# 1,200 images in batches of 32: 38 steps an epoch, not a multiple of the GPU's 20 steps per call.
STEPS, PER_CALL = 38, 20
ARGS = ["--data", str(SLICE), "--batch-size", "32", "--lr-schedule", "constant"]

GPU_STEPS_ONLY = """
import dataclasses
from app.scale import devices
devices.plan = lambda precision: dataclasses.replace(
    devices.cpu_plan(precision), steps_per_execution=devices.GPU_STEPS_PER_EXECUTION)
"""

WHOLE_GPU_PLAN = """
from app.scale import devices
devices.plan = lambda precision: devices.gpu_plan("stand-in (on the CPU)", (8, 0), precision)
"""

KILL_AT_STEP = """
import os, signal
from app.tabs import batch_scalars
_log = batch_scalars.BatchScalars.on_train_batch_end
def _log_and_die(self, batch, logs=None):
    _log(self, batch, logs)
    if int(self.model.optimizer.iterations.numpy()) >= {step}:
        os.kill(os.getpid(), signal.SIGKILL)
batch_scalars.BatchScalars.on_train_batch_end = _log_and_die
"""

# What --precision auto would pick on another host: float16 on a GPU, float32 on an older CPU.
AUTO_GIVES = """
from app.scale import devices
_plan = devices.plan
devices.plan = lambda precision: _plan("{policy}" if precision == "auto" else precision)
"""


def promised_points(every: int, epochs: int) -> list[int]:
    """Batch points with 20 steps per call: at the end of the call in which each multiple of
    `every` falls. Calls start afresh each epoch; an epoch's last call runs what is left."""
    call_ends = [e * STEPS + min(s + PER_CALL, STEPS)
                 for e in range(epochs) for s in range(0, STEPS, PER_CALL)]
    return sorted({next(end for end in call_ends if end >= k * every)
                   for k in range(1, epochs * STEPS // every + 1)})


def test_20_steps_per_call_give_every_epoch_exactly_its_own_batches(tmp_path):
    one = run_cli(*ARGS, "--epochs", "3", "--precision", "float32", "--run-name", "one", cwd=tmp_path)
    twenty = run_command(with_fault(GPU_STEPS_ONLY, *ARGS, "--epochs", "3", "--precision", "float32",
                                    "--run-name", "twenty"), tmp_path)
    assert one.returncode == 0 and twenty.returncode == 0, one.stderr + twenty.stderr
    assert "ran out of data" not in twenty.stderr
    # The same batches in the same epochs: to the last bit the same training as one step per call.
    a, b = metrics(tmp_path / "logs" / "fit" / "one"), metrics(tmp_path / "logs" / "fit" / "twenty")
    assert b["history"] == a["history"] and b["test_loss"] == a["test_loss"]
    # The batch curve has the points promised for several steps per call, ending at the last step.
    points = scalar_steps(tmp_path / "logs" / "fit" / "twenty", "batch_loss")
    assert points == promised_points(20, 3) and points[-1] == 3 * STEPS


@pytest.mark.slow
def test_the_whole_gpu_plan_trains_on_the_cpu_and_a_killed_run_resumes_exactly(tmp_path):
    """20 steps per call, mixed float16 (a LossScaleOptimizer) and XLA, killed mid-epoch."""
    args = [*ARGS, "--epochs", "3", "--batch-log-every", "10"]
    whole = run_command(with_fault(WHOLE_GPU_PLAN, *args, "--run-name", "whole"), tmp_path)
    assert whole.returncode == 0, whole.stderr
    assert "on GPU stand-in (on the CPU) (compute capability 8.0, mixed_float16, XLA)" in whole.stdout
    killed = run_command(with_fault(WHOLE_GPU_PLAN + KILL_AT_STEP.format(step=STEPS + 21),
                                    *args, "--run-name", "killed"), tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = run_command(with_fault(WHOLE_GPU_PLAN, *args, "--run-name", "killed", "--resume"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming killed after epoch 1 of 3" in resumed.stdout
    a, b = metrics(tmp_path / "logs" / "fit" / "whole"), metrics(tmp_path / "logs" / "fit" / "killed")
    assert b["history"] == a["history"] and b["test_loss"] == a["test_loss"]
    points = scalar_steps(tmp_path / "logs" / "fit" / "killed", "batch_loss")
    assert points == promised_points(10, 3) == scalar_steps(tmp_path / "logs" / "fit" / "whole", "batch_loss")


@pytest.mark.parametrize("started, elsewhere", [("mixed_float16", "float32"), ("float32", "mixed_float16")])
def test_a_run_resumed_where_auto_picks_another_precision_keeps_its_own(tmp_path, started, elsewhere):
    uninterrupted = run_cli(*ARGS, "--epochs", "2", "--precision", started, "--run-name", "whole",
                            cwd=tmp_path)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    first = run_command(with_fault(AUTO_GIVES.format(policy=started), *ARGS, "--epochs", "1",
                                   "--run-name", "moved"), tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"training on CPU ({started})" in first.stdout
    # The same run continued on a host where --precision auto gives another policy.
    second = run_command(with_fault(AUTO_GIVES.format(policy=elsewhere), *ARGS, "--epochs", "2",
                                    "--run-name", "moved", "--resume"), tmp_path)
    assert second.returncode == 0, second.stderr
    assert f"training on CPU ({started})" in second.stdout
    assert (f"note: moved keeps training in {started}, the dtype policy it started in "
            f"(--precision auto gives {elsewhere} on this machine)") in second.stderr
    # Its optimizer state loaded (Keras would only warn if not): the uninterrupted result exactly.
    a, b = metrics(tmp_path / "logs" / "fit" / "whole"), metrics(tmp_path / "logs" / "fit" / "moved")
    assert b["history"] == a["history"] and b["test_loss"] == a["test_loss"]


def test_the_device_plan_and_report_work_after_tensorflow_initialised_the_devices():
    # As in `make bench` (the reference trains first) or a notebook: the plan must not try to
    # reconfigure devices that are already initialised (on a GPU, set_memory_growth would raise).
    code = ("import tensorflow as tf\nfloat(tf.reduce_sum(tf.ones([8, 8])))\n"
            "from app.scale import devices\nprint(devices.plan().description)\ndevices.report()")
    result = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "training on" in result.stdout and "steps per execution" in result.stdout


def test_deterministic_ops_run_and_are_recorded(tmp_path):
    result = run_cli(*ARGS, "--epochs", "1", "--deterministic", "--run-name", "det", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"deterministic": true' in (tmp_path / "logs" / "fit" / "det" / "config.json").read_text()
