"""PR Curves tab: precision against recall for each class on the validation set, every epoch."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.pr_curve import summary as pr_summary

from app.validation import Validation

PR_THRESHOLDS = 101


class PRCurves(keras.callbacks.Callback):
    """From the predictions that `Validation` already made: no extra pass."""

    def __init__(self, writer, validation: Validation, class_names: list[str]):
        super().__init__()
        self.writer, self.validation, self.class_names = writer, validation, class_names

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default(step=epoch):
            write_pr_curves(self.validation.probabilities, self.validation.labels, self.class_names)
        self.writer.flush()


def write_pr_curves(probs: np.ndarray, truth: np.ndarray, class_names: list[str]) -> None:
    """One PR curve per class, as TensorBoard's pr_curve.pb makes them, all classes at once in numpy."""
    n_classes = probs.shape[1]
    offsets = np.arange(n_classes) * PR_THRESHOLDS  # each class its own range of bins
    buckets = np.floor(probs * (PR_THRESHOLDS - 1)).astype(np.int64) + offsets
    positive = truth[:, None] == np.arange(n_classes)
    size = n_classes * PR_THRESHOLDS
    tp_buckets = np.bincount(buckets[positive], minlength=size).reshape(n_classes, PR_THRESHOLDS)
    fp_buckets = np.bincount(buckets[~positive], minlength=size).reshape(n_classes, PR_THRESHOLDS)
    tp = np.cumsum(tp_buckets[:, ::-1], axis=1)[:, ::-1].astype(np.float64)
    fp = np.cumsum(fp_buckets[:, ::-1], axis=1)[:, ::-1].astype(np.float64)
    tn, fn = fp[:, :1] - fp, tp[:, :1] - tp
    precision = tp / np.maximum(1e-7, tp + fp)
    recall = tp / np.maximum(1e-7, tp + fn)
    for c, name in enumerate(class_names):
        label = f"digit {c}" if name == str(c) else f"{c}: {name}"
        summary = pr_summary.raw_data_pb(
            f"class_{c}", true_positive_counts=tp[c], false_positive_counts=fp[c],
            true_negative_counts=tn[c], false_negative_counts=fn[c], precision=precision[c],
            recall=recall[c], num_thresholds=PR_THRESHOLDS, display_name=label,
            description=f"Precision-recall of {label}, validation set")
        [value] = summary.value
        tf.summary.write(value.tag, tf.make_ndarray(value.tensor),
                         metadata=value.metadata.SerializeToString())
