"""The run's configuration: one frozen dataclass whose defaults are the documented defaults.

It is saved as config.json in the run folder, and a resumed run reads it back from there, so
a run is always continued with the settings it was started with.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

DATASETS = ("mnist", "fashion_mnist")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# A run name becomes one folder under <log-dir>/fit: no separators, no "..", nothing hidden.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class ConfigError(Exception):
    """A flag has a bad value; the message names the flag and what it accepts."""


@dataclasses.dataclass(frozen=True)
class Config:
    # Training. The CNN, adam and 10 epochs are the original description's; the batch is 8 times
    # the original's 32 for speed, and a larger learning rate decayed to zero (cosine) makes up for
    # the fewer steps: measured with `make bench`, see README.md.
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 0.005
    lr_schedule: str = "cosine"
    seed: int = 42
    precision: str = "auto"  # see devices.py: mixed precision where the hardware gains from it

    # Data: keras.datasets by name, or offline from a file or folder (which wins when given).
    dataset: str = "mnist"
    data: str | None = None

    # Where the run goes: <log_dir>/fit/<run_name>, a timestamp unless named.
    log_dir: str = "logs"
    run_name: str | None = None
    resume: bool = False

    # TensorBoard extras on top of Keras' callback.
    batch_log_every: int = 20  # steps between batch-level scalars: points every second or so
    profile_batches: str = "0"  # "START,END" batches to profile, "0" for none
    summaries: bool = True  # False writes no TensorBoard data at all (the benchmark's baseline)

    def validate(self) -> Config:
        _positive("--epochs", self.epochs)
        _positive("--batch-size", self.batch_size)
        _positive("--batch-log-every", self.batch_log_every)
        if not self.learning_rate > 0 or self.learning_rate == float("inf"):
            raise ConfigError(f"--learning-rate must be a positive number (got {self.learning_rate})")
        if not 0 <= self.seed < 2**31:
            raise ConfigError(f"--seed must be between 0 and {2**31 - 1} (got {self.seed})")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"--lr-schedule must be one of {', '.join(SCHEDULES)} "
                              f"(got {self.lr_schedule!r})")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if self.dataset not in DATASETS:
            raise ConfigError(f"--dataset must be one of {', '.join(DATASETS)} (got {self.dataset!r})")
        if self.run_name is not None and not RUN_NAME.fullmatch(self.run_name):
            raise ConfigError(f"--run-name {self.run_name!r} is not a plain folder name; use letters, "
                              "digits, '.', '_' and '-' (up to 100), starting with a letter or digit")
        if self.resume and self.run_name is None:
            raise ConfigError("--resume needs --run-name NAME: the run to continue "
                              "(its folder under <log-dir>/fit)")
        self.profile_range()
        return self

    def profile_range(self) -> tuple[int, int] | None:
        """`profile_batches` as (first, last) batch, or None when profiling is off."""
        parts = self.profile_batches.split(",")
        try:
            first, last = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (-1, -1)
        except ValueError:
            first, last = -1, -1
        if (first, last) == (0, 0):
            return None
        if not 0 < first <= last:
            raise ConfigError(f"--profile-batches must be START,END with 0 < START <= END, or 0 for off "
                              f"(got {self.profile_batches!r})")
        return first, last

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"


def _positive(flag: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{flag} must be a positive whole number (got {value})")


# Settings that shape the trained model; a resumed run must keep them, or its curves would
# silently mix two different experiments.
_FIXED_ON_RESUME = ("batch_size", "learning_rate", "lr_schedule", "seed", "dataset", "precision")


def resumed(saved_json: str, given: dict[str, Any]) -> Config:
    """The saved config of a run, updated by the flags given explicitly to resume it.

    --epochs may change (train further, or finish sooner); where the data and logs are may
    change (another machine, another mount); what shapes the model may not.
    """
    try:
        saved = json.loads(saved_json)
        saved = Config(**{f.name: saved[f.name] for f in dataclasses.fields(Config) if f.name in saved})
    except (ValueError, TypeError) as e:
        raise ConfigError(f"the run's config.json is unreadable ({e}); start a new run instead") from None
    for name in _FIXED_ON_RESUME:
        if name in given and given[name] != getattr(saved, name):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} {given[name]} differs from the run's own {getattr(saved, name)}; "
                              f"drop {flag} to resume, or start a new run to change it")
    return dataclasses.replace(saved, **given).validate()
