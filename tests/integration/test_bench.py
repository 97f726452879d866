"""`make bench` in miniature: one tiny epoch per variant, to show the benchmark itself works."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import ROOT, SLICE, cli_env

from app.scale import hardware
from tools import bench


def test_bench_measures_every_variant_and_the_time_to_the_reference_accuracy(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "tools.bench", "--data", str(SLICE), "--epochs", "2",
                             "--out", str(out)], cwd=ROOT, env=cli_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    # The float32 pair runs where this CPU has native bfloat16 (then `project` trains in bfloat16).
    expected = ["reference", "project", "project-no-logging"]
    if hardware.native_bfloat16():
        expected += ["project-float32", "project-float32-no-logging"]
    assert list(report["median"]) == expected == bench.default_variants({})
    for variant, m in report["median"].items():
        assert m["images_per_second"] > 0 and m["peak_rss_mb"] > 100, variant
        assert 0.1 < m["test_accuracy"] <= 1, variant  # two epochs on 1,200 digits: well above chance
        assert m["wall_seconds"] > m["fit_seconds"] > 0, variant
        assert 0 < m["first_step_seconds"] < m["wall_seconds"], variant
        assert m["precision"] == ("float32" if "float32" in variant or variant == "reference" else
                                  report["runs"]["project"][0]["precision"])
    # The reference reaches its own final accuracy by its last epoch at the latest.
    epoch, seconds = report["median"]["reference"]["to_target"]
    assert 1 <= epoch <= 2 and 0 < seconds < report["median"]["reference"]["wall_seconds"]
    assert set(report["ratios"]["project"]) == {"wall", "throughput", "logging_overhead_percent"}
    assert set(report["cli_seconds"]) == {"--help", "bad input"}
    table = result.stdout
    assert report["cpu"] in table and "native bfloat16" in report["cpu"]  # it names the CPU it measured
    for row in (*expected, "project: whole process"):
        assert row in table
