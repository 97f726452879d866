"""Text tab: the run's effective configuration, its data (the classes and their pictures) and the
model summary."""

from __future__ import annotations

import io

import tensorflow as tf

from app.config import Config
from app.data import Images
from app.tabs.events import RunStart


class ConfigAndModel(RunStart):
    def __init__(self, writer, config: Config, digits: Images):
        super().__init__(writer)
        self.config, self.digits = config, digits

    def write(self) -> None:
        # print_fn: without one, Keras' rich console writes to a notebook's display, not to stdout,
        # so in Jupyter the summary would land in the cell instead of the Text tab.
        summary = io.StringIO()
        self.model.summary(print_fn=summary.write)
        digits = self.digits
        rows = [f"| {name} | {train:,} | {test:,} |" for name, train, test in
                zip(digits.class_names, digits.counts("train"), digits.counts("test"), strict=True)]
        skipped = len(digits.details.get("skipped", []))
        left_out = f", {skipped} unreadable pictures left out" if skipped else ""
        data = (f"Data: `{digits.source}`, {digits.image_size} pixels, {digits.channels} channel(s), "
                f"{len(digits.class_names)} classes{left_out}\n\n"
                "| class | training | validation |\n| --- | ---: | ---: |\n" + "\n".join(rows))
        tf.summary.text("config", f"```\n{self.config.to_json()}```\n\n{data}")
        tf.summary.text("model_summary", f"```\n{summary.getvalue()}\n```")
