"""Train a Keras CNN on MNIST with live TensorBoard logging; see README.md."""
