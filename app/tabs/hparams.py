"""HParams tab: the run's hyperparameters beside its final metrics, to compare runs.

The settings come from their declarations (hparam=True in app/config.py); what describes the
model (optimizer, dropout, the precision it really trains in) is read from the model itself, so
the record cannot drift from what trained.

A sweep's trials also write the experiment: the columns of the tab, in the order users read a
sweep (TensorBoard 2.21 sorts hparams by "differs" first, then by name, so the swept settings are
marked as differing; metrics keep the order given), with readable names. Without it the plugin
guesses the metrics from every scalar tag, batch curves first. TensorBoard uses one experiment
per log folder; any trial's will do, since each lists every hparam and metric a run can have.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary as hparams_summary

from app.config import Config
from app.tabs.events import RunStart

# The tab's metric columns, in this order (validation accuracy is the sweeps' default objective):
# (group, tag, display name); group is the run's subfolder, "" the run itself.
METRICS = {
    "val_accuracy": ("validation", "epoch_accuracy", "validation accuracy"),
    "val_loss": ("validation", "epoch_loss", "validation loss"),
    "test_accuracy": ("", "test_accuracy", "test accuracy"),
    # Within the first five, which the tab shows without a click: how a trial ended.
    "epochs_trained": ("", "epochs_trained", "epochs trained"),
    "trial_pruned": ("", "trial_pruned", "pruned (1: stopped early)"),
    "test_loss": ("", "test_loss", "test loss"),
    "accuracy": ("train", "epoch_accuracy", "training accuracy"),
    "loss": ("train", "epoch_loss", "training loss"),
}
# Every hparam a run can have besides the settings: read from the model.
MODEL_HPARAMS = ("precision", "optimizer", "dropout")
STATUS = {"complete": api_pb2.STATUS_SUCCESS, "pruned": api_pb2.STATUS_SUCCESS,
          "failed": api_pb2.STATUS_FAILURE}


class Hyperparameters(RunStart):
    def __init__(self, writer, config: Config, run_name: str):
        super().__init__(writer)
        self.config, self.run_name = config, run_name

    def write(self) -> None:
        model = self.model
        values = {**self.config.hparams(), "precision": model.dtype_policy.name,
                  "optimizer": model.optimizer.name}
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dropout):
                values[layer.name] = layer.rate
        if self.config.sweep:
            tf.summary.experimental.write_raw_pb(experiment(self.config).SerializeToString(), step=0)
        hparams_api.hparams(values, trial_id=self.run_name)


def experiment(config: Config):
    """The experiment summary of a sweep: its swept settings first, then the metrics of METRICS."""
    names = [n for n in Config.__dataclass_fields__ if Config.__dataclass_fields__[n].metadata["hparam"]]
    hparam_infos = [api_pb2.HParamInfo(name=name, display_name=name.replace("_", " "),
                                       differs=name in config.swept)
                    for name in [*names, *MODEL_HPARAMS]]
    metric_infos = [api_pb2.MetricInfo(name=api_pb2.MetricName(group=group, tag=tag), display_name=shown)
                    for group, tag, shown in METRICS.values()]
    return hparams_summary.experiment_pb(hparam_infos, metric_infos,
                                         description=f"sweep {config.sweep}; docs/sweeps.md")


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
