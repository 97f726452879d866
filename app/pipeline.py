"""tf.data input pipelines. Images stay uint8 in memory and become float32 in [0, 1] per batch."""

from __future__ import annotations

import math

import keras
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


class ShuffleEachEpoch(keras.callbacks.Callback):
    """Tells the training batches which epoch begins, so that each epoch has its own order."""

    def __init__(self, epoch: tf.Variable):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


def training_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                     steps_per_execution: int = 1) -> tuple[tf.data.Dataset, int, ShuffleEachEpoch]:
    """One epoch of shuffled batches, its number of steps, and the callback that sets the epoch.

    The dataset holds exactly one epoch, and fit (given no steps_per_epoch) iterates it afresh
    each epoch: so every epoch consumes exactly its own batches, also when a call runs several
    steps and the steps per epoch are not a multiple of them (the last call runs fewer). With
    one stream over all epochs, a call of 20 steps would run on into the next epoch's batches.
    Each epoch's order is a stateless function of (seed, epoch), not of what ran before, so a
    resumed run sees exactly the batches that an uninterrupted run would have seen.
    """
    images, labels = tf.constant(x), tf.constant(y, dtype=tf.int32)
    n, steps = len(x), math.ceil(len(x) / batch_size)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="shuffle_epoch")

    def order(_) -> tf.Tensor:  # read when an epoch's iterator starts, after on_epoch_begin
        keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), epoch.value()]))
        return tf.argsort(keys)

    def gather(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return _scaled(tf.gather(images, indices)), tf.gather(labels, indices)

    dataset = (
        tf.data.Dataset.range(1)
        .map(order)
        .unbatch()
        .batch(batch_size)
        .map(gather, num_parallel_calls=PARALLEL_CALLS)
        # Enough batches ahead for one call, however many steps it runs.
        .prefetch(max(BATCHES_AHEAD, steps_per_execution))
        .apply(tf.data.experimental.assert_cardinality(steps))  # unbatch() loses the count
    )
    return _with_options(dataset), steps, ShuffleEachEpoch(epoch)


def eval_batches(x: np.ndarray, y: np.ndarray | None = None) -> tf.data.Dataset:
    """In-order batches for evaluation and prediction (labels included when given)."""
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(EVAL_BATCH_SIZE).map(_scaled)
    if y is not None:
        labels = tf.data.Dataset.from_tensor_slices(y.astype(np.int32)).batch(EVAL_BATCH_SIZE)
        dataset = tf.data.Dataset.zip(dataset, labels)
    return _with_options(dataset.prefetch(BATCHES_AHEAD))


def _with_options(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.autotune.enabled = False
    # Several workers (MultiWorkerMirroredStrategy) each take their share of every batch. The data
    # is in memory, not in files, so sharding by element is the only way; AUTO would fall back to
    # it with a warning.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
