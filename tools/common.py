"""What the benchmarks (and the tests) share: their default data, the project settings they take, a
free port, a folder of generated pictures."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import numpy as np

from app import config, data
from app.config import Config, ConfigError

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # where Debian's dataset-fashion-mnist puts it
PROJECT_SETTINGS = ("batch_size", "learning_rate", "lr_schedule", "precision")  # the project variants vary


def add_inputs(p: argparse.ArgumentParser) -> None:
    """--data and the project settings, as python -m app has them (for tools.bench and tools.step_profile)."""
    p.add_argument("--data", default=str(FASHION_MNIST) if FASHION_MNIST.is_dir() else None,
                   help=f"an .npz or a folder of MNIST IDX files (default: {FASHION_MNIST}, Debian's "
                        "dataset-fashion-mnist: 60,000 + 10,000 images)")
    config.add_arguments(p, PROJECT_SETTINGS)


def checked_inputs(args: argparse.Namespace) -> tuple[data.Images, dict]:
    """The data and the project settings that `args` name; ConfigError, in one line, where they are bad."""
    if args.data is None:
        raise ConfigError(f"no data: install Debian's dataset-fashion-mnist ({FASHION_MNIST}; make bench and "
                          "make profile do it as root) or pass --data PATH")
    try:
        digits = data.load("mnist", args.data)
    except data.DataError as e:
        raise ConfigError(str(e)) from None
    Config(**overrides(args)).validate()
    return digits, overrides(args)


def overrides(args: argparse.Namespace) -> dict:
    """The project settings given on the command line."""
    return {k: v for k, v in vars(args).items() if k in PROJECT_SETTINGS}


def free_port() -> int:
    """A local TCP port free at this moment (the caller retries if another process takes it first)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_pictures(root: Path, classes: dict[str, tuple[int, int, int]], per_class: int = 12,
                   sizes: tuple[tuple[int, int], ...] = ((24, 32), (24, 32), (36, 20)), grey: bool = False,
                   formats: tuple[str, ...] = ("png", "jpg"), seed: int = 0) -> Path:
    """A folder of generated pictures, one subfolder per class (name: its colour), each class a
    colour with noise, so that a CNN tells them apart within an epoch or two; mixed sizes and
    formats, and the litter real folders hold (a README, .DS_Store, .ipynb_checkpoints)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, rgb in classes.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            height, width = sizes[i % len(sizes)]
            shade = np.asarray(rgb) * (0.55 + 0.45 * rng.random((height, width, 1)))
            pixels = np.clip(shade + rng.normal(0, 18, (height, width, 3)), 0, 255).astype(np.uint8)
            picture = Image.fromarray(pixels).convert("L" if grey else "RGB")
            picture.save(folder / f"{name[:3]}-{i:03d}.{formats[i % len(formats)]}")
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "README.md").write_text("my pictures\n")
    (root / ".ipynb_checkpoints").mkdir(exist_ok=True)
    return root


COLOURS = {"Red apple": (210, 40, 30), "green leaf": (40, 170, 50), "sky blue": (50, 90, 220)}
