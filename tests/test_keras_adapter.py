"""The one place that touches Keras' private members still finds them as it expects.

app/tabs/keras_tensorboard.py overrides private parts of keras.callbacks.TensorBoard. If a Keras
upgrade renames or reshapes any of them, these tests fail and say which, with both versions.
"""

from __future__ import annotations

import inspect

import keras
import pytest

from app.tabs import keras_tensorboard

WHY = (f"Keras {keras.__version__} changed keras.callbacks.TensorBoard, which app/tabs/keras_tensorboard.py "
       f"adapts (checked with Keras {keras_tensorboard.CHECKED_WITH}); review the adapter")


@pytest.mark.parametrize("member", keras_tensorboard.RELIES_ON)
def test_every_private_member_the_adapter_relies_on_still_exists(member, tmp_path):
    callback = keras.callbacks.TensorBoard(log_dir=str(tmp_path))
    # A class member (method, property) or an attribute the constructor sets.
    assert hasattr(type(callback), member) or member in vars(callback), f"{WHY}: {member} is gone"


def test_the_members_still_have_the_shapes_the_adapter_assumes():
    callback = keras.callbacks.TensorBoard
    source = inspect.getsource(callback)
    assert list(inspect.signature(callback._log_weights).parameters) == ["self", "epoch"], WHY
    # on_epoch_end still writes the histograms through _log_weights...
    assert "self._log_weights(epoch)" in inspect.getsource(callback.on_epoch_end), WHY
    # ...the writers live in the _writers dict, and batch scalars are written only from the logs given.
    assert "self._writers = {}" in source, WHY
    batch_end = inspect.getsource(callback.on_train_batch_end)
    assert "if isinstance(logs, dict):" in batch_end, WHY


def test_the_adapter_is_the_version_it_was_checked_with():
    # Not a failure of the adapter by itself, but the moment to re-read it: update CHECKED_WITH
    # once the tests above pass with the new version and the adapter has been reviewed.
    assert keras.__version__ == keras_tensorboard.CHECKED_WITH, WHY
