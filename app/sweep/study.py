"""The Optuna study behind a sweep: its storage, sampler and pruner, and who runs which trial.

<log-dir>/sweeps/<name>/ holds the study: journal.log (Optuna's JournalStorage, made for several
processes sharing one file; `Journal` below keeps it readable after a full disk), sweep.json (the
parameter space the study was started with), the sweepers' lock files (leases.py) and summary.json.
With a PostgreSQL storage (database.py) the study and its space are in the database instead, and
the folder holds summary.json only. Trials are run folders under <log-dir>/fit.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState

from app import runs
from app.sweep import leases
from app.sweep.spec import Sweep, SweepError, check_same_space, shown_url, sweep_dir

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
STATE_NAMES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
               TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
OWNER = leases.OWNER  # the user attr naming the sweeper that runs a trial
SPACE = "space"  # the study's user attr (PostgreSQL): the parameter space it began with, as sweep.json
EXPORTED = "exported_epoch"  # the user attr: the trial's epoch whose model its run exported (the best)


def open_study(sweep: Sweep, log_dir: str) -> optuna.Study:
    """Create the study, or load it when another sweeper (or an earlier start) made it."""
    if sweep.storage is not None:
        return _open_in_database(sweep)
    folder = sweep_dir(log_dir, sweep.name)
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep prints its own lines
    with leases.claiming(folder):
        check_same_space(sweep, log_dir)
        if not (folder / "sweep.json").is_file():
            try:
                runs.write_json(folder / "sweep.json", {"space": sweep.space(), "file": sweep.source})
            except OSError as e:
                raise unwritable(folder / "sweep.json", e) from None
        storage = _storage(folder / "journal.log")
        return optuna.create_study(storage=storage, study_name=sweep.name, load_if_exists=True,
                                   direction=sweep.direction, sampler=_sampler(sweep),
                                   pruner=_pruner(sweep))


def _open_in_database(sweep: Sweep) -> optuna.Study:
    from app.sweep import database

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = database.storage(sweep.storage, sweep.heartbeat)
    with database.claiming(sweep):
        the_study = optuna.create_study(storage=storage, study_name=sweep.name, load_if_exists=True,
                                        direction=sweep.direction, sampler=_sampler(sweep),
                                        pruner=_pruner(sweep))
        space = the_study.user_attrs.get(SPACE)
        if space is None:
            the_study.set_user_attr(SPACE, {"space": sweep.space(), "file": sweep.source})
        elif space["space"] != sweep.space():
            raise SweepError(f"{sweep.source}: sweep {sweep.name!r} in the database "
                             f"{shown_url(sweep.storage)} was started with other parameters or objective; "
                             "give the sweep a new name: to start a new one, or restore its parameters to "
                             "continue it")
    return the_study


def new_sweeper(sweep: Sweep, log_dir: str):
    """This process as a sweeper of the study: a lock on one host, a heartbeat with PostgreSQL."""
    if sweep.storage is None:
        return leases.Sweeper(sweep_dir(log_dir, sweep.name))
    from app.sweep import database

    return database.Heartbeats(sweep)


def ask(the_study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():  # "Heartbeat of storage is supposed to be used with Study.optimize":
        warnings.simplefilter("ignore", UserWarning)  # the sweeper beats and reaps itself (database.py)
        return the_study.ask()


class Journal(JournalFileBackend):
    """Optuna's JournalFileBackend, whose appends are whole lines or nothing.

    Optuna appends a line under its lock and never looks back: a write cut short (a full disk, a
    sweeper killed mid-write) leaves part of a line, the next append glues its record onto it, and
    from then on no sweeper can load the study (a corrupt line in the middle). Here a failed append
    is cut back off, and a partial last line still there is cut off before anything else is
    written, when the study is opened and before every append: under Optuna's own lock, which
    every writer holds while it appends, so never while a write is under way. A partial line is a
    write that never completed: Optuna's reader skips it, so no finished trial is lost.
    """

    def __init__(self, path: Path):
        self.path = path
        self.lock = JournalFileSymlinkLock(str(path))  # Optuna's default lock, the one its writers take
        super().__init__(str(path), lock_obj=self.lock)
        with self._locked():
            self._cut_partial_line()

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        # As JournalFileBackend.append_logs writes them: one compact JSON record per line, fsynced.
        # BORROWED: app/borrowed.py checks that format against the installed Optuna.
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode()
        with self._locked():
            self._cut_partial_line()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                end = os.fstat(fd).st_size
                try:
                    left = memoryview(text)
                    while left:
                        left = left[os.write(fd, left):]
                except OSError as e:
                    with contextlib.suppress(OSError):  # else the next writer cuts it
                        os.ftruncate(fd, end)
                    raise unwritable(self.path, e) from None
                try:
                    # Whole lines by now, which other sweepers may have read: kept, even if unsynced.
                    os.fsync(fd)
                except OSError as e:
                    raise unwritable(self.path, e) from None
            finally:
                os.close(fd)

    @contextlib.contextmanager
    def _locked(self):
        self.lock.acquire()
        try:
            yield
        finally:
            self.lock.release()

    def _cut_partial_line(self) -> None:
        with open(self.path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0 or os.pread(f.fileno(), 1, size - 1) == b"\n":
                return
            end = size
            while end > 0:  # back to the last newline, a chunk at a time
                start = max(0, end - 65536)
                at = os.pread(f.fileno(), end - start, start).rfind(b"\n")
                if at >= 0:
                    end = start + at + 1
                    break
                end = start
            try:
                f.truncate(end)
                os.fsync(f.fileno())
            except OSError as e:
                raise unwritable(self.path, e) from None
        print(f"note: {self.path} ended in a write that never completed ({size - end} bytes, a full disk "
              "or a sweeper stopped mid-write); cut it off, every finished trial is kept",
              file=sys.stderr, flush=True)


def _storage(path: Path) -> JournalStorage:
    try:
        return JournalStorage(Journal(path))
    except ValueError:  # json.JSONDecodeError too: a corrupt line before the last
        with open(path, "rb") as f:
            number = next((n for n, line in enumerate(f, 1) if not _whole_record(line)), None)
        if number is None:
            raise
    raise SweepError(f"{path}: line {number} is not a whole record, so the study cannot be read (an older "
                     "version's journal after a full disk?); keep a copy, then delete that line and the "
                     f"rest to keep the trials before it, or move {path.parent} away to start afresh")


def _whole_record(line: bytes) -> bool:
    try:
        return line.endswith(b"\n") and isinstance(json.loads(line), dict)
    except ValueError:
        return False


def unwritable(path: Path, e: OSError) -> Exception:
    """The one line a sweeper ends with (exit 1) when the study cannot be written: a full disk, say."""
    from app.train import RunFailed  # app.train imports TensorFlow, which a sweeper has loaded already

    return RunFailed(f"cannot write {path} ({e.strerror or e}); the study keeps every finished trial, "
                     "with nothing half-written. Free space or fix the folder, then run the same command "
                     "again: an interrupted trial continues from its last completed epoch")


def _sampler(sweep: Sweep) -> optuna.samplers.BaseSampler:
    if sweep.sampler == "grid":
        # Concurrent sweepers may run a grid point twice (Optuna's GridSampler docs): asked for.
        return Grid({p.name: list(p.choices) for p in sweep.parameters})
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler()
    # TPE with Optuna 5's constant liar: running trials count as bad guesses, so parallel sweepers
    # spread out instead of all trying the same point. Random until a third of the trials (at
    # most 10, Optuna's default) have finished; no seed, or every sweeper would draw the same.
    return optuna.samplers.TPESampler(n_startup_trials=min(10, max(2, sweep.trials // 3)),
                                      constant_liar=True)


class Grid(optuna.samplers.GridSampler):
    """Optuna's grid, without its stop: when the grid is done, GridSampler.after_trial calls
    study.stop(), which raises outside study.optimize(), and the sweepers ask and tell. A sweep ends
    by its own count of finished trials instead, never more than the grid's points (spec.py).
    BORROWED: app/borrowed.py checks that after_trial still stops."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def _pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    pruning = sweep.pruning
    if pruning is None:
        return optuna.pruners.NopPruner()
    if pruning.pruner == "successive-halving":
        return EpochHalving(min_resource=pruning.min_epochs, reduction_factor=pruning.reduction_factor)
    # The median rule: stop a trial whose objective so far is worse than the median of the complete
    # trials at the same epoch, once startup_trials have completed.
    return optuna.pruners.MedianPruner(n_startup_trials=pruning.startup_trials,
                                       n_warmup_steps=pruning.warmup_epochs)


class EpochHalving(optuna.pruners.SuccessiveHalvingPruner):
    """Optuna's asynchronous successive halving, its rungs counted in epochs trained.

    At each rung (min_epochs, then reduction_factor times as many: 1, 3, 9 epochs by default) a
    trial goes on only if its objective there is among the best n // reduction_factor (at least the
    best one) of the n trials that have reached that rung, itself and pruned ones included: the
    first trial to reach a rung always goes on. Nothing waits for a trial to complete, so it prunes
    from the second trial's first epoch. Hyperband, its sibling, splits the trials into brackets
    compared only among themselves, too few each in a sweep of a dozen trials to prune much.

    A sweep reports epoch N as step N - 1 (Keras counts epochs from 0; optuna-dashboard and the
    studies of earlier versions read them so), while Optuna puts rung k at step min_resource x
    reduction_factor^k: read as they are, the first check would come after epoch 2, not 1. So the
    pruner sees each step as the epochs trained. BORROWED: FrozenTrial._trial_id (app/borrowed.py),
    where Optuna records the trial's rungs.
    """

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        trained = FrozenTrial(trial.number, trial.state, None, trial.datetime_start, trial.datetime_complete,
                              trial.params, trial.distributions, trial.user_attrs, trial.system_attrs,
                              {step + 1: v for step, v in trial.intermediate_values.items()}, trial._trial_id)
        return super().prune(study, trained)


def suggest(trial: optuna.Trial, sweep: Sweep) -> dict[str, Any]:
    """The trial's value of every parameter: drawn now, or the one it already has (a takeover)."""
    values = {}
    for p in sweep.parameters:
        if p.kind == "float":
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
        elif p.kind == "int":
            values[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log)
        else:
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
    return values


def next_trial(study: optuna.Study, sweeper, wanted: int) -> tuple[optuna.Trial | None, bool]:
    """(trial, done): an orphan to take over, else a new trial, else None while others finish theirs.

    done: the study already has `wanted` finished trials. `sweeper`: a leases.Sweeper, or a
    database.Heartbeats with PostgreSQL.
    """
    with sweeper.claiming():
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in FINISHED for t in trials)
        if finished >= wanted:
            return None, True
        running = [t for t in trials if t.state == TrialState.RUNNING]
        dead = sweeper.dead(running)
        orphan = next((t for t in running if t.number in dead), None)
        if orphan is not None:
            trial = optuna.Trial(study, orphan._trial_id)  # BORROWED: no public API (app/borrowed.py)
        elif finished + len(running) < wanted:
            trial = ask(study)
        else:
            return None, False
        sweeper.take(trial)
        return trial, False


def summary(study: optuna.Study, sweep: Sweep, sweeper, log_dir: str) -> dict[str, Any]:
    """Every trial of the study, for summary.json: number, state, parameters, value, run folder."""
    trials = []
    every = study.get_trials(deepcopy=False)
    dead = sweeper.dead(every)
    for t in every:
        state = STATE_NAMES.get(t.state, t.state.name.lower())
        if t.number in dead:
            state = "interrupted"  # its sweeper died; the next sweeper to start continues it
        trials.append({"number": t.number, "state": state, "params": t.params, "value": t.value,
                       "epochs_reported": len(t.intermediate_values),
                       "exported_epoch": t.user_attrs.get(EXPORTED),
                       "run": str(runs.fit_dir(log_dir) / sweep.run_name(t.number))})
    counts = {s: sum(t["state"] == s for t in trials) for s in ("complete", "pruned", "failed")}
    return {"sweep": sweep.name, "objective": {"metric": sweep.metric, "direction": sweep.direction},
            "trials_wanted": sweep.trials, **counts, "best": _best(trials, sweep), "trials": trials}


def ranked(trials: list[dict], sweep: Sweep) -> list[dict]:
    """Complete trials, best first."""
    done = [t for t in trials if t["state"] == "complete" and t["value"] is not None]
    return sorted(done, key=lambda t: t["value"], reverse=sweep.direction == "maximize")


def _best(trials: list[dict], sweep: Sweep) -> dict | None:
    best = ranked(trials, sweep)
    return best[0] if best else None


def write_summary(study: optuna.Study, sweep: Sweep, sweeper, log_dir: str) -> dict:
    folder = sweep_dir(log_dir, sweep.name)
    folder.mkdir(parents=True, exist_ok=True)
    with sweeper.claiming():  # one writer of summary.json (and its temporary file) at a time
        report = summary(study, sweep, sweeper, log_dir)
        try:
            runs.write_json(folder / "summary.json", report)
        except OSError as e:
            raise unwritable(folder / "summary.json", e) from None
    return report
