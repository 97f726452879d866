"""The run's own event files: the writer, what is written once per run, and trimming on resume; and
how event files are read and written record by record (TensorFlow's own TFRecord reader, which
checks every record's CRC, and its writer), here and in the benchmarks.

Each directory has exactly one writer at a time: TensorBoard's Python loader (--load_fast=false,
and older versions) follows only the newest event file of a directory, so a second concurrent
writer would hide the first's data from it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import keras
import tensorflow as tf

BATCH_TAG_PREFIX = "batch_"  # scalars whose step is the global batch step; all others use the epoch


def open_writer(run_dir: Path, epochs_done: int, steps_done: int) -> tf.summary.SummaryWriter:
    """The writer of <run>/, after dropping what a stopped session wrote past its last checkpoint."""
    _trim(run_dir, epochs_done, steps_done)
    # Flush at least every second so that batch curves move in TensorBoard while an epoch runs.
    return tf.summary.create_file_writer(str(run_dir), flush_millis=1000)


class RunStart(keras.callbacks.Callback):
    """A tab written once, at step 0, when training starts: `write()` says what."""

    def __init__(self, writer):
        super().__init__()
        self.writer = writer

    def write(self) -> None:
        raise NotImplementedError

    def on_train_begin(self, logs=None):
        with self.writer.as_default(step=0):
            self.write()
        self.writer.flush()


def write_test_metrics(writer, metrics: dict, epoch: int) -> None:
    """The final model's test loss and accuracy, and the epochs it trained, as Scalars at the last epoch."""
    with writer.as_default(step=epoch):
        tf.summary.scalar("test_accuracy", metrics["test_accuracy"])
        tf.summary.scalar("test_loss", metrics["test_loss"])
        tf.summary.scalar("epochs_trained", epoch)  # fewer than --epochs when a sweep pruned it
        tf.summary.scalar("exported_epoch", metrics["exported_epoch"])  # the best by --monitor
    writer.flush()


def _trim(run_dir: Path, epochs_done: int, steps_done: int) -> None:
    """Drop what an interrupted run wrote after its last checkpoint, before resuming it.

    Without this, a resumed run would write epoch `epochs_done` (and the batches after
    `steps_done`) a second time, and TensorBoard would show duplicated or zig-zag curves.
    """
    for path in sorted(run_dir.rglob("events.out.tfevents.*")):
        kept, dropped = [], False
        try:
            for record in records(path):
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
            write_records(tmp, kept)
            os.replace(tmp, path)


def records(path: Path) -> Iterator[bytes]:
    """The serialized events of an event file, read by TensorFlow's TFRecord reader (CRC-checked);
    raises tf.errors.DataLossError where a record is cut short (a kill -9 in the middle of a write)."""
    return tf.data.TFRecordDataset(str(path)).as_numpy_iterator()


def write_records(path: Path, serialized: Iterable[bytes]) -> None:
    """A new event file of these serialized events, by TensorFlow's TFRecord writer, synced to disk."""
    with tf.io.TFRecordWriter(str(path)) as out:
        for record in serialized:
            out.write(record)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
