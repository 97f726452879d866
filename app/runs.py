"""Run folders: <log-dir>/fit/<run-name>, one per run, never shared by accident.

A folder is claimed with a single mkdir, which is atomic even on a bind mount shared by several
containers: of two runs started in the same second, one gets 20261126-190000 and the other
20261126-190000-2.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from app import durable
from app.config import Config, ConfigError, resumed

_TAKEN = "run {name!r} already exists in {folder}; add --resume to continue it, or choose another --run-name"


def fit_dir(log_dir: str) -> Path:
    return Path(log_dir) / "fit"


def settled_config(given: dict[str, Any]) -> Config:
    """The config a start trains with: the settings `given` (name: value), checked; or, where it
    continues a run (--resume, or --resume auto and the run exists), the run's own saved config
    updated by them under the resume rules. The CLI, the notebook and the sweeper all start so."""
    config = Config(**given).validate()
    if continuing(config.log_dir, config.run_name, config.resume):
        saved = existing(config.log_dir, config.run_name) / "config.json"
        return resumed(saved.read_text(), given)
    return config


def check_unclaimed(config: Config) -> None:
    """Refuse to start a new run under a name already taken, before anything trains (claim() checks
    again, atomically); a run that is being continued is not new."""
    if config.run_name is None or continuing(config.log_dir, config.run_name, config.resume):
        return
    if (fit_dir(config.log_dir) / config.run_name).exists():
        raise ConfigError(_TAKEN.format(name=config.run_name, folder=fit_dir(config.log_dir)))


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
            raise ConfigError(_TAKEN.format(name=run_name, folder=folder)) from None
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
    """Write JSON so that a reader, a crash or a power cut never sees half a file (app/durable.py)."""
    durable.write_text(path, json.dumps(obj, indent=2) + "\n")
