"""HParams tab: the run's hyperparameters beside its final metrics, to compare runs.

The settings come from their declarations (hparam=True in app/config.py); what describes the
model (optimizer, dropout, the precision it really trains in) is read from the model itself, so
the record cannot drift from what trained.

The log folder (logs/fit) holds the experiment, as a run of its own named `_hparams`: the tab's
columns, in the order users read them, with readable names. TensorBoard uses one experiment per
log folder; without one, every request
of the tab scans every scalar tag of every run to guess the metrics (slow with hundreds of runs)
and shows them in the order it finds them, batch curves first. Every run makes sure it is there
(`ensure_experiment`), and it covers every run a log folder can hold, older ones included, since
it lists every hparam and metric this project writes. TensorBoard 2.21 sorts hparams by
"differs" first, then by name: the settings a sweep can search are marked as differing, so they
come first, the labels (sweep, trial) and what is read from the model after them.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import keras
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary as hparams_summary

from app.config import Config
from app.data import Images
from app.tabs.events import RunStart, write_records

# The tab's metric columns, in this order (validation accuracy is the sweeps' default objective):
# (group, tag, display name); group is the run's subfolder, "" the run itself.
METRICS = {
    "val_accuracy": ("validation", "epoch_accuracy", "validation accuracy"),
    "val_loss": ("validation", "epoch_loss", "validation loss"),
    "test_accuracy": ("", "test_accuracy", "test accuracy"),
    # Within the first five, which the tab shows without a click: how a trial ended.
    "epochs_trained": ("", "epochs_trained", "epochs trained"),
    "trial_pruned": ("", "trial_pruned", "pruned (1: stopped early)"),
    "exported_epoch": ("", "exported_epoch", "exported epoch (the best)"),
    "test_loss": ("", "test_loss", "test loss"),
    "accuracy": ("train", "epoch_accuracy", "training accuracy"),
    "loss": ("train", "epoch_loss", "training loss"),
}
# Every hparam a run can have besides the settings: read from the model, and from the data.
MODEL_HPARAMS = ("precision", "optimizer", "dropout")
DATA_HPARAMS = ("data", "classes", "train_images", "validation_images")
STATUS = {"complete": api_pb2.STATUS_SUCCESS, "pruned": api_pb2.STATUS_SUCCESS,
          "failed": api_pb2.STATUS_FAILURE}


class Hyperparameters(RunStart):
    def __init__(self, writer, config: Config, digits: Images, run_dir: Path):
        super().__init__(writer)
        self.config, self.digits, self.run_dir = config, digits, run_dir

    def write(self) -> None:
        model = self.model
        values = {**self.config.hparams(), "precision": model.dtype_policy.name,
                  "optimizer": model.optimizer.name, "data": self.digits.source,
                  "classes": len(self.digits.class_names), "train_images": len(self.digits.y_train),
                  "validation_images": len(self.digits.y_test)}
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dropout):
                values[layer.name] = layer.rate
        ensure_experiment(self.run_dir.parent)
        hparams_api.hparams(values, trial_id=self.run_dir.name)


def experiment():
    """The experiment summary: every hparam a run can have, then the metrics of METRICS."""
    fields = Config.__dataclass_fields__.values()
    searchable = [f.name for f in fields if f.metadata["hparam"] and f.metadata["flag"]]
    labels = [f.name for f in fields if f.metadata["hparam"] and not f.metadata["flag"]]
    hparam_infos = [api_pb2.HParamInfo(name=name, display_name=name.replace("_", " "),
                                       differs=name in searchable)
                    for name in [*searchable, *labels, *MODEL_HPARAMS, *DATA_HPARAMS]]
    metric_infos = [api_pb2.MetricInfo(name=api_pb2.MetricName(group=group, tag=tag), display_name=shown)
                    for group, tag, shown in METRICS.values()]
    # A fixed creation time (the default is now): the same columns are the same bytes, the same file.
    return hparams_summary.experiment_pb(hparam_infos, metric_infos, time_created_secs=0,
                                         description="runs of mnist-tensorboard; sweeps: docs/sweeps.md")


# The experiment's run: a folder of the log folder that no run can be named (run names start with a
# letter or digit), listed by TensorBoard as a run with no data, named for what it holds.
EXPERIMENT_RUN = "_hparams"


def ensure_experiment(log_folder: Path) -> Path:
    """Write the log folder's experiment unless it is there; returns its event file.

    It goes into log_folder/_hparams. Its name says what it holds, so that any number of runs starting
    at once, on any number of hosts sharing the folder, write the same file: each writes a file of
    its own under a name TensorBoard ignores, then links it to the shared name, which fails if
    another was first (link(2) never replaces a file). TensorBoard reads a tag's metadata once, from
    its first event: an experiment of an older version (another name, or the log folder itself,
    where versions before 0.5 wrote it) is removed, and the new one is shown once TensorBoard is
    restarted.
    """
    from tensorboard.compat.proto import event_pb2, summary_pb2

    content = experiment().SerializeToString()
    folder = log_folder / EXPERIMENT_RUN
    target = folder / f"events.out.tfevents.0.experiment-{hashlib.sha256(content).hexdigest()[:12]}.v2"
    if target.exists():
        return target
    folder.mkdir(exist_ok=True)
    partial = folder / f".experiment.{os.getpid()}.{time.monotonic_ns()}"
    now = time.time()
    try:
        write_records(partial, [
            event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString(),
            event_pb2.Event(wall_time=now, step=0,
                            summary=summary_pb2.Summary.FromString(content)).SerializeToString()])
        try:
            os.link(partial, target)
        except FileExistsError:
            pass  # another run wrote the same file first
    finally:
        partial.unlink(missing_ok=True)
    for older in [*folder.glob("events.out.tfevents.0.experiment-*.v2"),
                  *log_folder.glob("events.out.tfevents.0.experiment-*.v2")]:
        if older != target:
            older.unlink(missing_ok=True)
    return target


def end_session(run_dir: Path, outcome: str, epochs: int) -> None:
    """Mark the run's HParams session as ended: complete, pruned or failed.

    TensorBoard's only writer of a session's status is the legacy `session_end_pb`. A pruned trial
    also gets `trial_pruned` 1 (0 otherwise), a column the tab shows whatever filter is set.
    Called after the run's own writer is closed: one writer per folder at a time.
    """
    writer = tf.summary.create_file_writer(str(run_dir))
    with writer.as_default(step=epochs):
        if outcome != "failed":
            tf.summary.scalar("trial_pruned", 1.0 if outcome == "pruned" else 0.0)
        tf.summary.experimental.write_raw_pb(
            hparams_summary.session_end_pb(STATUS[outcome]).SerializeToString(), step=epochs)
    writer.close()
