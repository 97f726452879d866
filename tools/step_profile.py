"""python -m tools.step_profile: where an epoch of training spends its time, op by op, and how close
the training step comes to what this machine can compute.

It trains three epochs exactly as `python -m app` does (the same pipeline, model, optimizer,
precision and TensorBoard logging), with TensorFlow's profiler tracing the whole second epoch (the
first includes tracing and compiling; the trace is what TensorBoard's Profile tab shows) and the
third running untraced, for its wall time. It prints each op's time per step and share of the op
time, and for the convolutions and matrix products the GFLOP/s they reached; then the epoch's
useful arithmetic over its wall time, against a large matrix product in the same precision on the
same machine, the practical peak.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path

from app import data
from app.config import Config, ConfigError
from app.scale import hardware
from tools.common import add_inputs, checked_inputs

TRACED_EPOCH = 2  # the first one traces and compiles the step
PEAK_MATRIX = 2048  # the side of the matrix product that measures the peak: large enough for it


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.step_profile", description=__doc__.split("\n\n")[0])
    add_inputs(p)
    p.add_argument("--log-dir", help="keep the profiled run here, to open its trace in TensorBoard's Profile "
                                     "tab (default: a temporary folder, removed)")
    p.add_argument("--out", default="artifacts/profile.json",
                   help="the results as JSON (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        digits, settings = checked_inputs(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        log_dir = args.log_dir or stack.enter_context(tempfile.TemporaryDirectory())
        report = profile(digits, Config(data=args.data, log_dir=log_dir, **settings))
    report["data"] = args.data
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"(written to {args.out})")
    return 0


def profile(digits: data.Images, settings: Config) -> dict:
    import keras

    from app.model import build_model
    from app.train import train

    steps = math.ceil(len(digits.x_train) / settings.batch_size)
    settings = dataclasses.replace(settings, epochs=TRACED_EPOCH + 1,
                                   profile_batches=f"{(TRACED_EPOCH - 1) * steps + 1},{TRACED_EPOCH * steps}")
    with contextlib.redirect_stdout(sys.stderr):  # the run's own lines are not the report
        metrics = train(settings.validate(), digits)
    run_dir = max((Path(settings.log_dir) / "fit").iterdir(), key=lambda p: p.stat().st_mtime)
    trace = max(run_dir.glob("**/plugins/profile/*/*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    policy = keras.mixed_precision.global_policy()

    model = build_model(digits.x_train.shape[1:], len(digits.class_names))
    flops = layer_flops(model)
    first = next(iter(flops))
    # Forward, weight gradient and input gradient cost the same; the first layer needs no input gradient.
    train_flops = 3 * sum(flops.values()) - flops[first]
    forward_flops = sum(flops.values())
    untraced_seconds = metrics["epoch_seconds"][-1]
    epoch_flops = len(digits.x_train) * train_flops + len(digits.x_test) * forward_flops
    peak = matmul_peak(policy.compute_dtype)
    return {
        "cpu": hardware.description(), "device": metrics["device"], "precision": policy.name,
        "batch_size": settings.batch_size, "train_images": len(digits.x_train),
        "test_images": len(digits.x_test), "steps_per_epoch": steps,
        "ops": op_table(trace, steps, settings.batch_size, flops, [layer.name for layer in model.layers]),
        "flops_per_image": {"layers_forward": flops, "training": train_flops, "validation": forward_flops},
        "epoch_seconds": untraced_seconds,
        "achieved_gflops": round(epoch_flops / untraced_seconds / 1e9, 1),
        "peak_gflops": peak, "peak_matrix": f"{PEAK_MATRIX}x{PEAK_MATRIX} {policy.compute_dtype}",
    }


def layer_flops(model) -> dict[str, int]:
    """Floating-point operations per image of each convolution and dense layer's forward pass
    (a multiply-add counts two)."""
    import keras

    flops = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, channels_in, _ = layer.kernel.shape
            _, oh, ow, channels_out = layer.output.shape
            flops[layer.name] = 2 * oh * ow * channels_out * kh * kw * channels_in
        elif isinstance(layer, keras.layers.Dense):
            inputs, outputs = layer.kernel.shape
            flops[layer.name] = 2 * inputs * outputs
    return flops


def _role(op_type: str, name: str) -> str:
    if "BackpropFilter" in op_type or name.endswith("MatMul_1"):  # TensorFlow's MatMul gradient: a, then b
        return "weight gradient"
    if "BackpropInput" in op_type or "gradient_tape" in name:
        return "input gradient"
    return "forward"


def op_table(trace: Path, steps: int, batch_size: int, flops: dict[str, int],
             layers: list[str]) -> list[dict]:
    """The traced epoch's ops by self time: ms per step, share of all op time and, for the ops of
    a convolution or dense layer, the GFLOP/s reached."""
    # What TensorBoard's Profile tab calls "TensorFlow Stats", from the converter its plugin uses.
    # BORROWED: a private module of TensorFlow (app/borrowed.py).
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin

    raw, _ = _pywrap_profiler_plugin.xspace_to_tools_data([str(trace)], "framework_op_stats", {})
    stats = json.loads(raw)
    stats = stats[0] if isinstance(stats, list) else stats
    columns = [c["id"] for c in stats["cols"]]
    rows = [dict(zip(columns, [cell.get("v") if cell else None for cell in row["c"]], strict=True))
            for row in stats["rows"]]
    rows = [r for r in rows if r["type"] != "IDLE" and r["total_self_time"] > 0]
    total = sum(r["total_self_time"] for r in rows)
    # Op names hold the layer's name scope, as in "mnist_cnn_1/conv2_1/convolution/Conv2DBackpropFilter".
    in_layer = re.compile(r"/(" + "|".join(map(re.escape, layers)) + r")(?:_\d+)?/")
    ops = []
    for r in sorted(rows, key=lambda r: -r["total_self_time"]):
        ms_per_step = r["total_self_time"] / 1000 / steps
        op = {"type": r["type"], "name": r["operation"], "ms_per_step": round(ms_per_step, 3),
              "share": round(r["total_self_time"] / total, 4)}
        found = in_layer.search(r["operation"])
        if found:
            op["layer"] = found.group(1)
            if op["layer"] in flops and re.search("Conv2D|MatMul", r["type"]):
                op["role"] = _role(r["type"], r["operation"])
                op["gflops"] = round(batch_size * flops[op["layer"]] / (ms_per_step / 1000) / 1e9, 1)
        ops.append(op)
    return ops


def _label(op: dict) -> str:
    if op["type"] == "Dataset":  # "Iterator::Root::...::ParallelMapV2"
        return f"input pipeline {op['name'].split('::')[-1]}"
    short = op.get("role") or op["name"].split("/")[-1]
    return f"{op['layer']} {short}" if "layer" in op else short


def matmul_peak(dtype: str) -> float:
    """GFLOP/s of the best of ten large matrix products in `dtype`: what this machine's math library
    reaches at its best, as a practical peak."""
    import tensorflow as tf

    a = tf.random.uniform([PEAK_MATRIX, PEAK_MATRIX], dtype=tf.float32)
    a = tf.cast(a, dtype)
    product = tf.function(lambda x: tf.reduce_sum(tf.cast(tf.matmul(x, x), tf.float32)))
    product(a).numpy()
    best = math.inf
    for _ in range(10):
        started = time.perf_counter()
        product(a).numpy()
        best = min(best, time.perf_counter() - started)
    return round(2 * PEAK_MATRIX ** 3 / best / 1e9, 1)


def table(report: dict) -> str:
    lines = [f"epoch {TRACED_EPOCH} traced: {report['train_images']:,} training images in "
             f"{report['steps_per_epoch']} steps of {report['batch_size']}, {report['precision']}; "
             f"{report['device']}",
             f"CPU: {report['cpu']}",
             f"{'op (layer, role)':<44}{'type':<42}{'ms/step':>8}{'share':>8}{'GFLOP/s':>9}"]
    shown = [op for op in report["ops"] if op["share"] >= 0.005]
    for op in shown:
        what = _label(op)
        gflops = f"{op['gflops']:>9,.0f}" if "gflops" in op else ""
        lines.append(f"{what[:43]:<44}{op['type'][:41]:<42}{op['ms_per_step']:>8.2f}{op['share']:>8.1%}{gflops}")
    rest = report["ops"][len(shown):]
    lines.append(f"{f'{len(rest)} other ops':<86}{sum(o['ms_per_step'] for o in rest):>8.2f}"
                 f"{sum(o['share'] for o in rest):>8.1%}")
    f = report["flops_per_image"]
    lines += [
        "ms/step: each op's own time per step; ops that run side by side add up to more than the "
        "step's wall time",
        f"arithmetic per image: {f['training'] / 1e6:.2f} MFLOP to train (forward, weight and input "
        f"gradients), {f['validation'] / 1e6:.2f} MFLOP to validate",
        f"epoch {TRACED_EPOCH + 1} (untraced): {report['epoch_seconds']:.1f} s, "
        f"{report['achieved_gflops']:,.0f} GFLOP/s; a {report['peak_matrix']} matrix product reaches "
        f"{report['peak_gflops']:,.0f} GFLOP/s here: the epoch runs at "
        f"{report['achieved_gflops'] / report['peak_gflops']:.0%} of it",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
