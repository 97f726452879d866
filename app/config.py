"""Every setting of a run, declared once: its type, default, flag help and whether a resume may change it.

The command line (`python -m app --help`), the validation, the resume rules, the HParams tab and
the flag table in docs/training.md are all derived from the declarations below, so a new setting
is one `setting(...)` line plus its use. The config is saved as config.json in the run folder; a
resumed run reads it back from there, so a run is always continued with the settings it began with.

`python -m app.config` prints the flag table of docs/training.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import typing
from typing import Any

DATASETS = ("mnist", "fashion_mnist")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker")
RESUMES = ("no", "yes", "auto")
MONITORS = ("val_loss", "val_accuracy")
CHANNELS = ("auto", "1", "3")
IMAGE_SIZE = re.compile(r"([1-9][0-9]{0,3})x([1-9][0-9]{0,3})")
# A run name becomes one folder under <log-dir>/fit: no separators, no "..", nothing hidden.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class ConfigError(Exception):
    """A flag has a bad value; the message names the flag and what it accepts."""


def setting(default, help: str, *, group: str, metavar: str | None = None, choices: tuple = (),
            minimum: int | None = None, check=None, shown_default: str | None = None,
            kept_on_resume: bool = False, hparam: bool = False, flag: bool = True, bare: str | None = None):
    """One setting. `check(value)` returns what is wrong with a value, or None.

    bare: the value of the flag given without one (`--resume` means `--resume yes`).
    kept_on_resume: the setting shapes the trained model, so a resumed run must keep it, or its
    curves would silently mix two experiments. hparam: shown in TensorBoard's HParams tab.
    flag: False for settings only code sets (the benchmark's baseline).
    """
    return dataclasses.field(default=default, metadata=dict(
        help=help, group=group, metavar=metavar, choices=choices, minimum=minimum, check=check,
        shown_default=shown_default, kept_on_resume=kept_on_resume, hparam=hparam, flag=flag, bare=bare))


def _learning_rate_problem(value: float) -> str | None:
    return None if value > 0 and math.isfinite(value) else "must be a positive number"


def _seed_problem(value: int) -> str | None:
    return None if 0 <= value < 2**31 else f"must be between 0 and {2**31 - 1}"


def _run_name_problem(value: str | None) -> str | None:
    if value is None or RUN_NAME.fullmatch(value):
        return None
    return ("is not a plain folder name; use letters, digits, '.', '_' and '-' (up to 100), "
            "starting with a letter or digit")


def _image_size_problem(value: str) -> str | None:
    if value == "auto" or IMAGE_SIZE.fullmatch(value):
        return None
    return "must be auto or HEIGHTxWIDTH in pixels, e.g. 64x64 (each 1 to 9999)"


def _fraction_problem(value: float) -> str | None:
    return None if 0 < value < 1 else "must be a fraction between 0 and 1, e.g. 0.2"


def _profile_problem(value: str) -> str | None:
    try:
        _profile_range(value)
    except ValueError:
        return "must be START,END with 0 < START <= END, or 0 for off"
    return None


@dataclasses.dataclass(frozen=True)
class Config:
    # Training. The CNN, adam and 10 epochs are the original description's; the batch is 8 times
    # the original's 32 for speed, and a larger learning rate decayed to zero (cosine) makes up for
    # the fewer steps: measured with `make bench`, see docs/speed.md.
    epochs: int = setting(10, "epochs to train; with --resume, the new total", group="training",
                          metavar="N", minimum=1, hparam=True)
    batch_size: int = setting(256, "images per training step", group="training", metavar="N", minimum=1,
                              kept_on_resume=True, hparam=True)
    learning_rate: float = setting(0.005, "Adam's initial learning rate", group="training", metavar="LR",
                                   check=_learning_rate_problem, kept_on_resume=True, hparam=True)
    lr_schedule: str = setting("cosine", "cosine: decay the learning rate to zero over the run; "
                               "constant: keep it", group="training", choices=SCHEDULES,
                               kept_on_resume=True, hparam=True)
    precision: str = setting("auto", "auto: mixed precision where the hardware gains from it (float16 on "
                             "GPUs with tensor cores, compute capability 7.0 and up; bfloat16 on CPUs "
                             "with AVX512-BF16 or AMX), else float32", group="training",
                             choices=PRECISIONS, kept_on_resume=True)
    strategy: str = setting("auto", "tf.distribute strategy: multi-worker when TF_CONFIG names several "
                            "tasks, mirrored over all GPUs when there are several, else one device; "
                            "--batch-size stays the global batch, so scale it (and --learning-rate with "
                            "it) by the number of replicas to keep each replica's batch",
                            group="training", choices=STRATEGIES)
    early_stopping: int = setting(0, "stop the run once --monitor has not improved for PATIENCE epochs; 0 "
                                  "trains all --epochs. Either way the model tested and exported is the "
                                  "best epoch's", group="training", metavar="PATIENCE", minimum=0)
    monitor: str = setting("val_loss", "the metric that picks the best epoch (the one exported) and that "
                           "--early-stopping watches", group="training", choices=MONITORS,
                           kept_on_resume=True)
    seed: int = setting(42, "seed for weights, shuffling and dropout; the same seed gives the same "
                        "result on the same machine (on a GPU, with --deterministic)", group="training",
                        metavar="N", check=_seed_problem, kept_on_resume=True, hparam=True)
    deterministic: bool = setting(False, "deterministic GPU kernels "
                                  "(tf.config.experimental.enable_op_determinism): the same seed then "
                                  "gives the same result on a GPU too, at some cost in speed; CPU "
                                  "results repeat without it", group="training", shown_default="off")

    # Data: keras.datasets by name, or offline from a file or folder (which wins when given).
    dataset: str = setting("mnist", "the keras.datasets set to download once and cache in $KERAS_HOME",
                           group="data", choices=DATASETS, kept_on_resume=True, hparam=True)
    data: str | None = setting(None, "train offline from a folder of your own pictures (one subfolder per "
                               "class, see docs/data.md), an .npz (x_train, y_train, x_test, y_test) or a "
                               "folder of the four MNIST IDX files, gzipped or not", group="data",
                               metavar="PATH", shown_default="download --dataset")
    # A folder of pictures: the size and colour they are brought to, and the validation set.
    image_size: str = setting("auto", "resize the pictures to HEIGHTxWIDTH (other aspect ratios are "
                              "stretched); auto: the training pictures' most common size, scaled down to "
                              "at most 128 on its longer side. The model's Dense layer grows with it "
                              "(docs/training.md#the-model)", group="data", metavar="HxW",
                              check=_image_size_problem, kept_on_resume=True, hparam=True)
    channels: str = setting("auto", "1 (grey) or 3 (colour); auto: 3 when any picture has colour",
                            group="data", choices=CHANNELS, kept_on_resume=True, hparam=True)
    validation_split: float = setting(0.2, "a folder of class folders alone (no train/ and test/): the "
                                      "share of each class held out as the validation and test set, "
                                      "chosen by --seed", group="data", metavar="FRACTION",
                                      check=_fraction_problem, kept_on_resume=True)
    skip_bad_images: bool = setting(False, "leave out pictures that cannot be read or decoded, and say "
                                    "how many, instead of refusing the folder", group="data",
                                    shown_default="off")

    # Where the run goes: <log_dir>/fit/<run_name>, a timestamp unless named.
    log_dir: str = setting("logs", "runs go to DIR/fit/RUN_NAME", group="runs and TensorBoard",
                           metavar="DIR")
    run_name: str | None = setting(None, "the run's folder name (of two runs started in one second, "
                                   "the second gets -2)", group="runs and TensorBoard", metavar="NAME",
                                   check=_run_name_problem, shown_default="the start time, YYYYMMDD-HHMMSS")
    resume: str = setting("no", "yes (or bare --resume): continue run --run-name from its last completed "
                          "epoch; auto: continue it if it exists, else start it, so the same command "
                          "serves a first start and every restart", group="runs and TensorBoard",
                          choices=RESUMES, bare="yes")

    # TensorBoard extras on top of Keras' callback.
    batch_log_every: int = setting(20, "log batch-level loss and accuracy every N steps",
                                   group="runs and TensorBoard", metavar="N", minimum=1)
    profile_batches: str = setting("0", "profile these training batches for TensorBoard's Profile tab, "
                                   "0 for off", group="runs and TensorBoard", metavar="START,END",
                                   check=_profile_problem, shown_default="0 (off)")
    summaries: bool = setting(True, "False writes no TensorBoard data at all (the benchmark's baseline)",
                              group="runs and TensorBoard", flag=False)

    # Set by python -m app.sweep for its trials (docs/sweeps.md): which sweep and trial a run is,
    # and which settings that sweep searches (shown first in the HParams tab).
    sweep: str | None = setting(None, "the sweep this run is a trial of", group="sweeps", flag=False,
                                hparam=True)
    trial: int | None = setting(None, "the trial's number in its sweep", group="sweeps", flag=False,
                                hparam=True)
    swept: list[str] = setting((), "the settings its sweep searches", group="sweeps", flag=False)

    def validate(self) -> Config:
        for field in dataclasses.fields(self):
            value, meta = getattr(self, field.name), field.metadata
            problem = None
            if meta["choices"] and value not in meta["choices"]:
                problem = f"must be one of {', '.join(meta['choices'])}"
            elif meta["minimum"] is not None and value < meta["minimum"]:
                problem = "must be a positive whole number" if meta["minimum"] == 1 else \
                    f"must be at least {meta['minimum']}"
            elif meta["check"]:
                problem = meta["check"](value)
            if problem:
                raise ConfigError(f"{flag(field)} {problem} (got {value!r})")
        if self.resume != "no" and self.run_name is None:
            raise ConfigError("--resume needs --run-name NAME: the run to continue "
                              "(its folder under <log-dir>/fit)")
        return self

    def profile_range(self) -> tuple[int, int] | None:
        """`profile_batches` as (first, last) batch, or None when profiling is off."""
        return _profile_range(self.profile_batches)

    def hparams(self) -> dict[str, Any]:
        """The settings marked hparam=True, for TensorBoard's HParams tab."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata["hparam"] and getattr(self, f.name) is not None}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"


def _profile_range(text: str) -> tuple[int, int] | None:
    parts = text.split(",")
    if len(parts) > 2:
        raise ValueError(text)
    first, last = int(parts[0]), int(parts[-1])
    if (first, last) == (0, 0):
        return None
    if not 0 < first <= last:
        raise ValueError(text)
    return first, last


# What each annotation a setting may have means on a command line and in a sweep file; any other
# (a Path, say) is refused when this module is imported, rather than quietly parsed as text.
_KINDS = {int: int, float: float, bool: bool, str: str, str | None: str, int | None: int, list[str]: list}


def _declared_kinds() -> dict[str, type]:
    kinds = {}
    for name, annotation in typing.get_type_hints(Config).items():
        if annotation not in _KINDS:
            raise TypeError(f"setting {name} is declared {annotation}; app/config.py knows how to read only "
                            f"{', '.join(map(str, _KINDS))}: add the new kind to _KINDS and to the readers")
        kinds[name] = _KINDS[annotation]
    return kinds


KINDS = _declared_kinds()


def kind(field: dataclasses.Field) -> type:
    """The Python type a setting's value has: int, float, bool, str, or list (set by code only)."""
    return KINDS[field.name]


def flag(field: dataclasses.Field) -> str:
    return "--" + field.name.replace("_", "-")


def flag_fields(names: tuple[str, ...] | None = None) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Config)
            if f.metadata["flag"] and (names is None or f.name in names)]


def as_flags(settings: dict[str, Any]) -> list[str]:
    """`settings` (name: value) as the command-line flags of python -m app that set them."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    words: list[str] = []
    for name, value in settings.items():
        if isinstance(value, bool):
            words += [flag(fields[name])] if value else []
        else:
            words += [flag(fields[name]), str(value)]
    return words


def _shown_default(field: dataclasses.Field) -> str:
    return field.metadata["shown_default"] or str(field.default)


def add_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """Add the settings' flags (all, or those named) to `parser`, in groups, defaults in the help.

    Only flags given on the command line appear in the parsed result (argparse.SUPPRESS): --resume
    needs to know which settings the user asked to change.
    """
    groups: dict[str, Any] = {}
    for field in flag_fields(names):
        meta = field.metadata
        group = groups.get(meta["group"]) or groups.setdefault(
            meta["group"], parser.add_argument_group(meta["group"]))
        help_text = f"{meta['help']} (default: {_shown_default(field)})"
        if kind(field) is bool:
            group.add_argument(flag(field), action="store_true", default=argparse.SUPPRESS, help=help_text)
            continue
        optional = {"nargs": "?", "const": meta["bare"]} if meta["bare"] else {}
        group.add_argument(flag(field), type=kind(field), choices=meta["choices"] or None,
                           metavar=meta["metavar"], default=argparse.SUPPRESS, help=help_text, **optional)


def flag_table() -> str:
    """The flag table of docs/training.md, in markdown."""
    rows = ["| Flag | Default | Meaning |", "| --- | --- | --- |"]
    for field in flag_fields():
        meta = field.metadata
        usage = flag(field)
        if meta["choices"]:
            usage += (" [{%s}]" if meta["bare"] else " {%s}") % ",".join(meta["choices"])
        elif meta["metavar"]:
            usage += f" {meta['metavar']}"
        rule = "; a resumed run keeps it" if meta["kept_on_resume"] else ""
        rows.append(f"| `{usage}` | {_shown_default(field)} | {meta['help']}{rule} |")
    return "\n".join(rows) + "\n"


def resumed(saved_json: str, given: dict[str, Any]) -> Config:
    """The saved config of a run, updated by the flags given explicitly to resume it.

    Settings declared kept_on_resume may not change; --epochs may (train further, or finish
    sooner), and so may where the data and logs are (another machine, another mount).
    """
    try:
        saved = json.loads(saved_json)
        saved = Config(**{f.name: saved[f.name] for f in dataclasses.fields(Config) if f.name in saved})
    except (ValueError, TypeError) as e:
        raise ConfigError(f"the run's config.json is unreadable ({e}); start a new run instead") from None
    for field in dataclasses.fields(Config):
        name = field.name
        if field.metadata["kept_on_resume"] and name in given and given[name] != getattr(saved, name):
            raise ConfigError(f"{flag(field)} {given[name]} differs from the run's own "
                              f"{getattr(saved, name)}; drop {flag(field)} to resume, or start a new run "
                              "to change it")
    return dataclasses.replace(saved, **given).validate()


if __name__ == "__main__":
    print(flag_table(), end="")
