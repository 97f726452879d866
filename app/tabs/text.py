"""Text tab: the run's effective configuration, its data source and the model summary."""

from __future__ import annotations

import io

import tensorflow as tf

from app.config import Config
from app.tabs.events import RunStart


class ConfigAndModel(RunStart):
    def __init__(self, writer, config: Config, source: str):
        super().__init__(writer)
        self.config, self.source = config, source

    def write(self) -> None:
        # print_fn: without one, Keras' rich console writes to a notebook's display, not to stdout,
        # so in Jupyter the summary would land in the cell instead of the Text tab.
        summary = io.StringIO()
        self.model.summary(print_fn=summary.write)
        tf.summary.text("config", f"```\n{self.config.to_json()}```\n\nData: `{self.source}`")
        tf.summary.text("model_summary", f"```\n{summary.getvalue()}\n```")
