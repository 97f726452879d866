"""What a power cut must not undo: a run's config.json, data.json and metrics.json, and its exports,
are synced before they are renamed into place, and an export replaces the previous one with no moment
when neither is there. Checked on the real calls, recorded as they happen (a power cut cannot be)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from app import durable
from app.data import Images

# An untrained model's export: its answers do not matter here, only how its files reach the disk.
PICTURES = Images(
    np.zeros((1, 28, 28, 1), np.uint8),
    np.zeros(1, np.uint8),
    np.zeros((1, 28, 28, 1), np.uint8),
    np.zeros(1, np.uint8),
    "none",
    [str(d) for d in range(10)],
)


def opened(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.fixture
def calls(monkeypatch):
    """Every fsync (by path), rename and replace (by target), in order, each still done for real."""
    log = []
    for name in ("fsync", "rename", "replace"):
        real = getattr(os, name)

        def recorded(*args, _name=name, _real=real):
            log.append((_name, opened(args[0]) if _name == "fsync" else str(args[1])))
            return _real(*args)

        monkeypatch.setattr(os, name, recorded)
    return log


def test_a_run_file_is_synced_then_renamed_then_its_folder_synced(tmp_path, calls):
    target = tmp_path / "config.json"
    durable.write_text(target, '{"epochs": 10}\n')
    assert target.read_text() == '{"epochs": 10}\n' and os.stat(target).st_mode & 0o777 == 0o644 & ~umask()
    assert calls == [
        ("fsync", str(tmp_path / ".config.json.tmp")),
        ("replace", str(target)),
        ("fsync", str(tmp_path)),
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.fixture(scope="module")
def model():
    import keras

    from app.model import build_model

    keras.utils.set_random_seed(1)
    return build_model((28, 28, 1), 10)


def test_an_export_replaces_the_previous_one_which_stays_until_the_new_one_is_in_place(
    tmp_path, model, monkeypatch
):
    from app import train

    train._save_model(model, PICTURES, tmp_path)
    first = (tmp_path / "saved_model" / "saved_model.pb").stat().st_ino

    # After every step of the second save, a complete export and model.keras are in place.
    seen = []

    def check(name, real):
        def step(*args, **kwargs):
            result = real(*args, **kwargs)
            seen.append(name)
            assert (tmp_path / "saved_model" / "saved_model.pb").is_file(), f"no export after {name}"
            assert (tmp_path / "model.keras").is_file(), f"no model.keras after {name}"
            return result

        return step

    monkeypatch.setattr(shutil, "rmtree", check("rmtree", shutil.rmtree))
    monkeypatch.setattr(os, "rename", check("rename", os.rename))
    monkeypatch.setattr(os, "replace", check("replace", os.replace))
    train._save_model(model, PICTURES, tmp_path)
    assert "rmtree" in seen and (tmp_path / "saved_model" / "saved_model.pb").stat().st_ino != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "saved_model"]


def test_the_export_and_model_keras_are_synced_before_they_are_renamed_into_place(tmp_path, model, calls):
    from app import train

    train._save_model(model, PICTURES, tmp_path)
    synced = [path for name, path in calls if name == "fsync"]
    moved = [i for i, (name, _) in enumerate(calls) if name != "fsync"]
    before_first_move = {path for name, path in calls[: moved[0]] if name == "fsync"}
    assert any(p.endswith("model.keras") for p in before_first_move), calls
    saved_model_files = {str(p) for p in Path(tmp_path / "saved_model").rglob("*") if p.is_file()}
    tmp_names = {
        p.replace(str(tmp_path / "saved_model"), str(tmp_path / ".tmp-saved_model"))
        for p in saved_model_files
    }
    assert tmp_names <= set(synced), sorted(tmp_names - set(synced))
    assert synced[-1] == str(tmp_path)  # the folder, after the last rename


def test_where_folders_cannot_be_swapped_the_next_writer_puts_back_an_export_a_crash_left_aside(
    tmp_path, monkeypatch
):
    from app import durable

    monkeypatch.setattr(durable, "_renameat2", None)  # as on NFS, which has no RENAME_EXCHANGE
    final = tmp_path / "saved_model"
    for version in ("1", "2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "saved_model.pb").write_text(version)
    durable.replace_folder(tmp_path / "1", final)
    real_rename = os.rename

    def crash_after_moving_the_old_aside(src, dst):
        real_rename(src, dst)
        if Path(dst).name.startswith(".old-"):
            raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(os, "rename", crash_after_moving_the_old_aside)
    with pytest.raises(KeyboardInterrupt):
        durable.replace_folder(tmp_path / "2", final)
    assert not final.exists()  # the moment the swap avoids
    monkeypatch.setattr(os, "rename", real_rename)
    durable.recover_folder(final)  # what the next replace_folder does first
    assert (final / "saved_model.pb").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "saved_model"]
