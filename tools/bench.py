"""python -m tools.bench: the plain original configuration and the project's, side by side.

The variants train on the same data, one after the other, each in a process of its own (so that
each one's peak memory and start-up are its own):
  reference           the original description, as written: numpy arrays straight into fit,
                      batch 32, one-hot labels, adam, validation on the test set every epoch,
                      TensorBoard(histogram_freq=1); the same CNN, in float32
  project             python -m app with its defaults, every TensorBoard feature on
  project-no-logging  the same with no TensorBoard writing at all, to price the logging
  project-float32, project-float32-no-logging
                      the same two in float32: what a CPU without native bfloat16 gets; run by
                      default where this CPU has it (then `project` trains in bfloat16)
Per variant: images per second over fit (validation included, as both do it), the whole
process's wall time (import, data, fit, test, export: what the user waits for), the time from
the command to the first training step, test accuracy, peak memory, and the time to reach the
reference's final test accuracy (the first epoch whose validation accuracy reaches it), which is
how MLPerf and DAWNBench compare training speed.

The default data is the full-size Fashion-MNIST of Debian's dataset-fashion-mnist package: 60,000
training and 10,000 test images in MNIST's format (`make bench` installs it when run as root).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app import data
from app.config import Config, ConfigError
from app.scale import hardware
from tools.common import FASHION_MNIST, add_inputs, checked_inputs, overrides

VARIANTS = ("reference", "project", "project-no-logging", "project-float32", "project-float32-no-logging")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n\n")[0])
    add_inputs(p)
    p.add_argument("--epochs", type=int, default=10, help="epochs per variant (default: 10)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run every variant N times and report medians (default: 1)")
    p.add_argument("--out", default="artifacts/bench.json", help="the results as JSON (default: %(default)s)")
    p.add_argument("--variant", choices=VARIANTS, action="append",
                   help="only these variants (repeatable; default: the first three, and the float32 pair "
                        "where this CPU has native bfloat16)")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)  # one measurement, in its own process
    p.add_argument("--started", type=float, help=argparse.SUPPRESS)  # when the parent started the child
    return p


def default_variants(overrides: dict) -> list[str]:
    variants = list(VARIANTS[:3])
    if hardware.native_bfloat16() and "precision" not in overrides:  # `project` trains in bfloat16 here
        variants += VARIANTS[3:]
    return variants


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.epochs < 1 or args.repeat < 1:
        print("error: --epochs and --repeat must be at least 1", file=sys.stderr)
        return 2
    try:
        digits, _ = checked_inputs(args)  # refuse bad data and settings now, not in the first child
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.child:
        print(json.dumps(_measure(args.child, args.data, args.epochs, overrides(args), args.started)))
        return 0

    source = " (Debian's dataset-fashion-mnist, the default)" if Path(args.data) == FASHION_MNIST else ""
    print(f"data: {args.data}{source}: {len(digits.x_train):,} training and {len(digits.x_test):,} test "
          f"images; CPU: {hardware.description()}", file=sys.stderr, flush=True)
    variants = args.variant or default_variants(overrides(args))
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for repeat in range(args.repeat):
        # Every other repeat runs the variants in reverse order: the machine's speed drifts (the
        # same run took from 201 to 251 s here), and a fixed order would favour whichever runs later.
        for variant in variants if repeat % 2 == 0 else variants[::-1]:
            print(f"[{repeat + 1}/{args.repeat}] {variant} ...", file=sys.stderr, flush=True)
            results[variant].append(_run_child(variant, args, argv or sys.argv[1:]))
    report = _summarize(results, args, len(digits.x_train), len(digits.x_test))
    report["cli_seconds"] = _cli_latency()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(_table(report))
    print(f"(written to {args.out})")
    return 0


def _cli_latency() -> dict[str, float]:
    """Median wall seconds of `python -m app --help` and of a refused flag, over five runs each."""
    latency = {}
    for name, args in [("--help", ["--help"]), ("bad input", ["--epochs", "-1"])]:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "app", *args], capture_output=True)
            times.append(time.perf_counter() - started)
        latency[name] = round(statistics.median(times), 3)
    return latency


def _run_child(variant: str, args: argparse.Namespace, argv: list[str]) -> dict:
    started, wall_started = time.time(), time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-m", "tools.bench", *argv, "--data", args.data, "--child", variant,
         "--started", repr(started)],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if child.returncode != 0:
        raise SystemExit(f"error: the {variant} run failed:\n{child.stderr[-3000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = round(time.perf_counter() - wall_started, 2)
    return result


def _clock(started: float):
    """A callback noting, in seconds since the command started, the first step and each epoch's end
    with its validation accuracy."""
    import keras

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.first_step: float | None = None
            self.epochs: list[tuple[float, float]] = []

        def on_train_batch_end(self, batch, logs=None):
            if self.first_step is None:
                self.first_step = round(time.time() - started, 2)

        def on_epoch_end(self, epoch, logs=None):
            accuracy = float((logs or {}).get("val_accuracy", "nan"))
            self.epochs.append((round(time.time() - started, 2), accuracy))

    return Clock()


def _measure(variant: str, data_path: str, epochs: int, overrides: dict, started: float | None) -> dict:
    digits = data.load("mnist", data_path)
    clock = _clock(started or time.time())
    precision = "float32" if "float32" in variant else overrides.get("precision", "auto")
    with tempfile.TemporaryDirectory() as log_dir:
        if variant == "reference":
            result = _reference(digits, epochs, log_dir, clock)
            precision = "float32"  # Keras' default
        else:
            settings = Config(epochs=epochs, data=data_path, log_dir=log_dir,
                              summaries=not variant.endswith("no-logging"),
                              **{**overrides, "precision": precision})
            result = _project(digits, settings.validate(), clock)
    from app.scale import devices

    plan = devices.plan(precision)
    result.update(
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        device=plan.description, precision=plan.policy,
        images_per_second=round(len(digits.x_train) * epochs / result["fit_seconds"], 1),
        first_step_seconds=clock.first_step, epochs_clock=clock.epochs)
    return result


def _reference(digits: data.Images, epochs: int, log_dir: str, clock) -> dict:
    """The original script's training, line for line, but for reading the data from disk."""
    import keras

    from app.model import build_model

    x_train = digits.x_train.reshape(-1, 28, 28, 1).astype("float32") / 255.0
    x_test = digits.x_test.reshape(-1, 28, 28, 1).astype("float32") / 255.0
    y_train = keras.utils.to_categorical(digits.y_train, 10)
    y_test = keras.utils.to_categorical(digits.y_test, 10)
    keras.utils.set_random_seed(42)
    model = build_model()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    tensorboard = keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=1)
    started = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, validation_data=(x_test, y_test),
              callbacks=[tensorboard, clock], verbose=0)
    fit_seconds = time.perf_counter() - started
    test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    return {"fit_seconds": round(fit_seconds, 2), "test_accuracy": float(test_accuracy),
            "test_loss": float(test_loss)}


def _project(digits: data.Images, settings: Config, clock) -> dict:
    import contextlib

    from app.train import train

    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the result line
        metrics = train(settings, digits, extra_callbacks=[clock])
    return {"fit_seconds": metrics["fit_seconds"], "test_accuracy": metrics["test_accuracy"],
            "test_loss": metrics["test_loss"]}


def _to_target(run: dict, target: float) -> tuple[int, float] | None:
    """(epoch, seconds since the command) of the first epoch whose validation accuracy reaches
    `target`, or None if none does."""
    for epoch, (seconds, accuracy) in enumerate(run["epochs_clock"], start=1):
        if accuracy >= target:
            return epoch, seconds
    return None


def _summarize(results: dict[str, list[dict]], args, train_images: int, test_images: int) -> dict:
    keys = ("images_per_second", "fit_seconds", "wall_seconds", "first_step_seconds", "test_accuracy",
            "peak_rss_mb")
    median = {variant: {key: statistics.median(r[key] for r in runs) for key in keys}
              for variant, runs in results.items()}
    report = {"data": args.data, "train_images": train_images, "test_images": test_images,
              "epochs": args.epochs, "repeat": args.repeat, "cpu": hardware.description(),
              "project_settings": overrides(args), "median": median, "runs": results}
    for variant, runs in results.items():
        median[variant]["precision"] = runs[0]["precision"]
    if "reference" in median:
        # The time to reach the original's final test accuracy (validation is the test set in both).
        target = median["reference"]["test_accuracy"]
        report["target_accuracy"] = target
        for variant, runs in results.items():
            reached = [r for r in (_to_target(run, target) for run in runs) if r]
            median[variant]["to_target"] = None if len(reached) < len(runs) else (
                statistics.median(e for e, _ in reached), statistics.median(s for _, s in reached))
    ratios = {}
    for project in ("project", "project-float32"):
        if {"reference", project} <= results.keys():
            ratios[project] = {
                "wall": _paired(results["reference"], results[project], "wall_seconds"),
                "throughput": _paired(results[project], results["reference"], "images_per_second")}
        if {project, f"{project}-no-logging"} <= results.keys():
            ratio = _paired(results[project], results[f"{project}-no-logging"], "wall_seconds", digits=4)
            ratios.setdefault(project, {})["logging_overhead_percent"] = round(100 * (ratio - 1), 1)
    report["ratios"] = ratios
    return report


def _paired(numerators: list[dict], denominators: list[dict], key: str, digits: int = 2) -> float:
    """The median over repeats of one variant's value over another's in the same repeat: runs of
    one repeat follow each other, so the pair shares the machine's speed of the moment."""
    return round(statistics.median(a[key] / b[key] for a, b in zip(numerators, denominators, strict=True)),
                 digits)


def _table(report: dict) -> str:
    lines = [f"{report['epochs']} epochs on {report['data']} ({report['train_images']:,} training, "
             f"{report['test_images']:,} test images); medians of {report['repeat']} run(s) each",
             f"CPU: {report['cpu']}",
             f"{'variant':<27}{'precision':>15}{'images/s':>10}{'fit s':>8}{'wall s':>8}{'1st step':>9}"
             f"{'test acc':>9}{'to ref acc':>15}{'peak RSS':>10}"]
    for variant, m in report["median"].items():
        to_target = m.get("to_target")
        reached = f"ep {to_target[0]:g}, {to_target[1]:.0f} s" if to_target else "-"
        lines.append(f"{variant:<27}{m['precision']:>15}{m['images_per_second']:>10,.0f}{m['fit_seconds']:>8.1f}"
                     f"{m['wall_seconds']:>8.1f}{m['first_step_seconds']:>8.1f}s{m['test_accuracy']:>9.2%}"
                     f"{reached:>15}{m['peak_rss_mb']:>7,.0f} MB")
    if "target_accuracy" in report:
        lines.append(f"to ref acc: the first epoch whose validation accuracy reaches the reference's final "
                     f"{report['target_accuracy']:.2%}, and the time from the command")
    for project, r in report["ratios"].items():
        parts = []
        if "wall" in r:
            parts.append(f"whole process {r['wall']:.2f}x, fit throughput {r['throughput']:.2f}x the "
                         "reference")
        if "logging_overhead_percent" in r:
            parts.append(f"logging overhead {r['logging_overhead_percent']:.1f} % of the whole process")
        lines.append(f"{project}: " + "; ".join(parts))
    if "cli_seconds" in report:
        lines.append("answer to " + ", ".join(f"{k}: {v:.2f} s" for k, v in report["cli_seconds"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
