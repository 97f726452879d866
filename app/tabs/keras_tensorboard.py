"""The one adapter over Keras' TensorBoard callback: Scalars per epoch, Histograms and
Distributions of every weight, the conceptual graph, and the Profile tab.

BORROWED: `LiveTensorBoard` overrides private members of keras.callbacks.TensorBoard (_writers,
_train_writer, _log_weights, and how on_train_batch_end reads its logs). app/borrowed.py lists them
with the Keras version they were checked against; tests/unit/test_borrowed.py fails, naming the
member, when an upgrade changes one. Review this file then.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata


class LiveTensorBoard(keras.callbacks.TensorBoard):
    """Keras' callback, flushed at every epoch end, with its per-epoch and per-batch costs cut."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        # Keras flushes only its train writer, and only after histograms; the others would buffer
        # for up to two minutes, so validation curves would lag far behind training.
        for writer in self._writers.values():
            writer.flush()

    def on_train_batch_end(self, batch, logs=None):
        # With update_freq="epoch" Keras still issues two summary calls per batch that write
        # nothing (there is no default writer): withholding the logs skips them.
        super().on_train_batch_end(batch, logs=None)

    def _log_weights(self, epoch):
        # The same histograms under the same tags, bucketed by numpy: Keras writes each with a
        # dozen eager TensorFlow ops, 48 ms an epoch here, against 3 ms.
        with self._train_writer.as_default(step=epoch):
            for layer in self.model.layers:
                for weight in layer.weights:
                    write_histogram(f"{weight.path.replace(':', '_')}/histogram",
                                    keras.ops.convert_to_numpy(weight))
        self._train_writer.flush()


def profiled_calls(steps: tuple[int, int] | None, steps_per_execution: int) -> tuple[int, int] | int:
    """Keras' profile_batch for profiling these training steps (1-based), or 0 for none.

    Keras counts train-function calls, not steps: with several steps per call, the calls that
    contain the first and the last of them (each epoch's last call may run fewer steps).
    """
    if steps is None:
        return 0
    first, last = steps
    return (math.ceil(first / steps_per_execution), math.ceil(last / steps_per_execution))


HISTOGRAM_BUCKETS = 30  # TensorBoard's default
_HISTOGRAM_METADATA = histogram_metadata.create_summary_metadata(display_name=None, description=None)


def write_histogram(tag: str, values: np.ndarray) -> None:
    """What tf.summary.histogram writes (rows of left edge, right edge, count), bucketed by numpy."""
    values = values.ravel()
    low, high = float(values.min()), float(values.max())
    if low == high:  # TensorBoard's convention: all in the last of equal-edged buckets
        left = right = np.full(HISTOGRAM_BUCKETS, low)
        counts = np.zeros(HISTOGRAM_BUCKETS)
        counts[-1] = values.size
    else:
        counts, edges = np.histogram(values, bins=HISTOGRAM_BUCKETS, range=(low, high))
        left, right = edges[:-1], edges[1:]
    tf.summary.write(tag, np.stack([left, right, counts]).T.astype(np.float64),
                     metadata=_HISTOGRAM_METADATA.SerializeToString())
