"""Training callbacks that are not about TensorBoard: validation, timing, the NaN guard."""

from __future__ import annotations

import math
import time

import keras
import numpy as np

from app import pipeline

_EPSILON = 1e-7  # Keras clips probabilities to [1e-7, 1 - 1e-7] in its cross-entropy


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite: training diverged."""


class Validation(keras.callbacks.Callback):
    """Validation loss and accuracy each epoch, from one prediction pass over the validation set.

    Keras' own validation (fit's validation_data) would need a second pass to give the
    confusion matrix and PR curves their predictions; this pass serves both. It must come
    first in the callback list: it adds val_loss and val_accuracy to the epoch's logs, which
    the progress bar, History and Keras' TensorBoard callback then report as usual.
    """

    def __init__(self, x_val: np.ndarray, y_val: np.ndarray):
        super().__init__()
        self.batches = pipeline.eval_batches(x_val)
        self.labels = y_val.astype(np.int64)
        self.probabilities: np.ndarray | None = None

    def on_epoch_end(self, epoch, logs=None):
        probs = self.model.predict(self.batches, verbose=0)
        picked = np.clip(probs[np.arange(len(probs)), self.labels], _EPSILON, 1 - _EPSILON)
        logs["val_loss"] = float(-np.log(picked).mean())
        logs["val_accuracy"] = float((probs.argmax(axis=1) == self.labels).mean())
        self.probabilities = probs


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop at once when the loss is NaN or infinite, before a checkpoint could keep it."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            step = int(self.model.optimizer.iterations.numpy())
            raise NonFiniteLoss(f"the loss became {loss} at step {step}: training diverged")


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of each epoch, validation included."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
