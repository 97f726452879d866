"""The CNN of the original description, layer for layer; only its input shape and its number of
outputs follow the data. Nothing else lives here."""

from __future__ import annotations

import keras
from keras import layers


def build_model(input_shape: tuple[int, int, int] = (28, 28, 1), num_classes: int = 10) -> keras.Sequential:
    # Layers are named so that every weight has a distinct, readable tag in TensorBoard
    # ("conv1/kernel", "dense/bias", ...) instead of "conv2d_1/kernel".
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, name="image"),
            layers.Conv2D(32, (3, 3), activation="relu", name="conv1"),
            layers.MaxPooling2D((2, 2), name="pool1"),
            layers.Conv2D(64, (3, 3), activation="relu", name="conv2"),
            layers.MaxPooling2D((2, 2), name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(128, activation="relu", name="dense"),
            layers.Dropout(0.5, name="dropout"),
            # float32 softmax even under mixed precision: probabilities in float16 lose the
            # small values that cross-entropy and PR curves depend on.
            layers.Dense(num_classes, activation="softmax", dtype="float32", name="output"),
        ],
        name="mnist_cnn",
    )
