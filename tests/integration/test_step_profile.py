"""python -m tools.step_profile on the 1,200-digit slice: a real trace, read back op by op."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import ROOT, SLICE, cli_env

# This CNN's forward pass per 28x28 image, by hand: conv1 26*26 outputs x 32 channels x 3*3*1
# weights, conv2 11*11 x 64 x 3*3*32, dense 1600 x 128, output 128 x 10; a multiply-add is two.
FORWARD = {"conv1": 2 * 26 * 26 * 32 * 9, "conv2": 2 * 11 * 11 * 64 * 288, "dense": 2 * 1600 * 128,
           "output": 2 * 128 * 10}


def test_the_profile_names_each_layers_ops_their_speed_and_the_peak(tmp_path):
    out = tmp_path / "profile.json"
    result = subprocess.run([sys.executable, "-m", "tools.step_profile", "--data", str(SLICE), "--precision",
                             "float32", "--batch-size", "100", "--out", str(out)],
                            cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["precision"] == "float32" and report["steps_per_epoch"] == 12
    assert report["flops_per_image"]["layers_forward"] == FORWARD
    # Training: forward, weight and input gradients, but no input gradient for the first layer.
    assert report["flops_per_image"]["training"] == 3 * sum(FORWARD.values()) - FORWARD["conv1"]

    # The trace holds every layer's forward op and weight gradient, and input gradients but the first's.
    roles = {(op["layer"], op["role"]) for op in report["ops"] if "role" in op}
    for layer in FORWARD:
        assert {(layer, "forward"), (layer, "weight gradient")} <= roles, layer
    assert ("conv2", "input gradient") in roles and ("conv1", "input gradient") not in roles
    assert all(op["gflops"] > 0 for op in report["ops"] if "role" in op)
    assert {"pool1", "pool2"} <= {op.get("layer") for op in report["ops"]}  # the other ops, by layer too
    assert abs(sum(op["share"] for op in report["ops"]) - 1) < 0.01
    assert 0 < report["achieved_gflops"] < report["peak_gflops"]

    table = result.stdout
    assert "conv2 weight gradient" in table and report["cpu"] in table and "of it" in table
