"""Scalars tab, within an epoch: training loss and accuracy every N steps, so curves move live."""

from __future__ import annotations

import keras
import tensorflow as tf

from app.tabs.events import BATCH_TAG_PREFIX


class BatchScalars(keras.callbacks.Callback):
    """The values are Keras' running means over the epoch so far, as with its update_freq option
    (which, with Keras 3.15, drops the epoch scalars and histograms, see docs/troubleshooting.md).
    """

    def __init__(self, writer, every: int):
        super().__init__()
        self.writer, self.every = writer, every
        self._last = self._epoch_start = 0

    def on_epoch_begin(self, epoch, logs=None):
        # Read the step counter once an epoch; within it, Keras' batch index gives the step.
        self._epoch_start = self._last = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch_start + batch + 1
        if step // self.every == self._last // self.every or not logs:
            return
        self._last = step
        with self.writer.as_default(step=step):
            for name in ("loss", "accuracy"):
                if name in logs:
                    tf.summary.scalar(BATCH_TAG_PREFIX + name, logs[name])
