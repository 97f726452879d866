"""The benchmarks and profilers of tools/, checked without running them: bad input refused in one
line. Their miniature runs: tests/integration/test_bench.py and others."""

from __future__ import annotations

from helpers import SLICE, run_main


def test_bench_refuses_data_that_is_not_there_in_one_line(tmp_path):
    from tools import bench

    result = run_main(bench.main, "--data", str(tmp_path / "none"), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
    assert str(tmp_path / "none") in result.stderr


def test_the_profile_refuses_bad_settings_in_one_line(tmp_path):
    from tools import step_profile

    result = run_main(step_profile.main, "--data", str(SLICE), "--batch-size", "0", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: --batch-size"), result.stderr
