"""What TensorBoard shows beyond Keras' own callback, and keeping the event files consistent.

Where things are written, in <run>/:
  train/, validation/  Keras' TensorBoard callback: epoch scalars (loss, accuracy, learning rate),
                       weight histograms, the conceptual Keras graph.
  . (the run itself)   this module: batch scalars, the op-level graph, config and model summary
                       (Text), hyperparameters (HParams), confusion matrix and mistakes (Images),
                       PR curves, and the test metrics.
Each directory has exactly one writer at a time: TensorBoard reads only the newest event file of a
directory while it is being written, so a second concurrent writer would hide the first's data.
"""

from __future__ import annotations

import io
import os
from contextlib import redirect_stdout
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api
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
                "epochs": config.epochs,
                "seed": config.seed,
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
    """Keras' callback, flushed at every epoch end.

    Keras flushes only its train writer, and only when it writes histograms; its writers otherwise
    buffer for up to two minutes, so validation curves would lag far behind training.
    """

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        for writer in self._writers.values():
            writer.flush()


class BatchScalars(keras.callbacks.Callback):
    """Training loss and accuracy every `every` steps, so curves move during an epoch.

    The values are Keras' running means over the epoch so far, as with its update_freq option
    (which, with Keras 3.15, drops the epoch scalars and histograms, see the README).
    """

    def __init__(self, writer, every: int):
        super().__init__()
        self.writer, self.every = writer, every
        self._last = 0

    def on_train_begin(self, logs=None):
        self._last = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
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
            tf.summary.image(
                "confusion_matrix",
                images.confusion_matrix(matrix, self.class_names,
                                        f"epoch {epoch + 1} · validation accuracy {accuracy:.2%}")[None],
                description="Validation set: true class (rows) against predicted class (columns).")
            tf.summary.image(
                "misclassified",
                images.digit_grid(self.x_val[wrong], captions,
                                  f"epoch {epoch + 1} · {int((predicted != truth).sum())} mistakes, "
                                  "the most confident first")[None],
                description="Validation images the model got wrong, most confident mistakes first.")
            for c, name in enumerate(self.class_names):
                label = f"digit {c}" if name == str(c) else f"{c}: {name}"
                value = pr_summary.pb(f"class_{c}", labels=truth == c, predictions=probs[:, c],
                                      num_thresholds=101, display_name=label,
                                      description=f"Precision-recall of {label}, validation set").value[0]
                tf.summary.write(value.tag, tf.make_ndarray(value.tensor),
                                 metadata=value.metadata.SerializeToString())
        self.writer.flush()


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
