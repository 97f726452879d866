"""Scalars tab, within an epoch: training loss and accuracy every N steps, so curves move live."""

from __future__ import annotations

import keras
import tensorflow as tf

from app.tabs.events import BATCH_TAG_PREFIX


class BatchScalars(keras.callbacks.Callback):
    """The values are Keras' running means over the epoch so far, as with its update_freq option
    (which, with Keras 3.15, drops the epoch scalars and histograms, see docs/troubleshooting.md).

    Keras calls batch hooks once per call of its train function. With several steps per call (20
    on a GPU), a point is written at the end of the call in which a multiple of `every` falls, so
    up to 19 steps late, and at most once per call.
    """

    def __init__(self, writer, every: int):
        super().__init__()
        self.writer, self.every = writer, every
        self._last = self._epoch_start = 0

    def on_epoch_begin(self, epoch, logs=None):
        # Read the step counter once an epoch; within it, Keras' batch index gives the step.
        self._epoch_start = self._last = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the call's last step as Keras counts it; an epoch's last call may run fewer.
        step = self._epoch_start + min(batch + 1, self.params.get("steps") or batch + 1)
        if step // self.every == self._last // self.every or not logs:
            return
        self._last = step
        with self.writer.as_default(step=step):
            for name in ("loss", "accuracy"):
                if name in logs:
                    tf.summary.scalar(BATCH_TAG_PREFIX + name, logs[name])
