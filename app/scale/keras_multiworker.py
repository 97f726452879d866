"""Two corrections to Keras' TensorFlow trainer that MultiWorkerMirroredStrategy needs.

BORROWED: Keras 3 does not officially support MultiWorkerMirroredStrategy (keras-team/keras#20585,
open), and two small bugs in keras/src/backend/tensorflow/trainer.py break `fit` under it:
  1. `_maybe_symbolic_build` reduces the first batch with `strategy.reduce` outside a graph,
     which a multi-worker strategy cannot do eagerly; one replica's batch serves as well (only
     its shapes and dtypes are used).
  2. `reduce_per_replica` reduces the scalar logs (loss, metrics) with `axis=0`, which fails on
     scalars; `axis=None` averages them across workers.
`apply()` installs both, only when a multi-worker strategy is used (app/scale/distribution.py), and
only on the Keras version they were written against (app/borrowed.py, which lists what they replace;
tests/unit/test_borrowed.py fails, naming it, when Keras changes any of it).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer

from app import borrowed

_original_reduce = trainer.reduce_per_replica


def apply() -> None:
    if keras.__version__ != borrowed.KERAS:
        raise RuntimeError(f"app/scale/keras_multiworker.py corrects Keras {borrowed.KERAS}'s TensorFlow "
                           f"trainer for multi-worker training, but Keras {keras.__version__} is installed: "
                           "check whether keras-team/keras#20585 is fixed there, then update or drop them")
    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    trainer.reduce_per_replica = _reduce_per_replica


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    """Keras' method, with one replica's part of the first batch instead of strategy.reduce()."""
    if self._distribute_strategy is None:
        return
    strategy = self.distribute_strategy
    if iterator is not None:
        for _, _, it in iterator:
            data_batch = tree.map_structure(
                lambda v: strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v, next(it))
            break
    with strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _reduce_per_replica(values, strategy, reduction):
    """Keras' function, with the multi-worker mean taken over all axes (the logs are scalars)."""
    if trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto", "mean"):
        return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
    return _original_reduce(values, strategy, reduction)
