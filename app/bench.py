"""python -m app.bench: the plain original configuration and the project's, side by side.

Three variants train on the same data, one after the other, each in a process of its own (so
that each one's peak memory is its own):
  reference           the original description, as written: numpy arrays straight into fit,
                      batch 32, one-hot labels, adam, validation on the test set every epoch,
                      TensorBoard(histogram_freq=1); the same CNN
  project             python -m app with its defaults, every TensorBoard feature on
  project-no-logging  the same with no TensorBoard writing at all, to price the logging
Images per second count training images over fit time (validation included, as both do it).
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

from app import config, data
from app.config import Config, ConfigError

VARIANTS = ("reference", "project", "project-no-logging")
PROJECT_SETTINGS = ("batch_size", "learning_rate", "lr_schedule", "precision")  # the project variants vary
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED_MNIST) if SHARED_MNIST.is_dir() else None,
                   help="an .npz or a folder of MNIST IDX files (default: ../shared/data/mnist when present)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per variant (default: 10)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run every variant N times and report medians (default: 1)")
    p.add_argument("--out", default="artifacts/bench.json", help="the results as JSON (default: %(default)s)")
    p.add_argument("--variant", choices=VARIANTS, action="append",
                   help="only these variants (repeatable; default: all three)")
    config.add_arguments(p, PROJECT_SETTINGS)  # the project variants' settings, as python -m app has them
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)  # one measurement, in its own process
    return p


def _overrides(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k in PROJECT_SETTINGS}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.data is None:
        print("error: no data: pass --data PATH (../shared/data/mnist is not here)", file=sys.stderr)
        return 2
    if args.epochs < 1 or args.repeat < 1:
        print("error: --epochs and --repeat must be at least 1", file=sys.stderr)
        return 2
    try:
        data.load("mnist", args.data)  # refuse bad data and settings now, not in the first child
        Config(**_overrides(args)).validate()
    except (data.DataError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.child:
        print(json.dumps(_measure(args.child, args.data, args.epochs, _overrides(args))))
        return 0

    variants = args.variant or list(VARIANTS)
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for repeat in range(args.repeat):
        for variant in variants:
            print(f"[{repeat + 1}/{args.repeat}] {variant} ...", file=sys.stderr, flush=True)
            results[variant].append(_run_child(variant, args, argv or sys.argv[1:]))
    report = _summarize(results, args)
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
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-m", "app.bench", *argv, "--data", args.data, "--child", variant],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if child.returncode != 0:
        raise SystemExit(f"error: the {variant} run failed:\n{child.stderr[-3000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = round(time.perf_counter() - started, 2)
    return result


def _measure(variant: str, data_path: str, epochs: int, overrides: dict) -> dict:
    digits = data.load("mnist", data_path)
    with tempfile.TemporaryDirectory() as log_dir:
        if variant == "reference":
            result = _reference(digits, epochs, log_dir)
        else:
            settings = Config(epochs=epochs, data=data_path, log_dir=log_dir, summaries=variant == "project",
                              **overrides)
            result = _project(digits, settings.validate())
    from app import devices

    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    # The reference trains in Keras' default float32; the project variants as configured.
    precision = "float32" if variant == "reference" else overrides.get("precision", "auto")
    result["device"] = devices.plan(precision).description
    result["images_per_second"] = round(len(digits.x_train) * epochs / result["fit_seconds"], 1)
    return result


def _reference(digits: data.Digits, epochs: int, log_dir: str) -> dict:
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
    model.fit(x_train, y_train, epochs=epochs, validation_data=(x_test, y_test), callbacks=[tensorboard],
              verbose=0)
    fit_seconds = time.perf_counter() - started
    test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    return {"fit_seconds": round(fit_seconds, 2), "test_accuracy": float(test_accuracy),
            "test_loss": float(test_loss)}


def _project(digits: data.Digits, settings: Config) -> dict:
    import contextlib

    from app.train import train

    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the result line
        metrics = train(settings, digits)
    return {"fit_seconds": metrics["fit_seconds"], "test_accuracy": metrics["test_accuracy"],
            "test_loss": metrics["test_loss"]}


def _summarize(results: dict[str, list[dict]], args) -> dict:
    keys = ("images_per_second", "fit_seconds", "wall_seconds", "test_accuracy", "peak_rss_mb")
    median = {variant: {key: statistics.median(r[key] for r in runs) for key in keys}
              for variant, runs in results.items()}
    report = {"data": args.data, "epochs": args.epochs, "repeat": args.repeat,
              "project_settings": _overrides(args),
              "device": results.get("project", next(iter(results.values())))[0]["device"],
              "median": median, "runs": results}
    if {"reference", "project"} <= median.keys():
        report["speedup"] = round(median["project"]["images_per_second"]
                                  / median["reference"]["images_per_second"], 2)
    if {"project", "project-no-logging"} <= median.keys():
        with_logs, without = median["project"], median["project-no-logging"]
        report["logging_overhead_percent"] = round(
            100 * (without["images_per_second"] / with_logs["images_per_second"] - 1), 1)
    return report


def _table(report: dict) -> str:
    lines = [f"{report['epochs']} epochs on {report['data']}, {report['device']}; "
             f"medians of {report['repeat']} run(s) each",
             f"{'variant':<20}{'images/s':>10}{'fit s':>9}{'wall s':>9}{'test acc':>10}{'peak RSS':>11}"]
    for variant, m in report["median"].items():
        lines.append(f"{variant:<20}{m['images_per_second']:>10,.0f}{m['fit_seconds']:>9.1f}"
                     f"{m['wall_seconds']:>9.1f}{m['test_accuracy']:>9.2%}{m['peak_rss_mb']:>8,.0f} MB")
    if "speedup" in report:
        lines.append(f"throughput project / reference: {report['speedup']:.2f}x")
    if "cli_seconds" in report:
        lines.append("answer to " + ", ".join(f"{k}: {v:.2f} s" for k, v in report["cli_seconds"].items()))
    if "logging_overhead_percent" in report:
        lines.append("logging overhead (project vs project-no-logging): "
                     f"{report['logging_overhead_percent']:.1f} %")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
