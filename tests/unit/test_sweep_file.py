"""The sweep file and the sweep's flags: every mistake is one line and exit 2, with nothing written."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import ROOT, SLICE, run_main

from app.config import Config
from app.sweep import spec
from app.sweep.__main__ import main

GOOD = """\
name: s
trials: 2
parameters:
  learning_rate: {low: 0.001, high: 0.01, log: true}
  batch_size: {choices: [32, 64]}
fixed:
  epochs: 1
"""


def sweep_cli(*args: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_main(main, *args, cwd=cwd, env=env)


def refused(tmp_path, text: str, *flags: str) -> str:
    (tmp_path / "s.yaml").write_text(text)
    result = sweep_cli("s.yaml", *flags, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == "" and not (tmp_path / "logs").exists()
    return lines[0]


@pytest.mark.parametrize("text, flags, says", [
    (GOOD.replace("batch_size:", "no_such:"), (), "parameters.no_such: no such setting; sweepable: epochs"),
    (GOOD.replace("batch_size:", "batch_log_every:"), (), "does not change what is learned"),
    (GOOD.replace("[32, 64]", "[32, 6.5]"), (), "--batch-size takes a whole number (got 6.5)"),
    (GOOD.replace("[32, 64]", "[]"), (), "choices must be a non-empty list"),
    (GOOD.replace("[32, 64]", "[32, 32]"), (), "choices repeat a value"),
    (GOOD.replace("[32, 64]", "[32, 0]"), (), "--batch-size must be a positive whole number (got 0)"),
    (GOOD.replace("high: 0.01", "high: 0.001"), (), "the range is empty"),
    (GOOD.replace("high: 0.01", "high: 0.0001"), (), "the range is inverted"),
    (GOOD.replace("low: 0.001", "low: 0"), (), "--learning-rate must be a positive number (got 0.0)"),
    (GOOD.replace("learning_rate: {low: 0.001, high: 0.01, log: true}", "seed: {low: 0, high: 9, log: true}"),
     (), "a log range must lie above 0"),
    (GOOD.replace("low: 0.001", "low: fast"), (), "--learning-rate takes a number (got 'fast')"),
    (GOOD.replace("trials: 2", "trials: 0"), (), "trials must be a whole number of at least 1 (got 0)"),
    (GOOD, ("--trials", "0"), "--trials must be a whole number of at least 1 (got 0)"),
    (GOOD, ("--learning-rate", "0.1"), "--learning-rate is a parameter of this sweep, so a flag cannot"),
    (GOOD.replace("epochs: 1", "epochs: 0"), (), "--epochs must be a positive whole number (got 0)"),
    (GOOD.replace("epochs: 1", "run_name: x"), (), "the sweep names and resumes each trial's run itself"),
    (GOOD.replace("epochs: 1", "learning_rate: 0.1"), (), "learning_rate is both a parameter and fixed"),
    (GOOD + "objective: test_accuracy\n", (), "objective metric must be one of val_accuracy"),
    (GOOD + "sampler: grid\n", (), "sampler grid needs choices for every parameter"),
    (GOOD + "pruning: sometimes\n", (),
     "pruning.pruner must be one of median, successive-halving (got 'sometimes')"),
    (GOOD + "epochs: 3\n", (), "unknown key 'epochs'"),
    (GOOD.replace("name: s", "name: ../up"), (), "is not a plain folder name"),
    ("name: [unclosed\n", (), "not valid YAML at line"),
    ("- a\n- b\n", (), "must be a YAML mapping"),
    ("", (), "must be a YAML mapping"),
    (GOOD.replace("parameters:\n", "parameters: {}\nx:\n"), (), "unknown key 'x'"),
    (GOOD + "objective: [val_loss]\n", (), "objective must be a metric name or {metric: M, direction: D}"),
    (GOOD + "objective: {metric: val_loss, goal: low}\n", (), "objective must be a metric name or"),
    (GOOD + "objective: {metric: val_loss, direction: down}\n", (),
     "objective direction must be maximize or minimize (got 'down')"),
    (GOOD + "pruning: {startup_trials: -1}\n", (), "pruning.startup_trials must be a whole number"),
    (GOOD + "pruning: {warmup_epochs: 1.5}\n", (), "pruning.warmup_epochs must be a whole number"),
    (GOOD + "pruning: {patience: 2}\n", (),
     "pruning.patience: the median pruner has no such option; it takes startup_trials, warmup_epochs"),
    (GOOD + "pruning: [median]\n", (), "pruning must be true (the median pruner), false, a pruner's name"),
    (GOOD + "pruning: {pruner: hyperband}\n", (), "pruning.pruner must be one of median, successive-halving"),
    (GOOD + "pruning: {pruner: successive-halving, reduction_factor: 1}\n", (),
     "pruning.reduction_factor must be a whole number of at least 2 (got 1)"),
    (GOOD + "pruning: {pruner: successive-halving, min_epochs: 0}\n", (),
     "pruning.min_epochs must be a whole number of at least 1 (got 0)"),
    (GOOD + "pruning: {pruner: successive-halving, min_epochs: true}\n", (),
     "pruning.min_epochs must be a whole number of at least 1 (got True)"),
    (GOOD + "pruning: {pruner: successive-halving, warmup_epochs: 1}\n", (),
     "pruning.warmup_epochs is an option of the median pruner, not of successive-halving"),
    (GOOD + "pruning: {reduction_factor: 3}\n", (),
     "pruning.reduction_factor is an option of the successive-halving pruner, not of median"),
    (GOOD.replace("fixed:\n  epochs: 1", "fixed: [epochs]"), (), "fixed must map settings to values"),
    (GOOD.replace("epochs: 1", "no_such: 1"), (), "fixed.no_such: no such setting"),
    (GOOD.replace("batch_size: {choices: [32, 64]}", "batch_size: 64"), (),
     "parameters.batch_size: give {low: A, high: B}"),
    (GOOD.replace("{choices: [32, 64]}", "{choices: [32, 64], low: 1}"), (), "choices cannot be combined"),
    (GOOD.replace("batch_size: {choices: [32, 64]}", "lr_schedule: {low: 1, high: 2}"), (),
     "--lr-schedule is not a number, so it takes choices"),
    (GOOD.replace("{choices: [32, 64]}", "{low: 32}"), (), "a range is {low: A, high: B}"),
    (GOOD.replace("{choices: [32, 64]}", "{low: 32, high: 64, step: 8}"), (), "a range is {low: A, high: B}"),
    (GOOD.replace("log: true", "log: 1"), (), "parameters.learning_rate.log must be true or false (got 1)"),
    (GOOD.replace("high: 0.01", "high: .inf"), (), "--learning-rate must be finite (got inf)"),
    (GOOD + "sampler: grid\n", ("--trials", "3"), "sampler grid needs choices"),
    (GOOD.replace("learning_rate: {low: 0.001, high: 0.01, log: true}", "seed: {choices: [1, 2]}")
     + "sampler: grid\n", ("--trials", "5"), "the grid has 4 points, so --trials can be at most 4 (got 5)"),
])
def test_a_mistake_is_one_line_and_exit_2_with_nothing_written(tmp_path, text, flags, says):
    assert says in refused(tmp_path, text, *flags)


@pytest.mark.parametrize("text, flags, says", [
    (GOOD + "storage: postgresql://sweeps:hunter2@db/sweeps\n", (), "storage: the URL holds a password"),
    (GOOD, ("--storage", "postgresql://sweeps:hunter2@db/sweeps"), "--storage: the URL holds a password"),
    (GOOD, ("--storage", "postgresql://sweeps@db/sweeps?password=hunter2"), "the URL holds a password"),
    (GOOD + "storage: sqlite:///hunter2.db\n", (), "storage: sqlite:// is not supported; give postgresql://"),
    (GOOD, ("--storage", "mysql://sweeps@db/sweeps"), "--storage: mysql:// is not supported"),
    (GOOD, ("--storage", "db.example.org"), "not supported; give postgresql://USER@HOST[:PORT]/DATABASE"),
    (GOOD, ("--storage", "postgresql://sweeps@db:54x/sweeps"), "--storage: not a valid URL"),
    (GOOD, ("--storage", "postgresql://sweeps@db"), "--storage: name the database"),
    (GOOD + "storage: [postgresql]\n", (), "storage must be a postgresql://USER@HOST[:PORT]/DATABASE URL"),
    (GOOD + "heartbeat: {interval: 5}\n", (), "heartbeat applies to a PostgreSQL storage only"),
    (GOOD + "storage: postgresql://s@db/s\nheartbeat: {interval: 0}\n", (),
     "heartbeat.interval must be a whole number of seconds, at least 1 (got 0)"),
    (GOOD + "storage: postgresql://s@db/s\nheartbeat: {interval: 10, grace_period: 10}\n", (),
     "heartbeat.grace_period (10 s) must be longer than its interval (10 s)"),
    (GOOD + "storage: postgresql://s@db/s\nheartbeat: {every: 10}\n", (),
     "heartbeat must be {interval: SECONDS, grace_period: SECONDS}"),
])
def test_a_bad_storage_is_one_line_and_exit_2_and_a_password_is_never_repeated(tmp_path, text, flags, says):
    line = refused(tmp_path, text, *flags)
    assert says in line and "hunter2" not in line
    if "password" in says:
        assert "PGPASSWORD, a PGPASSFILE (libpq's own), or a file named by SWEEP_DB_PASSWORD_FILE" in line


def test_the_storage_flag_and_its_variable_win_over_the_file(tmp_path, monkeypatch):
    (tmp_path / "s.yaml").write_text(GOOD + "storage: postgresql://file@db/sweeps\n"
                                     "heartbeat: {interval: 2, grace_period: 9}\n")
    sweep = spec.load(str(tmp_path / "s.yaml"), {})
    assert (sweep.storage, sweep.heartbeat) == ("postgresql://file@db/sweeps", spec.Heartbeat(2, 9))
    assert spec.load(str(tmp_path / "s.yaml"), {}, storage="postgresql://flag@db/x").storage == (
        "postgresql://flag@db/x")
    (tmp_path / "s.yaml").write_text(GOOD)
    assert spec.load(str(tmp_path / "s.yaml"), {}).storage is None  # the journal file
    from app.sweep.__main__ import parser

    monkeypatch.setenv("SWEEP_STORAGE", "postgresql://env@db/x")
    assert parser().parse_args(["s.yaml"]).storage == "postgresql://env@db/x"
    assert parser().parse_args(["s.yaml", "--storage", "postgresql://flag@db/x"]).storage == (
        "postgresql://flag@db/x")


def test_an_unreadable_password_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "s.yaml").write_text(GOOD)
    result = sweep_cli("s.yaml", "--storage", "postgresql://sweeps@127.0.0.1:9/sweeps", cwd=tmp_path,
                       env={"SWEEP_DB_PASSWORD_FILE": str(tmp_path / "missing")})
    assert result.returncode == 2 and result.stdout == "", result.stderr
    missing = tmp_path / "missing"
    assert result.stderr.splitlines() == [f"error: SWEEP_DB_PASSWORD_FILE={missing}: cannot read it (No such "
                                          "file or directory); it should hold the database's password alone"]
    assert not (tmp_path / "logs").exists()


def test_a_missing_file_and_bad_flags_are_refused(tmp_path):
    result = sweep_cli("nowhere.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "nowhere.yaml: cannot read it" in result.stderr
    (tmp_path / "s.yaml").write_text(GOOD)
    result = sweep_cli("s.yaml", "--run-name", "x", cwd=tmp_path)
    assert result.returncode == 2 and "unrecognized arguments: --run-name" in result.stderr
    assert not (tmp_path / "logs").exists()


def test_the_same_name_with_another_space_is_refused_and_nothing_changes(tmp_path):
    (tmp_path / "s.yaml").write_text(GOOD)
    started = spec.load(str(tmp_path / "s.yaml"), {})
    folder = tmp_path / "logs" / "sweeps" / "s"
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"space": started.space()}))
    before = sorted(p.name for p in (tmp_path / "logs").rglob("*"))
    (tmp_path / "s.yaml").write_text(GOOD.replace("[32, 64]", "[32, 128]"))
    result = sweep_cli("s.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "sweep 's' in logs/sweeps/s was started with other parameters" in result.stderr
    assert "give the sweep a new name" in result.stderr
    assert sorted(p.name for p in (tmp_path / "logs").rglob("*")) == before


def test_an_unreadable_sweep_json_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "s.yaml").write_text(GOOD)
    folder = tmp_path / "logs" / "sweeps" / "s"
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text("{not json")
    result = sweep_cli("s.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "logs/sweeps/s/sweep.json is unreadable" in result.stderr
    assert "move logs/sweeps/s away to start the sweep afresh" in result.stderr


def test_a_grid_runs_every_point_unless_told_fewer(tmp_path):
    grid = GOOD.replace("learning_rate: {low: 0.001, high: 0.01, log: true}", "seed: {choices: [1, 2, 3]}")
    (tmp_path / "s.yaml").write_text(grid.replace("trials: 2\n", "") + "sampler: grid\n")
    assert spec.load(str(tmp_path / "s.yaml"), {}).trials == 6
    assert spec.load(str(tmp_path / "s.yaml"), {}, trials=4).trials == 4
    (tmp_path / "s.yaml").write_text(GOOD.replace("trials: 2\n", ""))
    assert spec.load(str(tmp_path / "s.yaml"), {}).trials == 10  # not a grid: the default


def test_settings_are_read_with_their_own_types(tmp_path):
    text = GOOD.replace("low: 0.001", "low: 1e-3").replace("epochs: 1", "epochs: 2")
    (tmp_path / "s.yaml").write_text(text)
    sweep = spec.load(str(tmp_path / "s.yaml"), {"epochs": 4, "seed": 3})
    lr, batch = sweep.parameters
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 0.001, 0.01, True)  # 1e-3: YAML 1.1 text
    assert (batch.kind, batch.choices) == ("choice", (32, 64))
    assert sweep.fixed == {"epochs": 4, "seed": 3}  # flags win over the file's fixed:
    assert (sweep.metric, sweep.direction, sweep.sampler) == ("val_accuracy", "maximize", "tpe")
    assert sweep.pruning is None
    config = Config(**sweep.trial_settings({"learning_rate": 0.002, "batch_size": 64}, 7)).validate()
    assert (config.run_name, config.resume, config.sweep, config.trial) == ("s-trial-007", "auto", "s", 7)
    assert (config.epochs, config.seed, config.learning_rate) == (4, 3, 0.002)


@pytest.mark.parametrize("text, pruning", [
    ("pruning: false", None),
    ("pruning: true", spec.Pruning("median", startup_trials=2, warmup_epochs=0)),  # as before names
    ("pruning: {startup_trials: 1, warmup_epochs: 2}", spec.Pruning("median", startup_trials=1,
                                                                    warmup_epochs=2)),
    ("pruning: median", spec.Pruning("median")),
    ("pruning: successive-halving", spec.Pruning("successive-halving", min_epochs=1, reduction_factor=3)),
    ("pruning: {pruner: successive-halving, min_epochs: 2, reduction_factor: 4}",
     spec.Pruning("successive-halving", min_epochs=2, reduction_factor=4)),
])
def test_pruning_names_a_pruner_and_its_options(tmp_path, text, pruning):
    (tmp_path / "s.yaml").write_text(GOOD + text + "\n")
    assert spec.load(str(tmp_path / "s.yaml"), {}).pruning == pruning
    if pruning is not None:  # what the benchmark writes into its sweep files reads back the same
        (tmp_path / "s.yaml").write_text(GOOD + f"pruning: {json.dumps(pruning.describe())}\n")
        assert spec.load(str(tmp_path / "s.yaml"), {}).pruning == pruning


def test_successive_halving_judges_a_trial_after_its_first_epoch():
    """The sweeper reports epoch N as step N - 1; the pruner's rungs count epochs: 1, 3, 9."""
    import optuna

    from app.sweep import study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep = spec.load(str(ROOT / "sweeps" / "default.yaml"), {})
    the_study = optuna.create_study(direction="maximize", pruner=study._pruner(sweep))

    def run(curve: list[float]) -> int:
        """Epochs the trial trains, of len(curve), reporting as runner.ReportEachEpoch does."""
        trial = the_study.ask()
        for epoch, value in enumerate(curve):
            trial.report(value, epoch)
            if epoch + 1 < len(curve) and trial.should_prune():
                the_study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return epoch + 1
        the_study.tell(trial, curve[-1])
        return len(curve)

    ten = [0.5 + i / 100 for i in range(10)]
    assert run(ten) == 10  # the first trial to reach each rung always goes on
    assert run([v - 0.1 for v in ten]) == 1  # behind at epoch 1: stopped there, not at 2
    assert run([0.51, 0.45, 0.4] + [0.4] * 7) == 3  # ahead after epoch 1, behind after 3
    assert run([v + 0.1 for v in ten]) == 10


def test_the_shipped_sweep_is_valid():
    sweep = spec.load(str(ROOT / "sweeps" / "default.yaml"), {})
    assert sweep.name == "default" and {p.name for p in sweep.parameters} == {"learning_rate", "batch_size"}
    assert sweep.pruning == spec.Pruning("successive-halving", min_epochs=1, reduction_factor=3)
    assert sweep.fixed == {"epochs": 10} and sweep.trials == 12


def test_the_benchmark_draws_the_same_trials_every_time_within_the_space():
    from tools import sweep_bench as bench

    sweep = spec.load(str(ROOT / "sweeps" / "default.yaml"), {})
    first, second = bench.draw(sweep, 6), bench.draw(sweep, 6)
    assert first == second and len({t["learning_rate"] for t in first}) == 6
    assert all(0.0005 <= t["learning_rate"] <= 0.02 and t["batch_size"] in (64, 128, 256, 512) for t in first)
    rounds = [{"wall_seconds": s, "pruned": p} for s, p in ((9.0, 1), (7.0, 2), (8.0, 3))]
    assert bench._median(rounds) == {"wall_seconds": 8.0, "pruned": 3, "wall_seconds_each": [9.0, 7.0, 8.0]}


def test_the_benchmark_fails_when_pruning_on_one_sweeper_loses_the_best(tmp_path, monkeypatch, capsys):
    from tools import sweep_bench as bench

    def measured(name, sweep, trials, npz, folder):  # the drawn trials' pruner stops the best, trial 0
        variant = bench.VARIANTS[name]
        best = 1 if variant.pruning and not variant.grid else 0
        return {"variant": name, "sweepers": 1, "pruning": variant.pruning, "grid": variant.grid,
                "threads": "all", "wall_seconds": 4.0 if variant.pruning else 10.0, "complete": 1,
                "pruned": 1, "epochs_trained": 3 if variant.pruning else 4, "best_trial": best,
                "best_val_accuracy": 0.8,
                "best_params": trials[best], "curves": {"0": {"by_epoch": [0.5, 0.8], "value": 0.8},
                                                        "1": {"by_epoch": [0.6, 0.7], "value": 0.7}}}

    monkeypatch.setattr(bench, "measure", measured)
    variants = [f"--variant={v}" for v in ("one sweeper", "one sweeper, pruning", "grid, one sweeper",
                                           "grid, one sweeper, pruning")]
    assert bench.main(["--data", str(SLICE), "--trials", "2", "--orders", "20", *variants,
                       "--out", str(tmp_path / "bench.json")]) == 1
    out, err = capsys.readouterr()
    assert "one sweeper, pruning: 60 % less wall time and 25 % fewer epochs (3 of 4) than one sweeper, " \
           "ANOTHER best trial: 1, not 0" in out
    assert "grid, one sweeper, pruning: 60 % less wall time and 25 % fewer epochs (3 of 4) than grid, one " \
           "sweeper, the same best trial, 0" in out
    assert err.splitlines() == ["error: one sweeper, pruning: the best trial is not the one without "
                                "pruning: the pruner stopped the best trial early on these trials (see the "
                                "replay above)"]
    assert json.loads((tmp_path / "bench.json").read_text())["results"][1]["same_best"] is False


def test_the_benchmarks_grid_is_the_space_as_a_grid_in_a_fixed_order():
    from tools import sweep_bench as bench

    sweep = spec.load(str(ROOT / "sweeps" / "default.yaml"), {})
    # The middles of the range's thirds on its log scale, 2 digits; every choice.
    assert bench.grid_space(sweep) == {"learning_rate": [0.00092, 0.0032, 0.011],
                                       "batch_size": [64, 128, 256, 512]}
    points = bench.grid_points(sweep, 12)
    assert points == bench.grid_points(sweep, 12) and len({tuple(p.values()) for p in points}) == 12
    assert bench.grid_points(sweep, 5) == points[:5]
    assert points != sorted(points, key=lambda p: tuple(p.values()))  # a seeded random order
    assert bench.checks(sweep.pruning, 10) == [1, 3, 9]  # successive halving's rungs, before the last epoch
    assert bench.checks(spec.Pruning(warmup_epochs=1), 10) == [2]


# --- hostile sweep files: each costs little to write and must cost little to refuse ------------------

def _laughs(levels: int) -> str:
    """A "billion laughs": each level an alias list of ten of the one before, 10**levels items in all."""
    text = "name: [&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"
    for level in range(1, levels):
        text += f", &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]"
    return text + "]\n"


def test_yaml_aliases_are_refused_in_one_short_line(tmp_path):
    """233 bytes with nested aliases gave an error of 358 KB, ten times more per level."""
    line = refused(tmp_path, _laughs(5))
    assert len(_laughs(5)) < 300 and len(line) < 300
    assert "anchors and aliases (&name, *name) are not accepted" in line and "line 1" in line


@pytest.mark.parametrize("text", [
    GOOD.replace("name: s", "name: &n s"),  # an anchor alone
    GOOD.replace("epochs: 1", "epochs: 1\n  seed: *e").replace("fixed:", "fixed: &e"),
    "base: &b {epochs: 1}\n" + GOOD.replace("  epochs: 1", "  <<: *b"),  # a merge key
])
def test_every_anchor_alias_or_merge_key_is_refused(tmp_path, text):
    assert "anchors and aliases (&name, *name) are not accepted" in refused(tmp_path, text)


def test_a_sweep_file_over_its_size_cap_is_refused(tmp_path):
    line = refused(tmp_path, GOOD + "# " + "x" * spec.MAX_FILE_BYTES + "\n")
    assert f"larger than {spec.MAX_FILE_BYTES // 1024} KiB" in line and len(line) < 300


def test_yaml_nested_too_deeply_is_refused_in_one_line(tmp_path):
    line = refused(tmp_path, "name: " + "[" * 20000 + "]" * 20000 + "\n")
    assert "nested more than" in line and len(line) < 300


@pytest.mark.parametrize("text", [
    GOOD.replace("name: s", "name: " + "n" * 20000),
    GOOD + f"sampler: {'s' * 20000}\n",
    GOOD + f"{'k' * 1000}: 1\n",  # YAML's longest key
    GOOD.replace("epochs: 1", f"lr_schedule: {'c' * 20000}"),
    GOOD.replace("[32, 64]", f"[{', '.join(['64'] * 5000)}]"),
    GOOD.replace("log: true", f"log: {'t' * 20000}"),
])
def test_long_values_are_shortened_in_the_message(tmp_path, text):
    line = refused(tmp_path, text)
    assert len(line) < 400, line[:500]
    assert "..." in line


@pytest.mark.parametrize("text", [
    GOOD.replace("trials: 2", f"trials: {'9' * 5000}"),  # more digits than Python converts
    GOOD.replace("name: s", "name: 2026-13-45"),  # a date YAML reads, which does not exist
])
def test_values_yaml_cannot_convert_are_refused_in_one_line(tmp_path, text):
    line = refused(tmp_path, text)
    assert "out of range" in line and "quote it" in line and len(line) < 300
