"""train(config) -> metrics: one run, from the data to an exported model.

Reads top to bottom: data, device, strategy, run folder, model (new or resumed), callbacks,
fit, test evaluation, export, metrics.json. Under a multi-worker strategy every worker runs all
of it, but only the one that `scale.writes` (the chief) touches the run folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import signal
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf

from app import best_epoch, checkpoints, data, durable, export, metric_lines, pipeline, runs, tabs
from app.config import Config
from app.model import build_model
from app.scale import devices, distribution
from app.validation import Validation


class RunFailed(Exception):
    """Training could not go on (a full disk, say); the run is resumable from its last checkpoint."""


class Diverged(RunFailed):
    """The loss became NaN or infinite: the settings are at fault, not the machine."""


class Interrupted(Exception):
    """Training was stopped by a signal; everything up to the last completed epoch is saved."""

    def __init__(self, signal_name: str, exit_code: int):
        super().__init__(signal_name)
        self.signal_name, self.exit_code = signal_name, exit_code


def train(config: Config, digits: data.Images | None = None, extra_callbacks: list | None = None) -> dict:
    """Train one run; `extra_callbacks` (a sweep's reporter, the benchmark's clock) run after the
    checkpoint."""
    digits = digits or data.load_for(config)
    # What auto resolved to, written into config.json: a resumed run keeps the size and colour.
    config = dataclasses.replace(config, image_size=digits.image_size, channels=str(digits.channels))
    plan = devices.plan(config.precision)  # before the strategy: it may set GPU memory growth
    scale = distribution.scale(config.strategy)
    # Every worker reads the checkpoint only once all have started: by then no process of an
    # earlier attempt can still be writing one, so all restore the same.
    scale.wait_for_peers()
    continuing = runs.continuing(config.log_dir, config.run_name, config.resume)
    checkpoint = checkpoints.latest(runs.fit_dir(config.log_dir) / config.run_name) if continuing else None
    epochs_done = checkpoint.epochs_done if checkpoint else 0
    _check_workers_agree(scale, epochs_done, config.run_name)
    plan = _kept_policy(plan, config, checkpoint)
    if scale.name != "one-device":
        # keras#19246: several steps per call fail under tf.distribute (and Keras turns XLA off there).
        plan = dataclasses.replace(plan, steps_per_execution=1, jit_compile=False)

    # --- the run folder: claimed and written by one process only -------------------------------
    if not scale.writes:
        run_dir = runs.fit_dir(config.log_dir) / config.run_name  # the chief's; never written here
    else:
        if continuing:
            run_dir = runs.existing(config.log_dir, config.run_name)
            record = data_record(digits, continuing, run_dir)  # refused before anything is written
            checkpoints.tidy(run_dir)
        else:
            run_dir = runs.claim(config.log_dir, config.run_name)
            record = data_record(digits, continuing, run_dir)
        try:
            durable.write_text(run_dir / "config.json", config.to_json())
            runs.write_json(run_dir / "data.json", record)
        except OSError as e:  # a full disk, say: a new run leaves nothing, so the same command starts it
            kept = f"{run_dir.name} keeps its checkpoint after epoch {epochs_done}" if continuing else \
                f"nothing was kept of run {run_dir.name}"
            if not continuing:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise RunFailed(f"cannot write {e.filename or run_dir} ({e.strerror or e}); {kept}. Free space "
                            "or fix the folder, then run the same command again") from None
    run_name = run_dir.name

    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}: {plan.description}; "
          f"{scale.description()}", flush=True)
    print(describe(digits), flush=True)
    if plan.warning:
        print(f"warning: {plan.warning}", file=sys.stderr, flush=True)
    keras.mixed_precision.set_global_policy(plan.policy)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    # --- model: new, or restored from this run's last checkpoint -----------------------------
    batches, steps_per_epoch, shuffle_each_epoch = pipeline.training_batches(
        digits.x_train, digits.y_train, config.batch_size, config.seed, plan.steps_per_execution)
    with scale.strategy.scope():
        model = build_model(digits.x_train.shape[1:], len(digits.class_names))
        model.compile(
            optimizer=keras.optimizers.Adam(_learning_rate(config, steps_per_epoch)),
            # Integer labels with the sparse loss: the same cross-entropy as one-hot labels.
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=plan.jit_compile,
            steps_per_execution=plan.steps_per_execution,
        )
        if checkpoint:
            checkpoint.restore(model)  # every worker the same checkpoint, from the shared folder
    if checkpoint:
        state = checkpoint.state
        print(f"resuming {run_name} after epoch {epochs_done} of {config.epochs}", flush=True)
    else:
        state = checkpoints.RunState(policy=plan.policy)

    # --- callbacks, in the order Keras runs them at each epoch's end ------------------------------
    # 1. the epoch's shuffle (at its start) and validation, which adds val_* to the logs all others read;
    # 2. the TensorBoard tabs, and TerminateOnNaN, which stops a NaN loss before a checkpoint keeps it;
    # 3. the best epoch (on every worker: each restores it at the end), then the checkpoint, which
    #    saves it with the complete logs; the checkpoint times the epoch, the tabs' writing included;
    # 4. what reads a saved epoch: the metric line (Katib may stop the run once it reads it) and
    #    `extra_callbacks` (a sweep's pruning report, which a takeover must find saved).
    validation = Validation(digits.x_test, digits.y_test)
    callbacks = [shuffle_each_epoch, validation]
    writer = None
    if config.summaries and scale.writes:
        writer = tabs.open_writer(run_dir, epochs_done, state.steps)
        callbacks += tabs.callbacks(writer, run_dir, config, digits, validation,
                                    first_session=epochs_done == 0,
                                    steps_per_execution=plan.steps_per_execution)
    callbacks.append(keras.callbacks.TerminateOnNaN(raise_error=True))
    best = best_epoch.BestEpoch(state, config.monitor, config.early_stopping,
                                best_epoch.saved_weights(checkpoint.path) if checkpoint else None)
    callbacks.append(best)
    if scale.writes:
        callbacks.append(checkpoints.EveryEpoch(run_dir, state, also=best.write))
    if not sys.stdout.isatty():
        # One name=value line per epoch for log collectors (Katib's, see app/metric_lines.py). On a
        # terminal the progress bar shows the same numbers.
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: print(
            metric_lines.line(epoch + 1, config.epochs, logs or {}), flush=True)))
    callbacks += extra_callbacks or []

    # --- fit, test, export ------------------------------------------------------------------
    fit_started = time.perf_counter()
    with _explained_failures(run_dir, model, scale):
        try:
            if epochs_done < config.epochs:
                with signals_raise_interrupted():
                    # No steps_per_epoch: each epoch iterates `batches`, which hold one epoch.
                    model.fit(batches, epochs=config.epochs, initial_epoch=epochs_done,
                              callbacks=callbacks, shuffle=False,
                              # the progress bar on a terminal; one line per epoch in logs and CI
                              verbose=1 if sys.stdout.isatty() else 2)
            else:
                print(f"{run_name} already has {epochs_done} epochs; evaluating and exporting it again")
        finally:
            if writer is not None:
                writer.flush()
        fit_seconds = time.perf_counter() - fit_started
        ended = best.last or epochs_done
        exported = best.restore(model, ended)  # the best epoch's weights, tested and exported
        if exported != ended:
            print(f"{run_name}: testing and exporting epoch {exported}, the best by {config.monitor} "
                  f"({state.best_value:.4f}), not the last ({ended})", flush=True)

        test_loss, test_accuracy = model.evaluate(pipeline.eval_batches(digits.x_test, digits.y_test),
                                                  verbose=0)
        seconds = state.epoch_seconds
        metrics = {
            "test_loss": float(test_loss),
            "test_accuracy": float(test_accuracy),
            "epochs_completed": len(seconds),
            "exported_epoch": exported,  # the best by --monitor, whose model is tested and exported
            "best": {"epoch": state.best_epoch, config.monitor: state.best_value},
            "epoch_seconds": [round(s, 3) for s in seconds],
            "train_images_per_second": round(len(digits.x_train) * len(seconds) / max(sum(seconds), 1e-9), 1),
            "fit_seconds": round(fit_seconds, 2),  # this session only, when resumed
            "train_images": len(digits.x_train),
            "test_images": len(digits.x_test),
            "device": plan.description,
            "strategy": scale.name,
            "replicas": scale.replicas,
            "history": state.history,
        }
        if not scale.writes:
            print(f"{scale.task} done: test accuracy {test_accuracy:.2%}; the chief writes run {run_dir}",
                  flush=True)
            return metrics
        _save_model(model, digits, run_dir)
        runs.write_json(run_dir / "metrics.json", metrics)
        if writer is not None:
            tabs.write_test_metrics(writer, metrics, len(seconds))
            writer.close()
    print(f"run {run_dir}: test accuracy {test_accuracy:.2%}, test loss {test_loss:.4f}", flush=True)
    return metrics


def _kept_policy(here: devices.Plan, config: Config,
                 checkpoint: checkpoints.Checkpoint | None) -> devices.Plan:
    """The device plan in the dtype policy the run started in, wherever it resumes.

    `--precision auto` resolves differently on other hardware (float32, bfloat16, float16), but
    the optimizer state only loads into the same policy (mixed float16 wraps Adam in a
    LossScaleOptimizer; Keras would only warn and start the optimizer afresh), and the curves
    would change character mid-run. So the policy is saved with every checkpoint and kept.
    """
    saved = checkpoint.state.policy if checkpoint else None
    if saved is None or saved == here.policy:
        return here
    print(f"note: {config.run_name} keeps training in {saved}, the dtype policy it started in "
          f"(--precision {config.precision} gives {here.policy} on this machine); start a new run "
          "to train in that", file=sys.stderr, flush=True)
    return devices.plan(saved)


@contextlib.contextmanager
def _explained_failures(run_dir: Path, model: keras.Model, scale: distribution.Scale):
    """What stops a run becomes one message: what is saved, and how to go on from there."""
    name = run_dir.name
    try:
        yield
    except tf.errors.OpError as e:
        if scale.name != "multi-worker":
            raise
        # A peer died or became unreachable: collective ops fail on the others within seconds.
        # TensorFlow's message holds the op's trace; the cause is the line that says what aborted it.
        lines = [line.strip() for line in (e.message or str(e)).splitlines()]
        cause = next((line for line in lines if "aborted by" in line), lines[-1])[:200]
        saved = checkpoints.epochs_saved(run_dir)
        raise RunFailed(f"{scale.task} lost its peers ({type(e).__name__}: {cause}); run {name} is "
                        f"saved after epoch {saved}. Start every worker again with the "
                        "same command: --resume auto continues it") from None
    except Interrupted as stop:
        saved = checkpoints.epochs_saved(run_dir)
        print(f"\n{stop.signal_name}: stopped; {name} is saved after epoch {saved}. "
              f"Continue with: --run-name {name} --resume", file=sys.stderr, flush=True)
        raise
    except RuntimeError as e:
        if not str(e).startswith(KERAS_NAN_MESSAGE):  # anything but TerminateOnNaN(raise_error=True)
            raise
        step, saved = int(model.optimizer.iterations.numpy()), checkpoints.epochs_saved(run_dir)
        raise Diverged(f"the loss became NaN or infinite at step {step}: training diverged; {name} keeps "
                        f"its checkpoint after epoch {saved}. Lower --learning-rate and "
                        "start a new run") from None
    except OSError as e:  # a full disk, a log folder gone read-only or away
        saved = checkpoints.epochs_saved(run_dir)
        raise RunFailed(f"cannot write {e.filename or run_dir} ({e.strerror or e}); {name} keeps its "
                        f"checkpoint after epoch {saved}. Free space or fix the folder, "
                        f"then continue with --run-name {name} --resume") from None


# How keras.callbacks.TerminateOnNaN(raise_error=True) words its RuntimeError. BORROWED: app/borrowed.py
# checks it against the installed Keras.
KERAS_NAN_MESSAGE = "NaN or Inf loss encountered"


def _check_workers_agree(scale: distribution.Scale, epochs_done: int, run_name: str) -> None:
    """Every worker must resume from the same checkpoint, or they would train different epochs."""
    seen = scale.epochs_everywhere(epochs_done)
    if len({epochs for _, epochs in seen}) > 1:
        where = ", ".join(
            f"{epochs} on {task}" if i else f"after epoch {epochs} on {task}"
            for i, (task, epochs) in enumerate(seen)
        )
        raise RunFailed(
            f"the workers see different checkpoints of run {run_name} ({where}): the logs "
            'volume must show every worker the same files (docs/scaling.md, "What the logs '
            'volume must guarantee"); nothing was trained. Start every worker again with the '
            "same command once they see the same"
        )


def _learning_rate(config: Config, steps_per_epoch: int):
    if config.lr_schedule == "constant":
        return config.learning_rate
    # Cosine decay to zero over the whole run: large steps early, fine ones at the end, which
    # is what lets larger batches (fewer steps) match the accuracy of batch 32.
    return keras.optimizers.schedules.CosineDecay(config.learning_rate, config.epochs * steps_per_epoch)


def _save_model(model: keras.Model, digits: data.Images, run_dir: Path) -> None:
    """model.keras for Keras, saved_model/ for python -m app.predict and TensorFlow Serving (app/export.py);
    each replaces the previous one whole, synced (app/durable.py)."""
    tmp = run_dir / ".tmp-model.keras"
    model.save(tmp)
    durable.replace_file(tmp, run_dir / "model.keras")
    tmp_dir = run_dir / ".tmp-saved_model"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    export.save(model, digits.class_names, digits.x_train.shape[1:3], digits.channels, str(tmp_dir))
    durable.replace_folder(tmp_dir, run_dir / "saved_model")


def describe(digits: data.Images) -> str:
    """The data in one line: where from, the classes, how many pictures in each split, their size."""
    counts = zip(digits.class_names, digits.counts("train"), strict=True)
    classes = ", ".join(f"{name}: {count:,}" for name, count in counts)
    classes = classes if len(classes) <= 200 else classes[:199] + "…"
    held = digits.details.get("validation_split")
    test = (f"{len(digits.y_test):,} held out for validation ({held:g} of each class, by seed "
            f"{digits.details['split_seed']})" if held else f"{len(digits.y_test):,} for validation")
    skipped = len(digits.details.get("skipped", []))
    return (f"data: {digits.source}: {len(digits.class_names)} classes ({classes}); {len(digits.y_train):,} "
            f"training pictures, {test}; {digits.image_size}, {digits.channels} channel(s)"
            + (f"; {skipped} unreadable pictures left out" if skipped else ""))


def data_record(digits: data.Images, continuing: bool, run_dir: Path) -> dict:
    """data.json: what the run trains on. A resumed run of a folder of pictures must hold out the
    very pictures it held out when it began: else it says so and stops, before it trains."""
    record = {"source": digits.source, "image_size": digits.image_size, "channels": digits.channels,
              "classes": digits.class_names, "train_images": digits.counts("train"),
              "validation_images": digits.counts("test"), **digits.details}
    saved = run_dir / "data.json"
    if continuing and saved.is_file():
        before = json.loads(saved.read_text()).get("validation_files")
        if before is not None and before != record.get("validation_files"):
            raise data.DataError(f"{digits.source}: the pictures changed since run {run_dir.name} began, so "
                                 "its validation pictures would change too; resume it on the pictures it "
                                 "began with, or start a new run")
    return record


@contextlib.contextmanager
def signals_raise_interrupted():
    """Turn SIGTERM (docker stop) and SIGINT (Ctrl-C) into `Interrupted`, raised between steps.

    Python runs signal handlers between bytecodes, so this lands within one training step; the
    last completed epoch is already on disk, and the `finally` blocks flush the event files.
    """
    def handler(signum, frame):
        name = signal.Signals(signum).name
        raise Interrupted(name, 128 + signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
