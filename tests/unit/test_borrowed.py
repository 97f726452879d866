"""Everything the project relies on that other projects do not promise (app/borrowed.py) still holds
with the installed versions; and each check fails when what it checks is renamed or reworded."""

from __future__ import annotations

import importlib.metadata

import pytest

from app import borrowed

IDS = [f"{e.package}: {e.what[:60]}" for e in borrowed.ENTRIES]


@pytest.mark.parametrize("entry", borrowed.ENTRIES, ids=IDS)
def test_it_still_holds(entry):
    problem = entry.problem()
    installed = importlib.metadata.version(entry.package)
    assert problem is None, (f"{entry.package} {installed} (checked with {entry.checked_with}): {problem}. "
                             f"{entry.where}. Re-check: {entry.recheck}")


@pytest.mark.parametrize("package", sorted({e.package for e in borrowed.ENTRIES}))
def test_each_package_is_the_version_it_was_checked_with(package):
    # Not a failure by itself, but the moment to re-read the code every entry of the package names;
    # then raise its version in app/borrowed.py.
    [checked] = {e.checked_with for e in borrowed.ENTRIES if e.package == package}
    installed = importlib.metadata.version(package)
    assert installed == checked, (f"{package} {installed} is installed, app/borrowed.py was checked with "
                                  f"{checked}: re-read " + "; ".join(sorted({e.where.split(':')[0] for e in
                                                                            borrowed.ENTRIES
                                                                            if e.package == package})))


MEMBERS = [e for e in borrowed.ENTRIES if e.member]


@pytest.mark.parametrize("entry", MEMBERS, ids=[f"{e.member[0]}.{e.member[1]}" for e in MEMBERS])
def test_a_renamed_member_is_reported(entry, monkeypatch):
    module, path = entry.member
    owner = borrowed._attribute(module, path.rpartition(".")[0]) if "." in path else \
        importlib.import_module(module)
    monkeypatch.delattr(owner, path.rpartition(".")[2])
    problem = entry.problem()
    assert problem is not None and path.rpartition(".")[2] in problem, problem


def test_reworded_and_moved_behaviour_is_reported(monkeypatch):
    import keras
    from tensorboard import manager

    from app import train

    by_check = {e.check.__name__: e for e in borrowed.ENTRIES if e.check}
    monkeypatch.setattr(train, "KERAS_NAN_MESSAGE", "Loss is NaN")
    assert "its message is now" in by_check["_keras_nan_message"].problem()
    monkeypatch.setattr(manager, "_get_info_dir", lambda: "/elsewhere")
    assert "its info folder is now /elsewhere" in by_check["_tensorboard_info_files"].problem()
    monkeypatch.setattr(keras.callbacks.TensorBoard, "on_epoch_end", lambda self, epoch, logs=None: None)
    [log_weights] = [e for e in borrowed.ENTRIES if e.member and e.member[1] == "TensorBoard._log_weights"]
    assert "no longer contains" in log_weights.problem()


def test_the_code_marks_what_it_borrows_and_every_entry_names_such_code():
    from helpers import ROOT

    marked = {str(p.relative_to(ROOT)) for folder in ("app", "tools") for p in (ROOT / folder).rglob("*.py")
              if "BORROWED" in p.read_text() and p.name != "borrowed.py"}
    assert marked == {e.where.split(":")[0] for e in borrowed.ENTRIES}
