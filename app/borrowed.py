"""Everything this project relies on that another project does not promise to keep: private members,
internal modules, and the wording or layout of things it reads. One table, one test.

Each entry names the package and the version it was checked against, what is relied on, where, and
what to re-check when an upgrade moves it. tests/unit/test_borrowed.py runs every entry's probe
against the installed versions and fails, naming the entry, when one no longer holds; it also shows
each probe failing on a renamed member. After an upgrade: re-read the code the failing entry names,
fix or drop it, then raise its version here (a version bump without a failure is also reported, as
the moment to re-read the adapters).

The probes import what they check, so nothing imports this module but the test, and the two places
that guard at run time (KERAS below).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import tempfile
from collections.abc import Callable
from importlib import import_module

# The versions every entry below was checked against (requirements*.txt pin the same).
KERAS = "3.15.1"
TENSORFLOW = "2.21.0"
TENSORBOARD = "2.21.0"
OPTUNA = "5.0.0"


@dataclasses.dataclass(frozen=True)
class Borrowed:
    package: str  # as pip names it
    checked_with: str
    what: str  # the member or behaviour relied on
    where: str  # the code that relies on it
    recheck: str  # what to do when it moved
    member: tuple[str, str] | None = None  # (module, dotted attribute) that must exist
    check: Callable[[], str | None] | None = None  # what else must hold: what no longer does, or None

    def problem(self) -> str | None:
        """What no longer holds of this entry with the installed packages, or None."""
        return (self.member and _missing(*self.member)) or (self.check and self.check()) or None


def _attribute(module: str, path: str):
    target = import_module(module)
    for name in path.split("."):
        target = getattr(target, name)
    return target


def _missing(module: str, path: str) -> str | None:
    try:
        _attribute(module, path)
    except (ImportError, AttributeError) as e:
        return f"{module}.{path} is gone ({e})"
    return None


def _source_says(module: str, path: str, *texts: str) -> Callable[[], str | None]:
    """A check that member `path` exists and its source still holds `texts` (the lines relied on)."""
    def check() -> str | None:
        missing = _missing(module, path)
        if missing:
            return missing
        absent = [text for text in texts if text not in inspect.getsource(_attribute(module, path))]
        return f"{module}.{path} no longer contains {absent}" if absent else None
    return check


def _keras_tensorboard_writers() -> str | None:
    import keras

    with tempfile.TemporaryDirectory() as folder:
        callback = keras.callbacks.TensorBoard(log_dir=folder)
        if not isinstance(vars(callback).get("_writers"), dict):
            return "keras.callbacks.TensorBoard() no longer sets a dict _writers"
    return None


def _keras_nan_message() -> str | None:
    import keras
    import numpy as np

    from app.train import KERAS_NAN_MESSAGE

    callback = keras.callbacks.TerminateOnNaN(raise_error=True)
    callback.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    try:
        callback.on_batch_end(0, {"loss": np.nan})
    except RuntimeError as e:
        return None if str(e).startswith(KERAS_NAN_MESSAGE) else f"its message is now {str(e)!r}"
    return "TerminateOnNaN(raise_error=True) no longer raises RuntimeError on a NaN loss"


def _keras_seed_state_names() -> str | None:
    import keras

    from app.checkpoints import SEED_STATE_SUFFIX

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5)])
    names = [v.path for v in model.variables]
    if not any(name.endswith(SEED_STATE_SUFFIX) for name in names):
        return f"a Dropout layer's variables are now {names}, none ending in {SEED_STATE_SUFFIX!r}"
    return None


def _optuna_trial_by_id() -> str | None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.ask()
    [frozen] = study.get_trials(deepcopy=False)
    trial_id = getattr(frozen, "_trial_id", None)
    if not isinstance(trial_id, int):
        return "FrozenTrial._trial_id is gone"
    trial = optuna.Trial(study, trial_id)
    return None if trial.number == frozen.number else "optuna.Trial(study, trial_id) is another trial"


def _optuna_heartbeat_tables() -> str | None:
    import optuna
    from optuna.storages._rdb import models

    if "record_heartbeat" not in vars(optuna.storages.RDBStorage):
        return "RDBStorage.record_heartbeat is gone"
    trials, beats = models.TrialModel.__table__, models.TrialHeartbeatModel.__table__
    if (trials.name, beats.name) != ("trials", "trial_heartbeats"):
        return f"its tables are now {trials.name} and {beats.name}"
    missing = ({"trial_id", "number", "study_id", "state"} - set(trials.c.keys())) | (
        {"trial_id", "heartbeat"} - set(beats.c.keys()))
    if missing:
        return f"its tables no longer have the columns {sorted(missing)}"
    if trials.c.state.type.enums[:1] != [optuna.trial.TrialState.RUNNING.name]:
        return f"trials.state now stores {trials.c.state.type.enums}"
    study = optuna.create_study()
    trial = optuna.Trial(study, study.ask()._trial_id)
    return None if trial._trial_id == study.get_trials()[0]._trial_id else "Trial._trial_id is another id"


def _optuna_halving_by_epochs() -> str | None:
    import optuna
    from optuna.trial import FrozenTrial, TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    judged = []
    for value in (0.9, 0.1):  # epoch 1 of a good and a bad trial, reported as step 0 as a sweep does
        trial = study.ask()
        trial.report(value, 0)
        t = study.get_trials(deepcopy=False)[-1]
        shifted = FrozenTrial(t.number, t.state, None, t.datetime_start, t.datetime_complete, t.params,
                              t.distributions, t.user_attrs, t.system_attrs, {1: value}, t._trial_id)
        judged.append((pruner.prune(study, t), pruner.prune(study, shifted)))
        if judged[-1][1]:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)
    # As given (step 0) no rung is reached; shifted (1 epoch trained) the bad trial is judged and stopped.
    return None if judged == [(False, False), (False, True)] else (
        f"SuccessiveHalvingPruner judged a good and a bad trial after epoch 1 as {judged} (as reported, "
        "shifted), not [(False, False), (False, True)]")


def _tensorboard_info_files() -> str | None:
    from tensorboard import manager

    from app.notebook import info_dir

    if manager._get_info_dir() != str(info_dir()):
        return f"its info folder is now {manager._get_info_dir()}, not {info_dir()}"
    if os.path.basename(manager._get_info_file_path()) != f"pid-{os.getpid()}.info":
        return f"its info files are now named like {manager._get_info_file_path()}"
    return None


ENTRIES = (
    # Keras' TensorBoard callback: app/tabs/keras_tensorboard.py (LiveTensorBoard).
    Borrowed("keras", KERAS, "TensorBoard._writers, a dict of the callback's summary writers",
             "app/tabs/keras_tensorboard.py: flushed at every epoch end, so validation curves do not lag",
             "find where Keras keeps its writers, or whether it flushes them all itself now",
             check=_keras_tensorboard_writers),
    Borrowed("keras", KERAS, "TensorBoard._train_writer, the writer of <run>/train",
             "app/tabs/keras_tensorboard.py: the histograms are written there",
             "find the train writer's new name",
             member=("keras.callbacks", "TensorBoard._train_writer")),
    Borrowed("keras", KERAS, "TensorBoard._log_weights(self, epoch), called by on_epoch_end",
             "app/tabs/keras_tensorboard.py: replaced by numpy bucketing (48 ms an epoch against 3)",
             "check how Keras writes histograms now; drop the override if it is fast",
             check=_source_says("keras.callbacks", "TensorBoard.on_epoch_end", "self._log_weights(epoch)"),
             member=("keras.callbacks", "TensorBoard._log_weights")),
    Borrowed("keras", KERAS, "TensorBoard.on_train_batch_end writes batch scalars only from `logs`",
             "app/tabs/keras_tensorboard.py: called without logs, to skip two empty summary calls a step",
             "check that withholding the logs still writes nothing and costs nothing",
             check=_source_says("keras.callbacks", "TensorBoard.on_train_batch_end",
                                "if isinstance(logs, dict):")),
    # Keras' TensorFlow trainer under MultiWorkerMirroredStrategy: app/scale/keras_multiworker.py.
    Borrowed("keras", KERAS, "TensorFlowTrainer._maybe_symbolic_build reducing the first batch",
             "app/scale/keras_multiworker.py: replaced (keras-team/keras#20585)",
             "check whether keras#20585 is fixed; if so, drop the correction",
             check=_source_says("keras.src.backend.tensorflow.trainer",
                                "TensorFlowTrainer._maybe_symbolic_build",
                                "self.distribute_strategy.reduce("),
             member=("keras.src.backend.tensorflow.trainer", "TensorFlowTrainer._maybe_symbolic_build")),
    Borrowed("keras", KERAS, "trainer.reduce_per_replica averaging logs with axis=0",
             "app/scale/keras_multiworker.py: replaced for multi-worker strategies",
             "check whether keras#20585 is fixed; if so, drop the correction",
             check=_source_says("keras.src.backend.tensorflow.trainer", "reduce_per_replica",
                                'strategy.reduce("MEAN", v, axis=0)'),
             member=("keras.src.backend.tensorflow.trainer", "reduce_per_replica")),
    Borrowed("keras", KERAS, "trainer._collective_all_reduce_multi_worker(strategy)",
             "app/scale/keras_multiworker.py: tells a multi-worker strategy", "find its replacement",
             member=("keras.src.backend.tensorflow.trainer", "_collective_all_reduce_multi_worker")),
    Borrowed("keras", KERAS, "keras.src.tree.map_structure",
             "app/scale/keras_multiworker.py: Keras' own nest, as the code it corrects uses",
             "use what the corrected Keras code uses now",
             member=("keras.src.tree", "map_structure")),
    Borrowed("keras", KERAS, "TerminateOnNaN(raise_error=True) raising RuntimeError('NaN or Inf loss ...')",
             "app/train.py: KERAS_NAN_MESSAGE tells a diverged run from any other RuntimeError",
             "update KERAS_NAN_MESSAGE to the new wording", check=_keras_nan_message),
    Borrowed("keras", KERAS, "seed generator variables named .../seed_generator_state",
             "app/checkpoints.py: dropout's random stream, saved with every checkpoint so a resumed run "
             "drops the same units", "find the seed generators' variables by their new name",
             check=_keras_seed_state_names),
    # Optuna: taking over a running trial of a dead sweeper.
    Borrowed("optuna", OPTUNA, "FrozenTrial._trial_id, and optuna.Trial(study, trial_id)",
             "app/sweep/study.py: a live sweeper takes over a dead one's RUNNING trial (no public API does)",
             "find the public way to get a Trial of a running trial, or the new private name",
             check=_optuna_trial_by_id),
    Borrowed("optuna", OPTUNA, "SuccessiveHalvingPruner.prune judges the FrozenTrial it is given by that "
             "trial's own steps (last_step, intermediate_values) and records its rungs on its _trial_id",
             "app/sweep/study.py: EpochHalving hands it a copy whose steps count epochs trained, so that the "
             "first rung comes after epoch 1", "shift the steps where the pruner now reads them (a sweep "
             "reports epoch N as step N - 1)", check=_optuna_halving_by_epochs),
    Borrowed("optuna", OPTUNA, "JournalFileBackend's format: one compact JSON record a line, appended under "
             "its lock; read_logs skips a last line without its newline",
             "app/sweep/study.py: Journal appends the same lines itself and cuts off a partial last one",
             "re-read JournalFileBackend.append_logs and read_logs, and write what they write now",
             check=_source_says("optuna.storages.journal._file", "JournalFileBackend.append_logs",
                                'json.dumps(log, separators=(",", ":"))', "get_lock_file(self._lock)")),
    Borrowed("optuna", OPTUNA, "RDBStorage's tables trials and trial_heartbeats (names, columns, state as "
             "the enum's name), Trial._trial_id, RDBStorage.record_heartbeat(trial_id) outside optimize()",
             "app/sweep/database.py: which running trials have no beat within the grace period, in one "
             "query; a sweeper beats for its trial itself", "re-read RDBStorage._get_stale_trial_ids and "
             "record_heartbeat, and query what they query now", check=_optuna_heartbeat_tables),
    Borrowed("optuna", OPTUNA, "GridSampler.after_trial calls study.stop() when the grid is done",
             "app/sweep/study.py: Grid overrides it (stop() raises outside optimize())",
             "check whether after_trial still stops; if not, the override can go",
             check=_source_says("optuna.samplers", "GridSampler.after_trial", "study.stop()"),
             member=("optuna.samplers", "GridSampler.after_trial")),
    # TensorBoard.
    Borrowed("tensorboard", TENSORBOARD, "manager's info files: $TMPDIR/.tensorboard-info/pid-<pid>.info",
             "app/notebook.py: forgets the files of dead TensorBoards, which %tensorboard would reuse "
             "(tensorboard#2057)", "point info_dir() at the new place, or drop it if #2057 is fixed",
             check=_tensorboard_info_files),
    Borrowed("tensorboard", TENSORBOARD, "main_lib.global_init(), what tensorboard/main.py calls first",
             "app/tensorboard_server.py: TensorBoard's own main, with the shared-answers server",
             "re-read tensorboard/main.py and do what it does now",
             member=("tensorboard.main_lib", "global_init")),
    Borrowed("tensorboard", TENSORBOARD, "program.WerkzeugServer, the server it wraps",
             "app/tensorboard_server.py: subclassed for the shared answers and TCP_NODELAY",
             "re-read tensorboard/program.py's server classes",
             member=("tensorboard.program", "WerkzeugServer")),
    Borrowed("tensorboard", TENSORBOARD, "http_util._ALLOWS_GZIP_PATTERN, its rule for gzipping an answer",
             "app/tensorboard_server.py: which requests share a gzipped answer",
             "re-read http_util.Respond's gzip decision",
             check=_source_says("tensorboard.backend.http_util", "Respond", "_ALLOWS_GZIP_PATTERN.search(")),
    Borrowed("tensorboard", TENSORBOARD, "the request headers its answers depend on: client feature flags",
             "app/tensorboard_server.py: VARY, the headers that make requests distinct",
             "add what TensorBoard's backend reads of a request now to VARY",
             check=_source_says("tensorboard.backend.client_feature_flags", "ClientFeatureFlagsMiddleware",
                                "HTTP_X_TENSORBOARD_FEATURE_FLAGS")),
    # TensorFlow's profiler (the benchmarks only).
    Borrowed("tensorflow-cpu", TENSORFLOW,
             "tensorflow.python.profiler.internal._pywrap_profiler_plugin.xspace_to_tools_data",
             "tools/step_profile.py: the Profile tab's TensorFlow Stats table, read from a trace",
             "find what TensorBoard's profile plugin (xprof) converts traces with now",
             member=("tensorflow.python.profiler.internal._pywrap_profiler_plugin", "xspace_to_tools_data")),
)
