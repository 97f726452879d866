"""tf.data input pipelines. Images stay uint8 where they are (in memory, or memory-mapped from the
picture cache) and each batch is gathered from them by numpy and becomes float32 in [0, 1]: the
arrays are never copied whole into TensorFlow, so a folder larger than memory trains too."""

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
    return tf.cast(images, tf.float32) / 255.0


def _rows(x: np.ndarray, y: np.ndarray | None):
    """A tf.data map function: the rows of x (and y) at a batch of indices, gathered by numpy."""
    shape = (None, *x.shape[1:])

    def take(indices: np.ndarray):
        order = np.sort(indices)  # in file order: a memory-mapped array reads ahead
        put = np.argsort(np.argsort(indices))  # and back to the shuffled order
        rows = np.asarray(x[order])[put]
        return (rows, np.asarray(y[order])[put].astype(np.int32)) if y is not None else rows

    def gather(indices: tf.Tensor):
        out = (tf.uint8, tf.int32) if y is not None else tf.uint8
        found = tf.numpy_function(take, [indices], out, stateful=False)
        if y is None:
            return tf.ensure_shape(found, shape)
        return tf.ensure_shape(found[0], shape), tf.ensure_shape(found[1], (None,))

    return gather


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
    n, steps = len(x), math.ceil(len(x) / batch_size)
    rows = _rows(x, y)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="shuffle_epoch")

    def order(_) -> tf.Tensor:  # read when an epoch's iterator starts, after on_epoch_begin
        keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), epoch.value()]))
        return tf.argsort(keys)

    def gather(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = rows(indices)
        return _scaled(images), labels

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
    rows = _rows(x, y)

    def gather(indices: tf.Tensor):
        found = rows(indices)
        return (_scaled(found[0]), found[1]) if y is not None else _scaled(found)

    dataset = (tf.data.Dataset.range(len(x)).batch(EVAL_BATCH_SIZE)
               .map(gather, num_parallel_calls=PARALLEL_CALLS))
    return _with_options(dataset.prefetch(BATCHES_AHEAD))


def _with_options(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.autotune.enabled = False
    # Several workers (MultiWorkerMirroredStrategy) each take their share of every batch. The data
    # is in memory, not in files, so sharding by element is the only way; AUTO would fall back to
    # it with a warning.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
