"""python -m tools.sweep_bench: what pruning and parallel sweepers save, on the very same trials.

Draws TRIALS parameter sets once from the sweep file's space (seeded), then runs them as a real
sweep (python -m app.sweep processes) in each variant, the trials enqueued in the same order:
  one sweeper                  no pruning: every trial trains all its epochs
  one sweeper, pruning         the median pruner of the sweep file's `pruning: true`
  two sweepers, a core share   pruning, two processes at once, SWEEPERS=2 (each 1/2 of the cores)
  two sweepers, all cores      pruning, two processes at once, TensorFlow's own thread pools
Per variant: wall time from the first start to the last exit (the median of --repeat rounds, run
in alternating order), trials complete and pruned, epochs trained, and the best trial's validation
accuracy (of the median round). The default data is the first 10,000 training
images of Debian's Fashion-MNIST (dataset-fashion-mnist) and its 10,000 test images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from app import data
from app.config import PRECISIONS, as_flags
from app.scale import hardware
from app.sweep import spec
from tools.common import FASHION_MNIST

VARIANTS = {  # name: (sweepers, pruning, SWEEPERS in their environment)
    "one sweeper": (1, False, None),
    "one sweeper, pruning": (1, True, None),
    "two sweepers, pruning, a core share each": (2, True, "2"),
    "two sweepers, pruning, all cores each": (2, True, None),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.sweep_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("file", nargs="?", default="sweeps/default.yaml",
                   help="the sweep whose space the trials come from (default: %(default)s)")
    p.add_argument("--data", default=str(FASHION_MNIST) if FASHION_MNIST.is_dir() else None,
                   help=f"an .npz or a folder of MNIST IDX files (default: {FASHION_MNIST})")
    p.add_argument("--train-images", type=int, default=10_000,
                   help="the first N training images (default: 10000)")
    p.add_argument("--trials", type=int, default=8, help="trials per variant (default: 8)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per trial (default: 3)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="as python -m app (default: auto)")
    p.add_argument("--repeat", type=int, default=1, help="rounds, the median wall time reported (default: 1)")
    p.add_argument("--variant", choices=VARIANTS, action="append", help="run only these (repeatable)")
    p.add_argument("--out", default="artifacts/bench-sweep.json",
                   help="the results as JSON (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.data is None:
        print(f"error: no data: install Debian's dataset-fashion-mnist ({FASHION_MNIST}) or pass --data PATH",
              file=sys.stderr)
        return 2
    try:
        sweep = spec.load(args.file, {"epochs": args.epochs, "precision": args.precision}, args.trials)
        digits = data.load("mnist", args.data)
    except (spec.SweepError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trials = draw(sweep, args.trials)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as work:
        npz = Path(work) / "data.npz"
        np.savez(npz, x_train=digits.x_train[:args.train_images], y_train=digits.y_train[:args.train_images],
                 x_test=digits.x_test, y_test=digits.y_test)
        names = args.variant or list(VARIANTS)
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for repeat in range(args.repeat):
            # Every other round in reverse order, so that a machine slowing down (or warming up)
            # over the benchmark weighs on every variant alike.
            for name in names if repeat % 2 == 0 else names[::-1]:
                folder = Path(work) / f"round{repeat}-variant{names.index(name)}"
                runs[name].append(measure(name, sweep, trials, npz, folder, args))
                print(row(runs[name][-1]), flush=True)
        results = [_median(runs[name]) for name in names]
    report = {"cpu": hardware.description(),
              "data": f"{args.data}: first {args.train_images} training images, "
                      f"{len(digits.x_test)} test images",
              "trials": args.trials, "epochs": args.epochs,
              "precision": args.precision, "repeat": args.repeat, "results": results,
              "every_round": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{report['cpu']}; {report['data']}; {args.trials} trials of {args.epochs} epochs, "
          f"--precision {args.precision}, median of {args.repeat}\n\n" + table(results))
    return 0


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


def measure(name: str, sweep: spec.Sweep, trials: list[dict], npz: Path, folder: Path, args) -> dict:
    from app.sweep import study

    sweepers, pruning, share = VARIANTS[name]
    folder.mkdir(parents=True)
    file = folder / "bench.yaml"
    file.write_text(yaml.safe_dump({
        "name": "bench", "trials": len(trials), "objective": sweep.metric, "sampler": sweep.sampler,
        "pruning": pruning, "parameters": {p.name: p.describe() for p in sweep.parameters}}))
    log_dir = folder / "logs"
    the_study = study.open_study(spec.load(str(file), {"log_dir": str(log_dir)}), str(log_dir))
    for params in trials:
        the_study.enqueue_trial(params)
    env = {k: v for k, v in os.environ.items() if k != "SWEEPERS"}
    env |= {"SWEEPERS": share} if share else {}
    command = [sys.executable, "-m", "app.sweep", str(file), "--data", str(npz), "--log-dir", str(log_dir),
               *as_flags(sweep.fixed)]
    started = time.perf_counter()
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True) for _ in range(sweepers)]
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"error: {name}: a sweeper failed with {process.returncode}:\n{err[-2000:]}")
    wall = time.perf_counter() - started
    report = json.loads((log_dir / "sweeps" / "bench" / "summary.json").read_text())
    epochs = sum(json.loads((Path(t["run"]) / "metrics.json").read_text())["epochs_completed"]
                 for t in report["trials"])
    best = report["best"] or {}
    return {"variant": name, "sweepers": sweepers, "pruning": pruning,
            "threads": "a share" if share else "all", "wall_seconds": round(wall, 1),
            "complete": report["complete"], "pruned": report["pruned"], "epochs_trained": epochs,
            "best_val_accuracy": best.get("value"), "best_params": best.get("params")}


def _median(rounds: list[dict]) -> dict:
    """The round with the median wall time (its counts and accuracy with it), and every wall time."""
    ordered = sorted(rounds, key=lambda r: r["wall_seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "wall_seconds_each": [r["wall_seconds"] for r in rounds]}


def row(r: dict) -> str:
    best = f"{r['best_val_accuracy']:.4f}" if r["best_val_accuracy"] is not None else "-"
    return (f"| {r['variant']} | {r['wall_seconds']:.1f} | {r['complete']} + {r['pruned']} | "
            f"{r['epochs_trained']} | {best} |")


def table(results: list[dict]) -> str:
    header = ["| variant | wall s | complete + pruned | epochs trained | best val_accuracy |",
              "| --- | ---: | ---: | ---: | ---: |"]
    return "\n".join([*header, *(row(r) for r in results)])


if __name__ == "__main__":
    sys.exit(main())
