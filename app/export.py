"""The exported model: a SavedModel that takes pictures as a user has them and answers with class names.

Two signatures, both answering `probabilities` (N, classes) float32, `class` (N,) the predicted
class's name and `class_index` (N,) int64:
  serving_default  `pixels`: uint8 (N, height, width, channels) at the training size, 0-255, as the
                   data arrays hold them; the scaling to [0, 1] is inside.
  images           `images`: string (N,), each an encoded picture (PNG, JPEG, GIF, BMP, WebP): what
                   TensorFlow Serving's REST API receives as {"b64": "..."}. Decoded and resized inside,
                   by `decoded()`, the same function the picture cache decodes training pictures with.
The class names, the picture size and the channels are kept in the SavedModel too (`class_names`,
`image_size`, `channels`, read by app/predict.py), so a client needs nothing but the export.
"""

from __future__ import annotations

import tensorflow as tf

PIXELS, IMAGES = "serving_default", "images"


def decoded(encoded: tf.Tensor, size: tuple[int, int], channels: int) -> tf.Tensor:
    """One encoded picture as uint8 (height, width, channels): decoded (a GIF's first frame, colour
    or grey converted to `channels`), then resized if it is another size, with TensorFlow's bilinear
    resize with antialiasing, rounded. Training, predict and the served model all go through here."""
    image = tf.io.decode_image(encoded, channels=channels, expand_animations=False, dtype=tf.uint8)

    def resized():
        scaled = tf.image.resize(image, size, method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(scaled), 0, 255), tf.uint8)

    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.constant(size)))
    return tf.ensure_shape(tf.cond(same, lambda: image, resized), (*size, channels))


class Exported(tf.Module):
    def __init__(self, model, class_names: list[str], size: tuple[int, int], channels: int):
        super().__init__()
        self.model = model
        self.class_names = tf.Variable(class_names, trainable=False, dtype=tf.string, name="class_names")
        self.image_size = tf.Variable(list(size), trainable=False, dtype=tf.int64, name="image_size")
        self.channels = tf.Variable(channels, trainable=False, dtype=tf.int64, name="channels")
        self._size, self._channels = size, channels
        pixels = tf.TensorSpec([None, *size, channels], tf.uint8, name="pixels")
        self.pixels = tf.function(self._from_pixels, input_signature=[pixels])
        self.images = tf.function(self._from_images, input_signature=[tf.TensorSpec([None], tf.string,
                                                                                     name="images")])

    def _from_pixels(self, pixels):
        probabilities = self.model(tf.cast(pixels, tf.float32) / 255.0, training=False)
        index = tf.argmax(probabilities, axis=1)
        return {"probabilities": tf.cast(probabilities, tf.float32),
                "class": tf.gather(self.class_names, index), "class_index": index}

    def _from_images(self, images):
        pixels = tf.map_fn(lambda encoded: decoded(encoded, self._size, self._channels), images,
                           fn_output_signature=tf.TensorSpec((*self._size, self._channels), tf.uint8))
        return self._from_pixels(pixels)


def save(model, class_names: list[str], size: tuple[int, int], channels: int, path: str) -> None:
    """Write the SavedModel of `model` to `path` (which must not exist yet)."""
    exported = Exported(model, class_names, size, channels)
    tf.saved_model.save(exported, path, signatures={PIXELS: exported.pixels, IMAGES: exported.images})
