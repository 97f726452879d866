"""tf.data input pipelines. Images stay uint8 in memory and become float32 in [0, 1] per batch."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

# Evaluation has no gradients to keep, so bigger batches only save per-step overhead.
EVAL_BATCH_SIZE = 500
# Gathering and scaling a batch takes well under a millisecond: two threads and two batches ahead
# keep the model fed. Fixed rather than tf.data.AUTOTUNE, because with autotuning on, ending a fit
# here stalled for about 7 s in a quarter to a half of the runs (the iterator's teardown).
PARALLEL_CALLS, BATCHES_AHEAD = 2, 2


def _scaled(images: tf.Tensor) -> tf.Tensor:
    return tf.cast(images, tf.float32)[..., tf.newaxis] / 255.0


def training_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                     first_epoch: int, epochs: int) -> tuple[tf.data.Dataset, int]:
    """Shuffled batches for epochs first_epoch .. epochs-1, and the number of steps per epoch.

    Each epoch's order is a stateless function of (seed, epoch), not of what ran before, so a
    resumed run sees exactly the batches that an uninterrupted run would have seen.
    """
    images, labels = tf.constant(x), tf.constant(y, dtype=tf.int32)
    n = len(x)

    def epoch_order(epoch: tf.Tensor) -> tf.data.Dataset:
        keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(tf.argsort(keys)).batch(batch_size)

    def gather(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return _scaled(tf.gather(images, indices)), tf.gather(labels, indices)

    dataset = (
        tf.data.Dataset.range(first_epoch, epochs)
        .flat_map(epoch_order)
        .map(gather, num_parallel_calls=PARALLEL_CALLS)
        .prefetch(BATCHES_AHEAD)
    )
    return _without_autotuning(dataset), math.ceil(n / batch_size)


def eval_batches(x: np.ndarray, y: np.ndarray | None = None) -> tf.data.Dataset:
    """In-order batches for evaluation and prediction (labels included when given)."""
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(EVAL_BATCH_SIZE).map(_scaled)
    if y is not None:
        labels = tf.data.Dataset.from_tensor_slices(y.astype(np.int32)).batch(EVAL_BATCH_SIZE)
        dataset = tf.data.Dataset.zip(dataset, labels)
    return _without_autotuning(dataset.prefetch(BATCHES_AHEAD))


def _without_autotuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
