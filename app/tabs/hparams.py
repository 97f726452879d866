"""HParams tab: the run's hyperparameters beside its final metrics, to compare runs.

The settings come from their declarations (hparam=True in app/config.py); what describes the
model (optimizer, dropout, the precision it really trains in) is read from the model itself, so
the record cannot drift from what trained.
"""

from __future__ import annotations

import keras
from tensorboard.plugins.hparams import api as hparams_api

from app.config import Config
from app.tabs.events import RunStart


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
        hparams_api.hparams(values, trial_id=self.run_name)
