"""`make bench` in miniature: one tiny epoch per variant, to show the benchmark itself works."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import ROOT, SLICE, cli_env


def test_bench_measures_all_three_variants(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "app.bench", "--data", str(SLICE), "--epochs", "1",
                             "--out", str(out)], cwd=ROOT, env=cli_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert list(report["median"]) == ["reference", "project", "project-no-logging"]
    for variant, m in report["median"].items():
        assert m["images_per_second"] > 0 and m["peak_rss_mb"] > 100, variant
        assert 0.1 < m["test_accuracy"] <= 1, variant  # one epoch on 1,200 digits: well above chance
        assert m["wall_seconds"] > m["fit_seconds"] > 0, variant
    assert report["speedup"] > 0 and "logging_overhead_percent" in report
    assert set(report["cli_seconds"]) == {"--help", "bad input"}
    assert "training on CPU" in report["device"] or "training on GPU" in report["device"]
    table = result.stdout
    assert report["device"] in table.splitlines()[0]  # it says which device it measured
    for row in ("reference", "project", "project-no-logging", "throughput project / reference"):
        assert row in table
