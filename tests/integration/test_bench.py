"""`make bench` and `make bench-sweep` in miniature: tiny variants, to show the benchmarks themselves work."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import ROOT, SLICE, cli_env, this_cpu


def test_bench_measures_every_variant_and_the_time_to_the_reference_accuracy(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "tools.bench", "--data", str(SLICE), "--epochs", "2",
                             "--out", str(out)], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    # The float32 pair runs where this CPU has native bfloat16 (then `project` trains in bfloat16).
    cpu_name, bfloat16 = this_cpu()
    expected = ["reference", "project", "project-no-logging"]
    if bfloat16:
        expected += ["project-float32", "project-float32-no-logging"]
    assert list(report["median"]) == expected
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
    assert report["cpu"].startswith(cpu_name) and report["cpu"] in table  # it names the CPU it measured
    assert f"native bfloat16: {'yes' if bfloat16 else 'no'}" in report["cpu"]
    for row in (*expected, "project: whole process"):
        assert row in table


def test_bench_sweep_in_miniature_runs_the_same_trials_in_every_variant(tmp_path):
    from tools import sweep_bench

    out = tmp_path / "bench-sweep.json"
    variants = ["one sweeper", "two sweepers, pruning, a core share each", "grid, one sweeper",
                "grid, one sweeper, pruning"]
    result = subprocess.run([sys.executable, "-m", "tools.sweep_bench", "--data", str(SLICE), "--trials", "2",
                             "--epochs", "2", "--train-images", "600", "--orders", "50",
                             *(f"--variant={v}" for v in variants), "--out", str(out)],
                            cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["cpu"].startswith(this_cpu()[0]) and report["cpu"] in result.stdout
    assert report["data"] == f"{SLICE}: first 600 training images, 300 test images"
    # The shipped sweep's pruner; its trials drawn once from its space, the grid's points in a fixed order.
    shipped = sweep_bench.spec.load(str(ROOT / "sweeps" / "default.yaml"), {})
    assert report["pruning"] == shipped.pruning.describe() and (report["trials"], report["epochs"]) == (2, 2)
    assert report["drawn"] == sweep_bench.draw(shipped, 2)
    assert report["grid_points"] == sweep_bench.grid_points(shipped, 2)
    one, two, grid, grid_pruned = report["results"]
    assert [r["variant"] for r in report["results"]] == variants
    assert (one["sweepers"], one["pruning"], one["grid"]) == (1, False, False)
    assert (two["sweepers"], two["pruning"], two["threads"]) == (2, True, "a share")
    assert (grid_pruned["sweepers"], grid_pruned["pruning"], grid_pruned["grid"]) == (1, True, True)
    for r in report["results"]:
        assert r["complete"] + r["pruned"] == 2 and r["wall_seconds"] > 0 and r["best_val_accuracy"] > 0.1
        assert r["best_params"] in (report["grid_points"] if r["grid"] else report["drawn"])
        assert r["best_params"] == (report["grid_points"] if r["grid"] else report["drawn"])[r["best_trial"]]
    assert one["epochs_trained"] == grid["epochs_trained"] == 4  # no pruning: every trial all its epochs
    # Each pruning variant against the same trials without pruning: the cut, and whether the best is the same.
    assert (two["baseline"], grid_pruned["baseline"]) == ("one sweeper", "grid, one sweeper")
    for r, base in ((two, one), (grid_pruned, grid)):
        assert r["epochs_cut_percent"] == round(100 * (1 - r["epochs_trained"] / base["epochs_trained"]), 1)
        assert r["wall_cut_percent"] == round(100 * (1 - r["wall_seconds"] / base["wall_seconds"]), 1)
        assert r["same_best"] == (r["best_trial"] == base["best_trial"])
    assert grid_pruned["same_best"]  # one sweeper: else the benchmark fails (exit 1)
    assert "baseline" not in one and "baseline" not in grid
    # The unpruned curves replayed through the pruner in random orders of the same trials.
    assert set(report["replays"]) == {"one sweeper", "grid, one sweeper"}
    for name, base in (("one sweeper", one), ("grid, one sweeper", grid)):
        replay = report["replays"][name]
        assert (replay["best_trial"], replay["trials"], replay["orders"]) == (base["best_trial"], 2, 50)
        assert list(replay["best_rank_at"]) == ["1"] and 0 <= replay["best_kept_percent"] <= 100  # epoch 1
        assert 3 <= replay["epochs_min"] <= replay["epochs_mean"] <= replay["epochs_max"] <= 4
    for variant in variants:
        assert f"| {variant} |" in result.stdout
    out = result.stdout
    assert f"grid, one sweeper, pruning: {grid_pruned['wall_cut_percent']:.0f} % less wall time" in out
    assert "the drawn trials: the best, trial" in out and "the grid's points: the best, trial" in out


def test_bench_pictures_in_miniature_compares_a_picture_folder_with_the_same_images_as_arrays(tmp_path):
    out = tmp_path / "bench-pictures.json"
    work = str(tmp_path / "work")
    command = [sys.executable, "-m", "tools.pictures_bench", "--data", str(SLICE), "--epochs", "1",
               "--repeat", "1", "--colour-pictures", "100", "--work", work, "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["cpu"].startswith(this_cpu()[0]) and report["cpu"] in result.stdout
    assert report["pictures"] == 1500 and report["decode_seconds"] > 0
    runs = report["runs"]
    assert [len(runs[name]) for name in ("pictures, first run", "pictures, later run", "IDX")] == [1, 1, 1]
    assert runs["pictures, first run"][0]["decode_seconds"] is not None
    assert runs["pictures, later run"][0]["decode_seconds"] is None  # the cache, not decoded again
    assert all(0.1 < r[0]["test_accuracy"] <= 1 and r[0]["peak_rss_mb"] > 100 for r in runs.values())
    assert report["profile_64x64"]["train_images"] == 80  # 100 pictures, a fifth held out
    assert "later run / IDX run: " in result.stdout
