"""The best epoch, not the last: which epoch's model is exported, and stopping a run that no longer improves.

After every epoch `--monitor` (validation loss by default) is compared with the best so far; the
best epoch's weights are kept, in memory on every worker, and in every checkpoint (best.npz beside
the model), so a run killed and resumed keeps its best epoch and its count of epochs without
improvement. With `--early-stopping PATIENCE` the run stops once that count reaches PATIENCE. Either
way, when training ends the model is set back to the best epoch's weights before it is tested and
exported. (Keras' EarlyStopping restores its best weights only when it stops training itself,
keras-team/keras#12511, and keeps its count in no checkpoint.)
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from app.checkpoints import RunState

BEST_FILE = "best.npz"
LOWER_IS_BETTER = {"val_loss": True, "val_accuracy": False, "loss": True, "accuracy": False}


class BestEpoch(keras.callbacks.Callback):
    """Must run after Validation (which adds val_* to the logs) and before the checkpoint (which saves
    what this records, train.py says where it runs)."""

    def __init__(self, state: RunState, monitor: str, patience: int, weights: list[np.ndarray] | None = None):
        super().__init__()
        self.state, self.monitor, self.patience = state, monitor, patience
        self.weights = weights  # the best epoch's, None before the first epoch
        self.last = 0  # the last epoch this session trained, 1-based

    def on_epoch_end(self, epoch, logs=None):
        self.last = epoch + 1
        value = float((logs or {}).get(self.monitor, math.nan))
        best = self.state.best_value
        if math.isfinite(value) and (best is None or (value < best if LOWER_IS_BETTER[self.monitor]
                                                      else value > best)):
            self.state.best_epoch, self.state.best_value, self.state.since_best = epoch + 1, value, 0
            self.weights = [np.array(w) for w in self.model.get_weights()]
        else:
            self.state.since_best += 1
        if self.patience and self.state.since_best >= self.patience:
            print(f"early stopping after epoch {epoch + 1}: {self.monitor} has not improved for "
                  f"{self.patience} epochs; the best was epoch {self.state.best_epoch} ({self.monitor} "
                  f"{self.state.best_value:.4f})", flush=True)
            self.model.stop_training = True

    def restore(self, model: keras.Model, epochs_done: int) -> int:
        """Set `model` to the best epoch's weights if another epoch ended the run; the epoch exported."""
        if self.weights is not None and self.state.best_epoch != epochs_done:
            model.set_weights(self.weights)
            return self.state.best_epoch
        return epochs_done

    def write(self, folder: Path) -> None:
        """Into a checkpoint being written: the best epoch's weights."""
        if self.weights is not None:
            np.savez(folder / BEST_FILE, *self.weights)


def saved_weights(checkpoint_folder: Path) -> list[np.ndarray] | None:
    """The best epoch's weights a checkpoint holds, or None (a checkpoint of an older version)."""
    path = checkpoint_folder / BEST_FILE
    if not path.is_file():
        return None
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]
