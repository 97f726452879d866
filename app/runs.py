"""Run folders: <log-dir>/fit/<run-name>, one per run, never shared by accident.

A folder is claimed with a single mkdir, which is atomic even on a bind mount shared by several
containers: of two runs started in the same second, one gets 20261126-190000 and the other
20261126-190000-2.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from app.config import ConfigError


def fit_dir(log_dir: str) -> Path:
    return Path(log_dir) / "fit"


def check_writable(log_dir: str) -> None:
    """Fail early, before any training, when runs could not be saved."""
    folder = fit_dir(log_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as e:
        raise ConfigError(f"--log-dir {log_dir}: cannot write to {folder} ({e.strerror}); "
                          "choose a writable folder, or fix its owner or permissions") from None


def claim(log_dir: str, run_name: str | None) -> Path:
    """Create and return a new run folder; a default name gets a suffix if it is taken."""
    folder = fit_dir(log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if run_name is not None:
        try:
            (folder / run_name).mkdir()
        except FileExistsError:
            raise ConfigError(f"run {run_name!r} already exists in {folder}; add --resume to continue it, "
                              "or choose another --run-name") from None
        return folder / run_name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in ["", *(f"-{i}" for i in range(2, 1000))]:
        try:
            (folder / f"{stamp}{suffix}").mkdir()
            return folder / f"{stamp}{suffix}"
        except FileExistsError:
            continue
    raise ConfigError(f"more than 999 runs started in the second {stamp}; name the run with --run-name")


def continuing(log_dir: str, run_name: str | None, resume: str) -> bool:
    """Whether this start continues a run: --resume (yes), or --resume auto where the run exists."""
    return resume == "yes" or (resume == "auto" and (fit_dir(log_dir) / run_name / "config.json").is_file())


def existing(log_dir: str, run_name: str) -> Path:
    run_dir = fit_dir(log_dir) / run_name
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"--resume: no run {run_name!r} in {fit_dir(log_dir)}; "
                          "check --run-name and --log-dir, or drop --resume to start a new run")
    return run_dir


def write_json(path: Path, obj: object) -> None:
    """Write JSON so that a reader (or a crash) never sees half a file: temp name, then rename."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
