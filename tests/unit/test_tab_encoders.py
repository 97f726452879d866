"""The tabs' fast numpy encoders write exactly what TensorBoard's own summary functions write."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import events
from tensorboard.plugins.histogram import summary_v2 as histogram_summary
from tensorboard.plugins.pr_curve import summary as pr_summary

from app.tabs.keras_tensorboard import write_histogram
from app.tabs.pr_curves import write_pr_curves


def _written(directory, write) -> dict[str, np.ndarray]:
    writer = tf.summary.create_file_writer(str(directory))
    with writer.as_default(step=3):
        write()
    writer.close()
    run = events(directory)
    return {tag: tf.make_ndarray(run.Tensors(tag)[0].tensor_proto) for tag in run.Tags()["tensors"]}


@pytest.mark.parametrize("values", [
    np.random.default_rng(0).normal(size=(1600, 128)).astype(np.float32),  # a dense kernel
    np.zeros(128, np.float32),  # a bias before training: one value only
])
def test_histograms_match_tensorboards(tmp_path, values):
    ours = _written(tmp_path / "ours", lambda: write_histogram("w/histogram", values))
    theirs = histogram_summary.histogram_pb("w/histogram", values).value[0]
    np.testing.assert_allclose(ours["w/histogram"], tf.make_ndarray(theirs.tensor), rtol=1e-6)


def test_pr_curves_match_tensorboards(tmp_path):
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(10) * 0.3, size=2000).astype(np.float32)
    truth = rng.integers(0, 10, 2000)
    ours = _written(tmp_path, lambda: write_pr_curves(probs, truth, [str(c) for c in range(10)]))
    for c in range(10):
        theirs = pr_summary.pb(f"class_{c}", labels=truth == c, predictions=probs[:, c], num_thresholds=101)
        np.testing.assert_allclose(ours[f"class_{c}/pr_curves"], tf.make_ndarray(theirs.value[0].tensor),
                                   rtol=1e-6, err_msg=f"class {c}")
