"""What TensorBoard shows beyond Keras' own callback, and keeping the event files consistent.

Where things are written, in <run>/:
  train/, validation/  Keras' TensorBoard callback: epoch scalars (loss, accuracy, learning rate),
                       weight histograms, the conceptual Keras graph.
  . (the run itself)   this module: batch scalars, the op-level graph, config and model summary
                       (Text), hyperparameters (HParams), confusion matrix and mistakes (Images),
                       PR curves, and the test metrics.
Each directory has exactly one writer at a time: TensorBoard's Python loader (--load_fast=false,
and older versions) follows only the newest event file of a directory, so a second concurrent
writer would hide the first's data from it.
"""

from __future__ import annotations

import io
import os
from contextlib import redirect_stdout
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.pr_curve import summary as pr_summary

from app import images
from app.callbacks import Validation
from app.config import Config

BATCH_TAG_PREFIX = "batch_"  # scalars whose step is the global batch step; all others use the epoch
MISTAKES_SHOWN = 24


def open_writer(run_dir: Path) -> tf.summary.SummaryWriter:
    # Flush at least every second so that batch curves move in TensorBoard while an epoch runs.
    return tf.summary.create_file_writer(str(run_dir), flush_millis=1000)


def write_run_start(writer, config: Config, model: keras.Model, run_name: str, source: str) -> None:
    """Once per run: the Text, HParams and op-level Graphs entries."""
    summary = io.StringIO()
    with redirect_stdout(summary):
        model.summary()
    with writer.as_default(step=0):
        tf.summary.text("config", f"```\n{config.to_json()}```\n\nData: `{source}`")
        tf.summary.text("model_summary", f"```\n{summary.getvalue()}\n```")
        hparams_api.hparams(
            {
                "batch_size": config.batch_size,
                "learning_rate": config.learning_rate,
                "lr_schedule": config.lr_schedule,
                "epochs": config.epochs,
                "seed": config.seed,
                "precision": model.dtype_policy.name,
                "dataset": config.dataset,
                "optimizer": "adam",
                "dropout": 0.5,
            },
            trial_id=run_name,
        )
        # Keras 3 writes only its conceptual graph; this is the op-level graph of the forward pass.
        forward = tf.function(lambda images: model(images, training=False))
        tf.summary.graph(forward.get_concrete_function(tf.TensorSpec([None, 28, 28, 1], tf.float32)).graph)
    writer.flush()


def write_test_metrics(writer, metrics: dict, epoch: int) -> None:
    with writer.as_default(step=epoch):
        tf.summary.scalar("test_accuracy", metrics["test_accuracy"])
        tf.summary.scalar("test_loss", metrics["test_loss"])
    writer.flush()


class LiveTensorBoard(keras.callbacks.TensorBoard):
    """Keras' callback, flushed at every epoch end, with its per-epoch and per-batch costs cut.

    These override private parts of Keras 3.15's callback; the tests read back every tag it writes.
    """

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


class BatchScalars(keras.callbacks.Callback):
    """Training loss and accuracy every `every` steps, so curves move during an epoch.

    The values are Keras' running means over the epoch so far, as with its update_freq option
    (which, with Keras 3.15, drops the epoch scalars and histograms, see the README).
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


class ValidationSummaries(keras.callbacks.Callback):
    """Images (confusion matrix, the most confident mistakes) and per-class PR curves, each epoch.

    Built from the predictions that `Validation` already made, so they cost no extra pass.
    """

    def __init__(self, writer, validation: Validation, x_val: np.ndarray, class_names: list[str]):
        super().__init__()
        self.writer, self.validation = writer, validation
        self.x_val, self.class_names = x_val, class_names

    def on_epoch_end(self, epoch, logs=None):
        probs, truth = self.validation.probabilities, self.validation.labels
        predicted = probs.argmax(axis=1)
        accuracy = float((predicted == truth).mean())
        n = len(self.class_names)
        matrix = np.bincount(truth * n + predicted, minlength=n * n).reshape(n, n)
        wrong = np.flatnonzero(predicted != truth)
        wrong = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:MISTAKES_SHOWN]
        captions = [(f"true {self.class_names[truth[i]]}",
                     f"pred {self.class_names[predicted[i]]} {probs[i, predicted[i]]:.0%}") for i in wrong]
        with self.writer.as_default(step=epoch):
            _png_summary(
                "confusion_matrix",
                images.confusion_matrix(matrix, self.class_names,
                                        f"epoch {epoch + 1} · validation accuracy {accuracy:.2%}"),
                "Validation set: true class (rows) against predicted class (columns).")
            _png_summary(
                "misclassified",
                images.digit_grid(self.x_val[wrong], captions,
                                  f"epoch {epoch + 1} · {int((predicted != truth).sum())} mistakes, "
                                  "the most confident first"),
                "Validation images the model got wrong, most confident mistakes first.")
            write_pr_curves(probs, truth, self.class_names)
        self.writer.flush()


HISTOGRAM_BUCKETS = 30  # TensorBoard's default
PR_THRESHOLDS = 101
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


def write_pr_curves(probs: np.ndarray, truth: np.ndarray, class_names: list[str]) -> None:
    """One PR curve per class, as TensorBoard's pr_curve.pb makes them, all classes at once."""
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


def _png_summary(tag: str, rgb: np.ndarray, description: str) -> None:
    """What tf.summary.image writes, with the PNG made by Pillow at its fastest setting (a third
    of the time of TensorFlow's encoder, for pictures of flat colours that compress well anyway)."""
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG", compress_level=1)
    height, width = rgb.shape[:2]
    metadata = image_metadata.create_summary_metadata(display_name=None, description=description)
    tf.summary.write(tag, tf.constant([str(width), str(height), png.getvalue()]),
                     metadata=metadata.SerializeToString())


def trim_events(run_dir: Path, epochs_done: int, steps_done: int) -> None:
    """Drop what an interrupted run wrote after its last checkpoint, before resuming it.

    Without this, a resumed run would write epoch `epochs_done` (and the batches after
    `steps_done`) a second time, and TensorBoard would show duplicated or zig-zag curves.
    """
    for path in sorted(run_dir.rglob("events.out.tfevents.*")):
        kept, dropped = [], False
        try:
            for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
                event = tf.compat.v1.Event.FromString(record)
                is_data = event.WhichOneof("what") in ("summary", "graph_def")
                batch_level = any(v.tag.startswith(BATCH_TAG_PREFIX) for v in event.summary.value)
                if is_data and event.step > (steps_done if batch_level else epochs_done - 1):
                    dropped = True
                else:
                    kept.append(record)
        except tf.errors.DataLossError:  # a record cut short by kill -9: drop the tail
            dropped = True
        if dropped:
            tmp = path.with_name(f".{path.name}.tmp")
            with tf.io.TFRecordWriter(str(tmp)) as out:
                for record in kept:
                    out.write(record)
            os.replace(tmp, path)
