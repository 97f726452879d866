"""Graphs tab, op level: Keras 3 writes only its conceptual graph; this is the forward pass's."""

from __future__ import annotations

import tensorflow as tf

from app.tabs.events import RunStart


class OpGraph(RunStart):
    def write(self) -> None:
        model = self.model
        forward = tf.function(lambda images: model(images, training=False))
        spec = tf.TensorSpec(model.inputs[0].shape, tf.float32)  # the input the model was built for
        tf.summary.graph(forward.get_concrete_function(spec).graph)
