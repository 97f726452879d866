"""Images tab: the validation confusion matrix and the most confident mistakes, every epoch.

Drawn from the predictions that `Validation` already made, so they cost no extra pass; the
pictures themselves are drawn by drawing.py, in their colours and proportions, with the class names.
"""

from __future__ import annotations

import io

import keras
import numpy as np
import tensorflow as tf
from PIL import Image
from tensorboard.plugins.image import metadata as image_metadata

from app.tabs import drawing
from app.validation import Validation

MISTAKES_SHOWN = 24


class ConfusionAndMistakes(keras.callbacks.Callback):
    def __init__(self, writer, validation: Validation, x_val: np.ndarray, class_names: list[str],
                 invert: bool):
        super().__init__()
        self.writer, self.validation = writer, validation
        self.x_val, self.class_names, self.invert = x_val, class_names, invert

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
            write_png(
                "confusion_matrix",
                drawing.confusion_matrix(matrix, self.class_names,
                                         f"epoch {epoch + 1} · validation accuracy {accuracy:.2%}"),
                "Validation set: true class (rows) against predicted class (columns).")
            write_png(
                "misclassified",
                drawing.picture_grid(np.asarray(self.x_val[wrong]), captions,
                                     f"epoch {epoch + 1} · {int((predicted != truth).sum())} mistakes, "
                                     "the most confident first", invert=self.invert),
                "Validation images the model got wrong, most confident mistakes first.")
        self.writer.flush()


def write_png(tag: str, rgb: np.ndarray, description: str) -> None:
    """What tf.summary.image writes, with the PNG made by Pillow at its fastest setting (a third
    of the time of TensorFlow's encoder, for pictures of flat colours that compress well anyway)."""
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG", compress_level=1)
    height, width = rgb.shape[:2]
    metadata = image_metadata.create_summary_metadata(display_name=None, description=description)
    tf.summary.write(tag, tf.constant([str(width), str(height), png.getvalue()]),
                     metadata=metadata.SerializeToString())
