"""Validation loss and accuracy each epoch, from one prediction pass over the validation set."""

from __future__ import annotations

import keras
import numpy as np

from app import pipeline

_EPSILON = 1e-7  # Keras clips probabilities to [1e-7, 1 - 1e-7] in its cross-entropy


class Validation(keras.callbacks.Callback):
    """One predict pass per epoch gives val_loss, val_accuracy and `probabilities`.

    Keras' own validation (fit's validation_data) would need a second pass to give the Images and
    PR Curves tabs their predictions; this pass serves all of them. It must come first in the
    callback list: it adds val_loss and val_accuracy to the epoch's logs, which the progress bar,
    History and Keras' TensorBoard callback then report as usual.
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
