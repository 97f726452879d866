"""Epoch checkpoints that no crash can leave half-written, and finding the one to resume from.

<run>/checkpoints/epoch-0003/ holds the model after 3 completed epochs (weights and optimizer
state, model.keras) and state.json (the `RunState`: step counter, history, timings). It is
written as a hidden temporary folder, synced, then renamed into place: a rename is atomic, so
a folder with that name is always complete, whenever the process was killed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
from pathlib import Path

import keras

from app import durable

FOLDER = "checkpoints"
_NAME = re.compile(r"epoch-(\d{4,})")


@dataclasses.dataclass
class RunState:
    """What a run has done so far, beyond its weights: saved with every checkpoint."""

    steps: int = 0  # optimizer steps taken
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # metric: per epoch
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)  # wall time, validation included
    # Dropout's random stream: not among the weights, so saved beside them. With it, a resumed
    # run drops the very units an uninterrupted one would, and ends with the same model.
    seed_states: dict[str, list] = dataclasses.field(default_factory=dict)
    # The Keras dtype policy the run trains in (what --precision resolved to when it started):
    # the optimizer state only loads into the same one. None in checkpoints from before it was kept.
    policy: str | None = None
    # The best epoch by --monitor so far (best_epoch.py; 0: none yet), its value, and the epochs since.
    best_epoch: int = 0
    best_value: float | None = None
    since_best: int = 0

    @classmethod
    def from_json(cls, text: str) -> RunState:
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    path: Path
    epochs_done: int
    state: RunState

    def restore(self, model: keras.Model) -> None:
        """Load weights and optimizer state (moments, step counter) into a freshly compiled model.

        Rebuilding the model from code rather than keras.models.load_model() keeps variable paths,
        and so TensorBoard's histogram tags, the same as in the run's first session.
        """
        model.optimizer.build(model.trainable_variables)
        model.load_weights(self.path / "model.keras")
        # In order, not by path: Keras names seed generators uniquely per process (seed_generator,
        # seed_generator_1, ...), so a model built again in the same process, as when a notebook's
        # kernel runs the training cell a second time, has other paths than the one that was saved.
        for variable, values in zip(_seed_states(model), self.state.seed_states.values(), strict=True):
            variable.assign(values)


def latest(run_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint (reads only: every worker of a job may call it)."""
    folder = run_dir / FOLDER
    if not folder.is_dir():
        return None
    done = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name)))
    if not done:
        return None
    epochs_done, path = done[-1]
    return Checkpoint(path, epochs_done, RunState.from_json((path / "state.json").read_text()))


def epochs_saved(run_dir: Path) -> int:
    """The epochs of the run's newest complete checkpoint, 0 before the first."""
    saved = latest(run_dir)
    return saved.epochs_done if saved else 0


def tidy(run_dir: Path) -> None:
    """Remove what an interrupted save left (the previous checkpoint stands); the writer's job."""
    for leftover in (run_dir / FOLDER).glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def save(run_dir: Path, model: keras.Model, epochs_done: int, state: RunState, also=None) -> None:
    """Checkpoint `epochs_done`; `also(folder)` writes more into it before it is complete."""
    folder = run_dir / FOLDER
    folder.mkdir(exist_ok=True)
    final, tmp = folder / f"epoch-{epochs_done:04d}", folder / f".tmp-epoch-{epochs_done:04d}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        model.save(tmp / "model.keras")
        (tmp / "state.json").write_text(state.to_json())
        if also is not None:
            also(tmp)
        durable.sync_tree(tmp)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    durable.sync(folder)
    for old in folder.iterdir():  # only the newest is needed to resume
        if old != final and _NAME.fullmatch(old.name):
            shutil.rmtree(old, ignore_errors=True)


class EveryEpoch(keras.callbacks.Callback):
    """Time each epoch and checkpoint at its end, with `state` brought up to date (train.py says
    where it runs among the callbacks, and why)."""

    def __init__(self, run_dir: Path, state: RunState, also=None):
        super().__init__()
        self.run_dir, self.state, self.also = run_dir, state, also

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            self.state.history.setdefault(name, []).append(float(value))
        self.state.epoch_seconds.append(time.perf_counter() - self._started)
        self.state.steps = int(self.model.optimizer.iterations.numpy())
        self.state.seed_states = {v.path: v.numpy().tolist() for v in _seed_states(self.model)}
        save(self.run_dir, self.model, epoch + 1, self.state, self.also)


# How Keras names a seed generator's state variable. BORROWED: app/borrowed.py checks it.
SEED_STATE_SUFFIX = "seed_generator_state"


def _seed_states(model: keras.Model) -> list:
    return [v for v in model.variables if v.path.endswith(SEED_STATE_SUFFIX)]
