"""python -m tools.sweep_bench: what pruning and parallel sweepers save, on the very same trials.

Draws TRIALS parameter sets once from the sweep file's space (seeded; default: the file's number of
trials), then runs them as a real sweep (python -m app.sweep processes) in each variant, the trials
enqueued in the same order:
  one sweeper                  no pruning: every trial trains all its epochs
  one sweeper, pruning         the sweep file's pruner (the shipped sweep's: successive halving)
  two sweepers, a core share   pruning, two processes at once, SWEEPERS=2 (each 1/2 of the cores)
  two sweepers, all cores      pruning, two processes at once, TensorFlow's own thread pools
  grid, one sweeper            the same space as a grid (each range's 3 middles of thirds, every choice),
                               its points in a seeded random order, as many as TRIALS
  grid, one sweeper, pruning   those grid points with the file's pruner
Per variant: wall time from the first start to the last exit (the median of --repeat rounds, run
in alternating order), trials complete and pruned, epochs trained, the best trial and its validation
accuracy (of the median round); for a pruning variant, the cut of wall time and of epochs against
the same trials without pruning, and whether the best trial is the same. The unpruned run's curves
are also replayed through the pruner in random orders of the same trials (no training): how often the
best survives whatever the order, and the epochs trained.

Exit status 1 when a one-sweeper pruning variant's best trial is not the unpruned run's: there the
trials report in a fixed order and training is deterministic, so that is the pruner losing the answer,
not noise. With two sweepers which trial reaches an epoch first depends on timing: reported only.
The default data is the first 10,000 training images of Debian's Fashion-MNIST (dataset-fashion-mnist)
and its 10,000 test images.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from app import data
from app.config import PRECISIONS, Config, as_flags
from app.scale import hardware
from app.sweep import spec
from tools.common import FASHION_MNIST


class Variant(NamedTuple):
    sweepers: int
    pruning: bool
    share: str | None  # SWEEPERS in their environment
    grid: bool  # the grid points rather than the drawn trials


VARIANTS = {
    "one sweeper": Variant(1, False, None, False),
    "one sweeper, pruning": Variant(1, True, None, False),
    "two sweepers, pruning, a core share each": Variant(2, True, "2", False),
    "two sweepers, pruning, all cores each": Variant(2, True, None, False),
    "grid, one sweeper": Variant(1, False, None, True),
    "grid, one sweeper, pruning": Variant(1, True, None, True),
}
GRID_VALUES = 3  # a range's values in the grid: the middles of its thirds (on a log scale for log: true)


def baseline(name: str) -> str:
    """The variant with the same trials and no pruning, that a pruning variant is measured against."""
    return "grid, one sweeper" if VARIANTS[name].grid else "one sweeper"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.sweep_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("file", nargs="?", default="sweeps/default.yaml",
                   help="the sweep whose space, pruner, trials and epochs the benchmark takes "
                        "(default: %(default)s)")
    p.add_argument("--data", default=str(FASHION_MNIST) if FASHION_MNIST.is_dir() else None,
                   help=f"an .npz or a folder of MNIST IDX files (default: {FASHION_MNIST})")
    p.add_argument("--train-images", type=int, default=10_000,
                   help="the first N training images (default: 10000)")
    p.add_argument("--trials", type=int, help="trials per variant (default: the file's trials)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default: the file's)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="as python -m app (default: auto)")
    p.add_argument("--repeat", type=int, default=1, help="rounds, the median wall time reported (default: 1)")
    p.add_argument("--orders", type=int, default=1000,
                   help="random orders of the trials to replay the unpruned curves in (default: 1000)")
    p.add_argument("--variant", choices=VARIANTS, action="append", help="run only these (repeatable)")
    p.add_argument("--out", default="artifacts/bench-sweep.json",
                   help="the results as JSON (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    names = args.variant or list(VARIANTS)
    if args.data is None:
        print(f"error: no data: install Debian's dataset-fashion-mnist ({FASHION_MNIST}) or pass --data PATH",
              file=sys.stderr)
        return 2
    try:
        flags = {"precision": args.precision, **({"epochs": args.epochs} if args.epochs is not None else {})}
        sweep = spec.load(args.file, flags, args.trials)
        if sweep.pruning is None and any(VARIANTS[n].pruning for n in names):
            raise spec.SweepError(f"{args.file} has no pruning, which the pruning variants take from it: "
                                  "give it one (pruning: successive-halving), or pick variants without it")
        digits = data.load("mnist", args.data)
    except (spec.SweepError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trials = {False: draw(sweep, sweep.trials), True: grid_points(sweep, sweep.trials)}
    epochs = Config(**sweep.fixed).epochs
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as work:
        npz = Path(work) / "data.npz"
        np.savez(npz, x_train=digits.x_train[:args.train_images], y_train=digits.y_train[:args.train_images],
                 x_test=digits.x_test, y_test=digits.y_test)
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for repeat in range(args.repeat):
            # Every other round in reverse order, so that a machine slowing down (or warming up)
            # over the benchmark weighs on every variant alike.
            for name in names if repeat % 2 == 0 else names[::-1]:
                folder = Path(work) / f"round{repeat}-variant{names.index(name)}"
                runs[name].append(measure(name, sweep, trials[VARIANTS[name].grid], npz, folder))
                print(row(runs[name][-1]), flush=True)
        results = compared([_median(runs[name]) for name in names])
    replays = {base["variant"]: replay(base, sweep, args.orders) for base in results
               if not base["pruning"] and sweep.pruning is not None
               and any(baseline(r["variant"]) == base["variant"] for r in results if r["pruning"])}
    report = {"cpu": hardware.description(),
              "data": f"{args.data}: first {args.train_images} training images, "
                      f"{len(digits.x_test)} test images",
              "trials": sweep.trials, "epochs": epochs, "pruning": sweep.pruning and sweep.pruning.describe(),
              "precision": args.precision, "repeat": args.repeat, "results": results, "replays": replays,
              "drawn": trials[False], "grid_points": trials[True], "every_round": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    pruner = f", {sweep.pruning.pruner} pruning" if sweep.pruning else ""
    print(f"\n{report['cpu']}; {report['data']}; {sweep.trials} trials of {epochs} epochs{pruner}, "
          f"--precision {args.precision}, median of {args.repeat}\n\n" + table(results))
    for line in findings(results, replays):
        print(line)
    lost = [r["variant"] for r in results if r.get("same_best") is False and r["sweepers"] == 1]
    for name in lost:
        print(f"error: {name}: the best trial is not the one without pruning: the pruner stopped the best "
              "trial early on these trials (see the replay above)", file=sys.stderr)
    return 1 if lost else 0


def draw(sweep: spec.Sweep, count: int) -> list[dict]:
    """`count` parameter sets from the sweep's space, the same ones every time (seeded)."""
    import optuna

    from app.sweep.study import suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(count):
        trial = study.ask()
        drawn.append(suggest(trial, sweep))
        study.tell(trial, 0.0)
    return drawn


def grid_space(sweep: spec.Sweep) -> dict[str, list]:
    """The sweep's space as a grid: every choice, and GRID_VALUES values of each range (2 digits)."""
    space = {}
    for p in sweep.parameters:
        if p.kind == "choice":
            space[p.name] = list(p.choices)
            continue
        low, high = (math.log(p.low), math.log(p.high)) if p.log else (p.low, p.high)
        values = [low + (high - low) * (i + 0.5) / GRID_VALUES for i in range(GRID_VALUES)]
        values = [math.exp(v) if p.log else v for v in values]
        values = [round(v) if p.kind == "int" else float(f"{v:.2g}") for v in values]
        space[p.name] = list(dict.fromkeys(values))
    return space


def grid_points(sweep: spec.Sweep, count: int) -> list[dict]:
    """The first `count` points of the grid in a seeded random order (Optuna's grid sampler too takes
    its points in a random order, and a sorted one would put all the worst learning rates first)."""
    space = grid_space(sweep)
    points = [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]
    random.Random(0).shuffle(points)
    return points[:count]


def measure(name: str, sweep: spec.Sweep, trials: list[dict], npz: Path, folder: Path) -> dict:
    from app.sweep import study

    variant = VARIANTS[name]
    folder.mkdir(parents=True)
    file = folder / "bench.yaml"
    parameters = ({n: {"choices": values} for n, values in grid_space(sweep).items()} if variant.grid
                  else {p.name: p.describe() for p in sweep.parameters})
    file.write_text(yaml.safe_dump({
        "name": "bench", "trials": len(trials), "sampler": "grid" if variant.grid else sweep.sampler,
        "objective": {"metric": sweep.metric, "direction": sweep.direction},
        "pruning": sweep.pruning.describe() if variant.pruning else False, "parameters": parameters}))
    log_dir = folder / "logs"
    the_study = study.open_study(spec.load(str(file), {"log_dir": str(log_dir)}), str(log_dir))
    for params in trials:
        the_study.enqueue_trial(params)
    env = {k: v for k, v in os.environ.items() if k != "SWEEPERS"}
    env |= {"SWEEPERS": variant.share} if variant.share else {}
    command = [sys.executable, "-m", "app.sweep", str(file), "--data", str(npz), "--log-dir", str(log_dir),
               *as_flags(sweep.fixed)]
    started = time.perf_counter()
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True) for _ in range(variant.sweepers)]
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"error: {name}: a sweeper failed with {process.returncode}:\n{err[-2000:]}")
    wall = time.perf_counter() - started
    report = json.loads((log_dir / "sweeps" / "bench" / "summary.json").read_text())
    finished = {t["number"]: json.loads((Path(t["run"]) / "metrics.json").read_text())
                for t in report["trials"] if (Path(t["run"]) / "metrics.json").is_file()}
    best = report["best"] or {}
    return {"variant": name, "sweepers": variant.sweepers, "pruning": variant.pruning, "grid": variant.grid,
            "threads": "a share" if variant.share else "all", "wall_seconds": round(wall, 1),
            "complete": report["complete"], "pruned": report["pruned"],
            "epochs_trained": sum(m["epochs_completed"] for m in finished.values()),
            "best_trial": best.get("number"), "best_val_accuracy": best.get("value"),
            "best_params": best.get("params"),
            # Each trial's objective after every epoch, and the value it told: what the replay reads.
            "curves": {str(n): {"by_epoch": m["history"][sweep.metric],
                                "value": m["history"][sweep.metric][m["exported_epoch"] - 1]}
                       for n, m in sorted(finished.items())}}


def _median(rounds: list[dict]) -> dict:
    """The round with the median wall time (its counts and accuracy with it), and every wall time."""
    ordered = sorted(rounds, key=lambda r: r["wall_seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "wall_seconds_each": [r["wall_seconds"] for r in rounds]}


def compared(results: list[dict]) -> list[dict]:
    """Each pruning variant with its cut against the same trials without pruning, when that ran."""
    by_name = {r["variant"]: r for r in results}
    for r in results:
        base = by_name.get(baseline(r["variant"]))
        if r["pruning"] and base is not None:
            r.update(baseline=base["variant"],
                     wall_cut_percent=round(100 * (1 - r["wall_seconds"] / base["wall_seconds"]), 1),
                     epochs_cut_percent=round(100 * (1 - r["epochs_trained"] / base["epochs_trained"]), 1),
                     same_best=r["best_trial"] == base["best_trial"])
    return results


def checks(pruning: spec.Pruning, epochs: int) -> list[int]:
    """The epochs after which the pruner first judges a trial (successive halving: every rung)."""
    if pruning.pruner == "median":
        return [pruning.warmup_epochs + 1] if pruning.warmup_epochs + 1 < epochs else []
    rungs = (pruning.min_epochs * pruning.reduction_factor ** k for k in itertools.count())
    return list(itertools.takewhile(lambda e: e < epochs, rungs))


def replay(base: dict, sweep: spec.Sweep, orders: int) -> dict:
    """The unpruned run's curves through the sweep's pruner, as the sweeper reports them, in `orders`
    random orders (seeded): is the best trial kept whatever the order, and how many epochs are trained.
    Exact as long as training is deterministic (a trial learns the same whatever ran before it)."""
    import optuna
    from optuna.trial import TrialState

    from app.sweep.study import _pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    curves = list(base["curves"].values())
    sign = 1 if sweep.direction == "maximize" else -1
    best = max(range(len(curves)), key=lambda i: sign * curves[i]["value"])
    epochs = len(curves[best]["by_epoch"])

    def rank(i: int, epoch: int) -> int:
        mine = sign * curves[i]["by_epoch"][epoch - 1]
        return 1 + sum(sign * c["by_epoch"][epoch - 1] > mine for c in curves if len(c["by_epoch"]) >= epoch)

    rng, kept, trained = random.Random(0), 0, []
    for _ in range(orders):
        study = optuna.create_study(direction=sweep.direction, pruner=_pruner(sweep))
        complete, total = [], 0
        for i in rng.sample(range(len(curves)), len(curves)):
            trial, values = study.ask(), curves[i]["by_epoch"]
            for epoch, value in enumerate(values):
                trial.report(value, epoch)
                total += 1
                if epoch + 1 < len(values) and trial.should_prune():
                    study.tell(trial, state=TrialState.PRUNED)
                    break
            else:
                study.tell(trial, curves[i]["value"])
                complete.append(i)
        kept += max(complete, key=lambda i: sign * curves[i]["value"]) == best
        trained.append(total)
    at = checks(sweep.pruning, epochs)
    return {"best_trial": int(list(base["curves"])[best]), "best_rank_at": {e: rank(best, e) for e in at},
            "trials": len(curves), "orders": orders,
            "best_kept_percent": round(100 * kept / orders, 1),
            "epochs_mean": round(sum(trained) / orders, 1), "epochs_min": min(trained),
            "epochs_max": max(trained)}


def findings(results: list[dict], replays: dict) -> list[str]:
    """The cut of each pruning variant, and why the best trial survives (or not)."""
    lines = [""]
    for r in results:
        if "baseline" not in r:
            continue
        base = next(b for b in results if b["variant"] == r["baseline"])
        shown = ", ".join(f"{k}={_shown(v)}" for k, v in (base["best_params"] or {}).items())
        same = (f"the same best trial, {base['best_trial']} ({shown})" if r["same_best"] else
                f"ANOTHER best trial: {r['best_trial']}, not {base['best_trial']} ({shown})")
        lines.append(f"{r['variant']}: {r['wall_cut_percent']:.0f} % less wall time and "
                     f"{r['epochs_cut_percent']:.0f} % fewer epochs ({r['epochs_trained']} of "
                     f"{base['epochs_trained']}) than {r['baseline']}, {same}")
    for name, p in replays.items():
        ranks = ", ".join(str(v) for v in p["best_rank_at"].values())
        at = f"epoch{'s' * (len(p['best_rank_at']) != 1)} {', '.join(str(e) for e in p['best_rank_at'])}"
        which = "the grid's points" if VARIANTS[name].grid else "the drawn trials"
        lines.append(f"{which}: the best, trial {p['best_trial']}, ranks {ranks} of {p['trials']} after "
                     f"{at} (where the pruner judges); replayed through the pruner in {p['orders']} random "
                     f"orders, it survives in {p['best_kept_percent']:.0f} % of them, {p['epochs_mean']:.0f} "
                     f"epochs trained on average ({p['epochs_min']} to {p['epochs_max']})")
    return lines if len(lines) > 1 else []


def _shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def row(r: dict) -> str:
    best = f"{r['best_val_accuracy']:.4f}" if r["best_val_accuracy"] is not None else "-"
    cut = (f"{r['wall_cut_percent']:.0f} %, {r['epochs_cut_percent']:.0f} %" if "baseline" in r else "-")
    same = {True: "yes", False: "no", None: "-"}[r.get("same_best")]
    return (f"| {r['variant']} | {r['wall_seconds']:.1f} | {r['complete']} + {r['pruned']} | "
            f"{r['epochs_trained']} | {r['best_trial'] if r['best_trial'] is not None else '-'} | {best} | "
            f"{cut} | {same} |")


def table(results: list[dict]) -> str:
    header = ["| variant | wall s | complete + pruned | epochs trained | best trial | best val_accuracy "
              "| cut: wall, epochs | same best |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: |"]
    return "\n".join([*header, *(row(r) for r in results)])


if __name__ == "__main__":
    sys.exit(main())
