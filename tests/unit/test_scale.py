"""Where a run trains, checked without training: the cluster a TF_CONFIG describes, refused in one
line when it cannot work; the TFJob's commands; the GPU plan's profile steps; the device line."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import ROOT, SLICE, run_main

from app.__main__ import main, parser
from app.config import Config
from app.scale import distribution
from app.tabs.keras_tensorboard import profiled_calls

ARGS = ["--data", str(SLICE), "--batch-size", "64"]


@pytest.mark.parametrize("tf_config, args, words", [
    ("{not json", [], ["TF_CONFIG"]),
    ('{"cluster": {"worker": ["a:1", "b:2"]}}', ["--run-name", "x"], ["TF_CONFIG", "task"]),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}', [], ["--run-name"]),
    ("", ["--strategy", "multi-worker"], ["--strategy multi-worker", "TF_CONFIG"]),
])
def test_a_cluster_that_cannot_work_is_refused_in_one_line(tmp_path, tf_config, args, words):
    result = run_main(main, *ARGS, *args, cwd=tmp_path, env={"TF_CONFIG": tf_config})
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and all(w in line for w in words), line
    assert not (tmp_path / "logs").exists()


def test_the_tfjob_gives_every_replica_a_command_the_trainer_accepts(monkeypatch):
    """deploy/kubernetes: each replica's args, with the TF_CONFIG the operator writes for it."""
    job = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "base" / "tfjob.yaml").read_text())
    specs = job["spec"]["tfReplicaSpecs"]
    cluster = {kind.lower(): [f"{job['metadata']['name']}-{kind.lower()}-{i}:2222"
                              for i in range(spec.get("replicas", 1))] for kind, spec in specs.items()}
    for kind, spec in specs.items():
        [container] = [c for c in spec["template"]["spec"]["containers"] if c["name"] == "tensorflow"]
        task = {"type": kind.lower(), "index": 0}
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        config = Config(**vars(parser().parse_args(container["args"]))).validate()
        distribution.check(config)
        assert (config.strategy, config.resume, config.run_name) == ("auto", "auto", job["metadata"]["name"])


def test_profile_batches_name_steps_also_with_several_steps_per_call():
    assert profiled_calls(None, 20) == 0
    assert profiled_calls((2, 4), 1) == (2, 4)
    assert profiled_calls((2, 4), 20) == (1, 1)  # all three in the first call
    assert profiled_calls((21, 45), 20) == (2, 3)


def test_the_gpu_plan_names_how_many_gpus_are_visible_and_leaves_their_use_to_the_strategy():
    from app.scale import devices

    one = devices.gpu_plan("NVIDIA A100", (8, 0))
    two = devices.gpu_plan("NVIDIA A100", (8, 0), count=2)
    assert one.description == "training on GPU NVIDIA A100 (compute capability 8.0, mixed_float16, XLA)"
    assert two.description == ("training on GPU NVIDIA A100 (2 visible, compute capability 8.0, "
                               "mixed_float16, XLA)")
    assert (two.policy, two.jit_compile, two.steps_per_execution) == ("mixed_float16", True, 20)
    assert devices.gpu_plan("Tesla P100", (6, 0)).policy == "float32"  # no tensor cores
