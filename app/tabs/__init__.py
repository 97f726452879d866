"""What TensorBoard shows beyond Keras' own callback: one module per tab, assembled in `callbacks()`.

Where things are written, in <run>/:
  train/, validation/  Keras' TensorBoard callback (keras_tensorboard.py): epoch scalars (loss,
                       accuracy, learning rate), weight histograms, the conceptual Keras graph.
  . (the run itself)   the other modules here: batch scalars, the op-level graph, Text, HParams,
                       Images, PR curves, and the test metrics.
To add a tab: a small module with a keras Callback that writes to `writer` (an events.RunStart
if it is written once, when the run starts), and one line in `callbacks()`.
"""

from __future__ import annotations

from pathlib import Path

import keras

from app.config import Config
from app.data import Images
from app.tabs import batch_scalars, hparams, images, keras_tensorboard, op_graph, pr_curves, text
from app.tabs.events import open_writer, write_test_metrics  # noqa: F401  (what train.py uses)
from app.validation import Validation


def callbacks(writer, run_dir: Path, config: Config, digits: Images, validation: Validation,
              first_session: bool, steps_per_execution: int) -> list[keras.callbacks.Callback]:
    """The TensorBoard callbacks of a run, in the order they must run (after `validation`)."""
    # Written once per run, when it starts (not again when it resumes).
    at_start = [
        text.ConfigAndModel(writer, config, digits),
        hparams.Hyperparameters(writer, config, digits, run_dir),
        op_graph.OpGraph(writer),
    ]
    return [
        *(at_start if first_session else []),
        # MNIST-style arrays are white on black: drawn inverted, like ink; pictures as they are.
        images.ConfusionAndMistakes(writer, validation, digits.x_test, digits.class_names,
                                    invert=digits.details.get("kind") != "pictures"),
        pr_curves.PRCurves(writer, validation, digits.class_names),
        batch_scalars.BatchScalars(writer, config.batch_log_every),
        keras_tensorboard.LiveTensorBoard(log_dir=str(run_dir), histogram_freq=1, write_graph=first_session,
                                          profile_batch=keras_tensorboard.profiled_calls(
                                              config.profile_range(), steps_per_execution)),
    ]
