"""The study's journal (Optuna's JournalFileBackend) after a write that never completed: a full disk,
or a sweeper killed mid-line. The next writer cuts the partial line, under Optuna's own lock, and
no finished trial is lost; a failed append leaves nothing half-written."""

from __future__ import annotations

import json
import os
import threading
import time

import helpers
import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from app.sweep import spec, study


def _whole_lines(journal) -> bool:
    """Every line a complete JSON record, ending in a newline: what Optuna's reader needs."""
    text = journal.read_bytes()
    return text.endswith(b"\n") and all(json.loads(line) for line in text.splitlines())

SWEEP = """\
name: s
trials: 3
sampler: random
parameters:
  learning_rate: {low: 0.001, high: 0.01, log: true}
fixed:
  epochs: 1
"""


def _sweep(tmp_path, log_dir) -> spec.Sweep:
    (tmp_path / "s.yaml").write_text(SWEEP)
    return spec.load(str(tmp_path / "s.yaml"), {"log_dir": str(log_dir)})


def _finish(the_study: optuna.Study, sweep: spec.Sweep, value: float) -> None:
    trial = the_study.ask()
    study.suggest(trial, sweep)
    trial.report(value, 0)
    the_study.tell(trial, value)


def _values_in_a_fresh_storage(journal) -> list[float]:
    """What any other process reads: Optuna's own backend, its own lock, no repair of ours."""
    storage = JournalStorage(JournalFileBackend(str(journal)))
    loaded = optuna.load_study(study_name="s", storage=storage)
    return [t.value for t in loaded.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]


def test_a_line_cut_by_hand_is_repaired_by_the_next_sweeper_and_no_finished_trial_is_lost(tmp_path):
    logs = tmp_path / "logs"
    sweep = _sweep(tmp_path, logs)
    the_study = study.open_study(sweep, str(logs))
    _finish(the_study, sweep, 0.5)
    _finish(the_study, sweep, 0.6)
    journal = spec.sweep_dir(str(logs), "s") / "journal.log"
    whole = journal.read_bytes()
    last = whole.splitlines(keepends=True)[-1]
    journal.write_bytes(whole + last[: len(last) // 2])  # a write that never completed

    again = study.open_study(sweep, str(logs))  # the next sweeper (opening appends a record)
    assert journal.read_bytes().startswith(whole) and _whole_lines(journal)
    _finish(again, sweep, 0.7)
    assert _values_in_a_fresh_storage(journal) == [0.5, 0.6, 0.7]


def test_a_writer_cuts_a_partial_line_left_after_it_opened_the_study(tmp_path):
    """A sweeper killed mid-write while another runs: the live one's next append repairs first."""
    logs = tmp_path / "logs"
    sweep = _sweep(tmp_path, logs)
    the_study = study.open_study(sweep, str(logs))
    _finish(the_study, sweep, 0.5)
    journal = spec.sweep_dir(str(logs), "s") / "journal.log"
    with open(journal, "ab") as f:
        f.write(b'{"op_code":4,"worker_id":"dead')
    _finish(the_study, sweep, 0.6)
    assert _values_in_a_fresh_storage(journal) == [0.5, 0.6]


def test_the_repair_waits_for_optunas_lock(tmp_path):
    """Never while another process is writing: the cut happens under the lock every append takes."""
    logs = tmp_path / "logs"
    sweep = _sweep(tmp_path, logs)
    the_study = study.open_study(sweep, str(logs))
    _finish(the_study, sweep, 0.5)
    journal = spec.sweep_dir(str(logs), "s") / "journal.log"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code":5,"wor')
    lock = optuna.storages.journal.JournalFileSymlinkLock(str(journal))  # what a writer holds
    lock.acquire()
    opened = threading.Thread(target=study.open_study, args=(sweep, str(logs)))
    try:
        opened.start()
        time.sleep(0.5)
        assert journal.read_bytes() == whole + b'{"op_code":5,"wor'  # a write in progress: untouched
    finally:
        lock.release()
    opened.join(10)
    assert not opened.is_alive() and journal.read_bytes().startswith(whole) and _whole_lines(journal)


def test_a_journal_corrupt_in_the_middle_is_refused_in_one_line(tmp_path):
    """What older versions left after a full disk: a partial line with the next record glued on."""
    logs = tmp_path / "logs"
    sweep = _sweep(tmp_path, logs)
    _finish(study.open_study(sweep, str(logs)), sweep, 0.5)
    journal = spec.sweep_dir(str(logs), "s") / "journal.log"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:2], lines[2][:10] + lines[3], *lines[4:]]))
    with pytest.raises(spec.SweepError) as refused:
        study.open_study(sweep, str(logs))
    message = str(refused.value)
    assert "\n" not in message and len(message) < 400
    assert f"{journal}: line 3 is not a whole record" in message


# --- a real full disk ------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    with helpers.small_disk(tmp_path / "disk", "1m") as disk:
        yield disk


def test_a_full_disk_fails_in_one_line_half_writes_nothing_and_the_next_sweeper_goes_on(tmp_path, small_disk):
    """What the sweeper ends with: a RunFailed, which python -m app.sweep prints in one line, exit 1."""
    from app.train import RunFailed  # imports TensorFlow (in this process only, as other unit tests do)

    logs = small_disk / "logs"
    sweep = _sweep(tmp_path, logs)
    the_study = study.open_study(sweep, str(logs))
    _finish(the_study, sweep, 0.5)
    _finish(the_study, sweep, 0.6)
    journal = spec.sweep_dir(str(logs), "s") / "journal.log"
    before = journal.read_bytes()
    assert len(before) % os.statvfs(small_disk).f_bsize, "room left in the journal's last page"
    helpers.fill(small_disk)
    # A record longer than a page: the kernel writes what fits in the last page, then ENOSPC.
    with pytest.raises(RunFailed) as failed:
        the_study.set_user_attr("note", "x" * 10_000)
    message = str(failed.value)
    assert "\n" not in message and f"cannot write {journal} (No space left on device)" in message
    assert "run the same command again" in message
    assert journal.read_bytes() == before  # nothing half-written

    (small_disk / "filler").unlink()
    again = study.open_study(sweep, str(logs))  # the next sweeper, once there is room
    _finish(again, sweep, 0.7)
    assert _values_in_a_fresh_storage(journal) == [0.5, 0.6, 0.7]


def test_a_partial_line_a_full_disk_left_is_repaired_by_the_next_sweeper(tmp_path, small_disk):
    """Optuna's own append, cut by a real full disk (a sweeper of an older version, or killed before its
    cut): the next sweeper repairs the journal and loses no finished trial."""
    logs = small_disk / "logs"
    sweep = _sweep(tmp_path, logs)
    the_study = study.open_study(sweep, str(logs))
    _finish(the_study, sweep, 0.5)
    _finish(the_study, sweep, 0.6)
    journal = spec.sweep_dir(str(logs), "s") / "journal.log"
    before = journal.read_bytes()
    helpers.fill(small_disk)
    with pytest.raises(OSError):
        JournalFileBackend(str(journal)).append_logs([{"op_code": 2, "note": "x" * 10_000}])
    assert len(journal.read_bytes()) > len(before)  # the partial line

    (small_disk / "filler").unlink()
    again = study.open_study(sweep, str(logs))
    assert journal.read_bytes().startswith(before) and _whole_lines(journal)
    _finish(again, sweep, 0.7)
    assert _values_in_a_fresh_storage(journal) == [0.5, 0.6, 0.7]


def test_a_sweeper_starting_on_a_full_disk_fails_in_one_line(tmp_path, small_disk):
    from app.train import RunFailed

    logs = small_disk / "logs"
    sweep = _sweep(tmp_path, logs)
    helpers.fill(small_disk)
    with pytest.raises(RunFailed) as failed:
        study.open_study(sweep, str(logs))
    assert "(No space left on device); the study keeps every finished trial" in str(failed.value)
