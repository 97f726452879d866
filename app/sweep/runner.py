"""Run trials of a sweep until its study has enough finished ones: the loop above train(config).

Each trial is a normal run, trained by `train()` with one extra callback that reports the
objective to Optuna after every epoch (and stops the run early when the pruner says so). A trial
taken over from a dead sweeper continues its own run folder with --resume auto, from its last
checkpoint: the same trial, not a second one. With a PostgreSQL study the sweeper beats for its trial
while it trains, and leaves a trial that another sweeper took over while its beats were held up.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import sys
import time

import keras
import optuna
import tensorflow as tf
from optuna.trial import TrialState

from app import checkpoints, data, runs
from app.config import Config, as_flags
from app.sweep import study
from app.sweep.spec import Pruning, Sweep, shown_url, sweep_dir
from app.tabs import hparams
from app.train import Diverged, Interrupted, signals_raise_interrupted, train

WAIT_SECONDS = 2  # how often a sweeper with nothing to do looks again (to take over an orphan)


class TakenOver(Exception):
    """Another sweeper took this sweeper's trial over (PostgreSQL: its beats stopped for too long)."""


def run_sweep(sweep: Sweep, digits: data.Images | None, threads: int | None = None) -> int:
    """Run trials until the study has enough; `digits`, loaded and checked already, serves every
    trial, but for a folder of pictures: each trial loads its own (from the cache), since its seed,
    size or channels may hold out or decode other pictures."""
    if digits is not None and digits.details.get("kind") == "pictures":
        digits = None
    if threads:  # before TensorFlow runs its first op, or it is too late to size its pools
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    log_dir = Config(**sweep.fixed).log_dir
    the_study = study.open_study(sweep, log_dir)
    sweeper = study.new_sweeper(sweep, log_dir)
    where = f"the database {shown_url(sweep.storage)}" if sweep.storage else sweep_dir(log_dir, sweep.name)
    print(f"sweep {sweep.name}: {sweep.trials} trials of {', '.join(p.name for p in sweep.parameters)}, "
          f"{sweep.direction} {sweep.metric}; study in {where}; sweeper {sweeper.id}", flush=True)
    waiting = False
    try:
        with signals_raise_interrupted():
            while True:
                trial, done = study.next_trial(the_study, sweeper, sweep.trials)
                if done:
                    break
                if trial is None:
                    if not waiting:
                        print("waiting: the remaining trials run in other sweepers (this one takes "
                              "over any whose sweeper stops)", flush=True)
                    waiting = True
                    time.sleep(WAIT_SECONDS)
                    continue
                waiting = False
                try:
                    with sweeper.beating(trial):
                        _run_trial(the_study, trial, sweep, digits, log_dir, sweeper)
                except TakenOver:
                    print(f"trial {trial.number}: another sweeper took it over while this one's heartbeats "
                          f"were held up (over {sweep.heartbeat.grace_period} s); left to it", flush=True)
                study.write_summary(the_study, sweep, sweeper, log_dir)
                keras.backend.clear_session()  # each trial's graphs go with it
    except Interrupted as stop:
        print(f"{stop.signal_name}: sweeper stopped; run the same command to continue the sweep: "
              "an interrupted trial continues from its last completed epoch", file=sys.stderr, flush=True)
        return stop.exit_code
    finally:
        # The lease first: a trial this sweeper leaves unfinished is then `interrupted` in the summary.
        sweeper.close()
        report = study.write_summary(the_study, sweep, sweeper, log_dir)
    print(table(report, sweep), flush=True)
    return 0


def _run_trial(the_study: optuna.Study, trial: optuna.Trial, sweep: Sweep, digits, log_dir: str,
               sweeper) -> None:
    params = study.suggest(trial, sweep)
    run_dir = runs.fit_dir(log_dir) / sweep.run_name(trial.number)
    continued = runs.continuing(log_dir, run_dir.name, "auto")
    # The run's own resume rules: a flag that changed a kept setting is refused, as for a run.
    config = runs.settled_config(sweep.trial_settings(params, trial.number))
    reporter = ReportEachEpoch(trial, sweep.metric, prune=sweep.pruning is not None, epochs=config.epochs,
                               owns=sweeper.owns, rule=(sweep.pruning or Pruning()).rule())
    if continued:
        saved = checkpoints.latest(run_dir)
        if saved is not None and reporter.catch_up(saved.state.history):
            # It was pruned before its sweeper died: evaluate and export it as it stands, no more epochs.
            config = dataclasses.replace(config, epochs=saved.epochs_done)
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
    print(f"trial {trial.number} ({shown}): {'continuing' if continued else 'starting'} run {run_dir}",
          flush=True)
    try:
        metrics = train(config, digits, extra_callbacks=[reporter])
    except Diverged as e:
        print(f"trial {trial.number} failed: {e}", file=sys.stderr, flush=True)
        if not sweeper.owns(trial):
            raise TakenOver() from None
        hparams.end_session(run_dir, "failed", checkpoints.epochs_saved(run_dir))
        the_study.tell(trial, state=TrialState.FAIL)
        return
    outcome = "pruned" if reporter.pruned else "complete"
    if not sweeper.owns(trial):
        raise TakenOver()
    # The tab first: a sweeper killed in between leaves the trial running, and its successor
    # evaluates the run again and tells the study.
    hparams.end_session(run_dir, outcome, metrics["epochs_completed"])
    # The objective as the exported model has it: the best epoch's, by --monitor.
    exported, epochs = metrics["exported_epoch"], metrics["epochs_completed"]
    value = metrics["history"][sweep.metric][exported - 1]
    trial.set_user_attr(study.EXPORTED, exported)
    if reporter.pruned:
        the_study.tell(trial, state=TrialState.PRUNED)
    else:
        the_study.tell(trial, value)
    print(f"trial {trial.number} {outcome} after {epochs} epoch{'s' * (epochs != 1)}: "
          f"{sweep.metric} {value:.4f}", flush=True)


class ReportEachEpoch(keras.callbacks.Callback):
    """Report the objective to Optuna after each epoch; stop the run when the pruner says so.

    Runs after the checkpoint callback, so an epoch is saved before it is reported: a sweeper
    killed in between leaves an epoch that `catch_up` reports on the takeover.
    """

    def __init__(self, trial: optuna.Trial, metric: str, prune: bool, epochs: int, owns=lambda trial: True,
                 rule: str = Pruning().rule()):
        super().__init__()
        self.trial, self.metric, self.prune, self.epochs = trial, metric, prune, epochs
        self.rule = rule  # why the pruner stops a trial, for the line that says so
        self.owns = owns  # whether the trial is still this sweeper's (database.Heartbeats.owns)
        self.pruned = False

    def catch_up(self, history: dict[str, list[float]]) -> bool:
        """Report the epochs a dead sweeper saved but did not report; whether to prune right away."""
        reported = next(t for t in self.trial.study.get_trials(deepcopy=False)
                        if t.number == self.trial.number).intermediate_values
        for epoch, value in enumerate(history.get(self.metric, [])):
            if epoch not in reported and math.isfinite(value):
                self.trial.report(value, epoch)
        self.pruned = self.prune and bool(history.get(self.metric)) and self.trial.should_prune()
        return self.pruned

    def on_epoch_begin(self, epoch, logs=None):
        if not self.owns(self.trial):
            raise TakenOver()

    def on_epoch_end(self, epoch, logs=None):
        if not self.owns(self.trial):
            raise TakenOver()
        value = (logs or {}).get(self.metric)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), epoch)
        # After the last epoch there is nothing left to save by stopping: the trial is complete.
        if self.prune and epoch + 1 < self.epochs and self.trial.should_prune():
            print(f"trial {self.trial.number}: pruned after epoch {epoch + 1} ({self.metric} {value:.4f} "
                  f"{self.rule})", flush=True)
            self.pruned = True
            self.model.stop_training = True


def table(report: dict, sweep: Sweep, top: int = 5) -> str:
    """The best trials, ranked, and the python -m app command that repeats the best one."""
    counts = ", ".join(f"{report[s]} {s}" for s in ("complete", "pruned", "failed"))
    total = len(report["trials"])
    lines = [f"sweep {sweep.name}: {total} trial{'s' * (total != 1)} ({counts})"]
    best = study.ranked(report["trials"], sweep)[:top]
    if not best:
        return "\n".join([*lines, "no trial completed"])
    names = [p.name for p in sweep.parameters]
    header = ["rank", "trial", sweep.metric, *names, "run"]
    rows = [[str(i), str(t["number"]), f"{t['value']:.4f}", *(_shown(t["params"][n]) for n in names),
             t["run"]] for i, t in enumerate(best, 1)]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(cell.rjust(w) if c < len(row) - 1 else cell
                               for c, (cell, w) in enumerate(zip(row, widths, strict=True))))
    settings = {**sweep.fixed, **best[0]["params"]}
    lines.append("best: " + command(settings))
    return "\n".join(lines)


def command(settings: dict) -> str:
    """`python -m app` with these settings as flags."""
    return shlex.join(["python", "-m", "app", *as_flags(settings)])


def _shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
