"""python -m tools.pictures_bench: a folder of pictures against the same images as IDX files.

Writes Debian's Fashion-MNIST (60,000 + 10,000 images, its IDX files) out as a folder of PNG files
(train/<class>/..., test/<class>/...), then runs `python -m app` on each, every run a process of
its own:
  pictures, first run   an empty picture cache: every picture decoded, then training
  pictures, later run   the cache filled by the first run: read memory-mapped
  IDX                   the same images from the IDX files, read whole into memory
Per run: the whole process's wall time (what a user waits for), peak resident memory (VmHWM),
and for the first run the decoding's time and pictures per second. Later runs alternate with
the IDX runs (--repeat), and the medians are compared: a later run on pictures should take within
10 % of the IDX run. Then a folder of 64x64 colour pictures (generated, as tests/helpers.py makes
them) is decoded and one epoch profiled op by op by tools.step_profile, to show where the time of
an epoch goes at that size.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from app import data
from app.scale import hardware
from tools.common import FASHION_MNIST, write_pictures

# Run python -m app in this process, then print the peak resident memory: VmHWM, not getrusage,
# whose ru_maxrss a child inherits from its parent.
RUN = ("import sys\nfrom app.__main__ import main\ncode = main(sys.argv[1:])\n"
       "print('VmHWM', next(int(line.split()[1]) for line in open('/proc/self/status') "
       "if line.startswith('VmHWM')))\nsys.exit(code)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.pictures_bench",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(FASHION_MNIST),
                   help=f"MNIST-style IDX files (default: {FASHION_MNIST})")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (default: 3)")
    p.add_argument("--repeat", type=int, default=3, help="later and IDX runs, alternating (default: 3)")
    p.add_argument("--precision", default="auto", help="as python -m app (default: auto)")
    p.add_argument("--colour-pictures", type=int, default=6000,
                   help="64x64 colour pictures for the profile, 0 for none (default: 6000)")
    p.add_argument("--work", help="keep the folders here (default: a temporary folder)")
    p.add_argument("--out", default="artifacts/bench-pictures.json",
                   help="the results (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        images = data.load("fashion_mnist", args.data)
    except data.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-pictures-"))
    pictures = work / "fashion-png"
    if not pictures.is_dir():
        started = time.perf_counter()
        write_png_folder(images, pictures)
        print(f"wrote {len(images.y_train) + len(images.y_test):,} PNG files in "
              f"{time.perf_counter() - started:.0f} s: {pictures}", flush=True)
    flags = ["--epochs", str(args.epochs), "--precision", args.precision]
    cache = work / "cache"
    runs: dict[str, list[dict]] = {"pictures, first run": [], "pictures, later run": [], "IDX": []}
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    runs["pictures, first run"].append(measure(pictures, flags, work, cache))
    for repeat in range(args.repeat):
        order = ["pictures, later run", "IDX"] if repeat % 2 == 0 else ["IDX", "pictures, later run"]
        for name in order:
            source = pictures if name.startswith("pictures") else Path(args.data)
            runs[name].append(measure(source, flags, work, cache))
            print(f"{name}: {runs[name][-1]['wall_seconds']} s, peak {runs[name][-1]['peak_rss_mb']} MB",
                  flush=True)
    first = runs["pictures, first run"][0]
    later, idx = (statistics.median(r["wall_seconds"] for r in runs[name])
                  for name in ("pictures, later run", "IDX"))
    count = len(images.y_train) + len(images.y_test)
    report = {"cpu": hardware.description(),
              "data": f"{args.data}: Fashion-MNIST, as IDX and as {count:,} PNG files",
              "epochs": args.epochs, "precision": args.precision, "runs": runs, "pictures": count,
              "decode_seconds": first["decode_seconds"],
              "decode_pictures_per_second": round(count / first["decode_seconds"]),
              "later_over_idx": round(later / idx, 3)}
    if args.colour_pictures:
        report["profile_64x64"] = profile_colour(work, args.colour_pictures, args.precision, cache)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    return 0


def write_png_folder(images: data.Images, root: Path) -> None:
    from PIL import Image

    for part, x, y in (("train", images.x_train, images.y_train), ("test", images.x_test, images.y_test)):
        for name in images.class_names:
            (root / part / name.replace("/", "-")).mkdir(parents=True)
        for i, (pixels, label) in enumerate(zip(np.asarray(x), np.asarray(y), strict=True)):
            name = images.class_names[label].replace("/", "-")
            Image.fromarray(pixels[..., 0]).save(root / part / name / f"{i:05d}.png")


def measure(source: Path, flags: list[str], work: Path, cache: Path) -> dict:
    with tempfile.TemporaryDirectory(dir=work) as logs:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", RUN, "--data", str(source), *flags, "--log-dir", logs],
                              capture_output=True, text=True, env={**_env(), "MNIST_TB_CACHE": str(cache)},
                              timeout=7200)
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"error: python -m app --data {source} failed:\n{done.stderr[-3000:]}")
    decoded = re.search(r"^decoded [\d,]+ pictures of .* in ([\d.]+) s", done.stdout, re.MULTILINE)
    accuracy = re.search(r"test accuracy ([\d.]+)%", done.stdout)
    peak_kb = int(done.stdout.split("VmHWM")[-1])
    return {"wall_seconds": round(wall, 1), "peak_rss_mb": round(peak_kb / 1024),
            "decode_seconds": float(decoded.group(1)) if decoded else None,
            "test_accuracy": float(accuracy.group(1)) / 100 if accuracy else None}


def profile_colour(work: Path, count: int, precision: str, cache: Path) -> dict:
    """One epoch on `count` 64x64 colour pictures, op by op (tools.step_profile)."""
    folder = work / "colour-64"
    if not folder.is_dir():
        colours = {f"class {i}": tuple(int(c) for c in np.random.default_rng(i).integers(30, 230, 3))
                   for i in range(10)}
        write_pictures(folder, colours, per_class=count // 10, sizes=((64, 64),), formats=("png",))
    out = work / "profile-64.json"
    done = subprocess.run([sys.executable, "-m", "tools.step_profile", "--data", str(folder), "--precision",
                           precision, "--out", str(out)], capture_output=True, text=True,
                          env={**_env(), "MNIST_TB_CACHE": str(cache)}, timeout=7200)
    if done.returncode != 0:
        raise SystemExit(f"error: the profile of {folder} failed:\n{done.stderr[-3000:]}")
    print(done.stdout, flush=True)
    return json.loads(out.read_text())


def _env() -> dict:
    import os

    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def table(report: dict) -> str:
    lines = [f"{report['cpu']}; {report['data']}; {report['epochs']} epochs, "
             f"--precision {report['precision']}",
             "", "| run | wall s (median) | each | peak MB | test accuracy |",
             "| --- | ---: | --- | ---: | ---: |"]
    for name, runs in report["runs"].items():
        walls = [r["wall_seconds"] for r in runs]
        lines.append(f"| {name} | {statistics.median(walls):.1f} | {', '.join(map(str, walls))} | "
                     f"{max(r['peak_rss_mb'] for r in runs)} | {runs[0]['test_accuracy']:.4f} |")
    lines.append(f"\nfirst run: decoded {report['pictures']:,} PNG files in {report['decode_seconds']} s "
                 f"({report['decode_pictures_per_second']:,} pictures/s); later run / IDX run: "
                 f"{report['later_over_idx']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
