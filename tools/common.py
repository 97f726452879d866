"""What the benchmarks share: their default data, the project settings they take, a free port."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

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
