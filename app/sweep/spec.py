"""The sweep file: what a sweep searches, read and checked in full before anything trains.

A parameter names a setting of app/config.py and is checked with that setting's own type and
validation, so a sweep can ask for nothing a single run would refuse. This module imports neither
Optuna nor TensorFlow: a mistake in the file is reported in well under a second.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from app.config import Config, ConfigError, flag, kind

# Metrics a trial reports after every epoch (Keras' history names), and which way is better.
OBJECTIVES = {"val_accuracy": "maximize", "val_loss": "minimize", "accuracy": "maximize", "loss": "minimize"}
SAMPLERS = ("tpe", "random", "grid")
# Pruners by name, each with its options and the least value each takes (docs/sweeps.md#pruning).
PRUNERS = {"median": {"startup_trials": 0, "warmup_epochs": 0},
           "successive-halving": {"min_epochs": 1, "reduction_factor": 2}}
DEFAULT_TRIALS = 10  # when the file gives none (a grid runs all its points)
# The sweep names, resumes and places its trials itself.
NOT_FIXABLE = ("run_name", "resume", "sweep", "trial", "swept", "summaries")
SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,59}")
_KEYS = {"name", "trials", "objective", "sampler", "pruning", "parameters", "fixed", "storage", "heartbeat"}
# Storage URLs: PostgreSQL through psycopg (3), SQLAlchemy 2.1's driver for a plain postgresql://.
STORAGE_SCHEMES = ("postgresql", "postgresql+psycopg")
PASSWORD_PLACES = ("PGPASSWORD, a PGPASSFILE (libpq's own), or a file named by SWEEP_DB_PASSWORD_FILE "
                   "(docs/sweeps.md#across-hosts-postgresql)")
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
# A sweep file is a screenful (sweeps/default.yaml: 715 bytes); the caps bound what a hostile one costs.
MAX_FILE_BYTES = 64 * 1024
MAX_DEPTH = 20  # nesting of YAML lists and mappings; a sweep file needs 3
SHOWN_CHARS = 60  # of a value quoted in a message


class SweepError(Exception):
    """The sweep file or a flag is wrong; the message says where and what to do instead."""


class Unreachable(Exception):
    """The sweep's database cannot be reached or refuses the sweeper: one line, exit status 1."""


@dataclasses.dataclass(frozen=True)
class Parameter:
    name: str  # a setting of app/config.py
    kind: str  # "float", "int" (ranges) or "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple = ()

    def describe(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log}


@dataclasses.dataclass(frozen=True)
class Pruning:
    """Which trials stop early: `pruner` and its options (those of the other pruner are unused)."""
    pruner: str = "median"
    startup_trials: int = 2  # median: trials finished before anything is pruned
    warmup_epochs: int = 0  # median: epochs every trial trains before it can be pruned
    min_epochs: int = 1  # successive-halving: epochs of the first rung, where every trial is first judged
    reduction_factor: int = 3  # successive-halving: the best 1/N at a rung go on, N times as far

    def describe(self) -> dict[str, Any]:
        """As a sweep file writes it: the pruner and each of its options."""
        return {"pruner": self.pruner, **{k: getattr(self, k) for k in PRUNERS[self.pruner]}}

    def rule(self) -> str:
        """Why a trial was stopped after an epoch, as the sweeper says it."""
        if self.pruner == "median":
            return "is worse than the median of the other trials there"
        return f"is not in the best 1/{self.reduction_factor} of the trials that reached that epoch"


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """How sweepers sharing a PostgreSQL study tell a dead one (Optuna's RDBStorage heartbeat)."""
    interval: int = 10  # seconds between a sweeper's beats for its trial
    # A trial whose last beat is older than this is taken over. A minute: well above a beat missed
    # while TensorFlow holds Python's lock (graph tracing, a slow disk), and at most a minute lost.
    grace_period: int = 60


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    trials: int
    metric: str
    direction: str
    sampler: str
    pruning: Pruning | None
    parameters: tuple[Parameter, ...]
    fixed: dict[str, Any]  # the file's `fixed:` and the flags given, flags winning
    source: str
    storage: str | None = None  # a postgresql:// URL without password; None: the journal file
    heartbeat: Heartbeat = Heartbeat()

    def space(self) -> dict[str, Any]:
        """What makes a study this study: a restart with another space is another sweep."""
        return {"objective": {"metric": self.metric, "direction": self.direction},
                "sampler": self.sampler,
                "parameters": {p.name: p.describe() for p in self.parameters}}

    def trial_settings(self, params: dict[str, Any], number: int) -> dict[str, Any]:
        """The settings of trial `number`: a normal run, named for its sweep and number, continued
        from its own folder when it exists (a takeover, or the same command after a stop)."""
        return {**self.fixed, **params, "run_name": self.run_name(number), "resume": "auto",
                "sweep": self.name, "trial": number, "swept": [p.name for p in self.parameters]}

    def run_name(self, number: int) -> str:
        return f"{self.name}-trial-{number:03d}"


def sweep_dir(log_dir: str, name: str) -> Path:
    """Where the study of sweep `name` lives: <log-dir>/sweeps/<name>."""
    return Path(log_dir) / "sweeps" / name


def check_same_space(sweep: Sweep, log_dir: str) -> None:
    """Refuse to continue sweep `name` with another parameter space (before anything is written)."""
    saved = sweep_dir(log_dir, sweep.name) / "sweep.json"
    try:
        space = json.loads(saved.read_text())["space"] if saved.is_file() else None
    except (ValueError, KeyError, TypeError):
        raise SweepError(f"{saved} is unreadable; move {saved.parent} away to start the sweep "
                         "afresh") from None
    if space is not None and space != sweep.space():
        raise SweepError(f"{sweep.source}: sweep {sweep.name!r} in {saved.parent} was started with other "
                         "parameters or objective; give the sweep a new name: to start a new one, or "
                         "restore its parameters to continue it")


def sweepable() -> list[str]:
    """Settings a sweep may search: the hyperparameters, those that change what is learned."""
    return [f.name for f in dataclasses.fields(Config) if f.metadata["hparam"] and f.metadata["flag"]]


def load(path: str, flags: dict[str, Any], trials: int | None = None, storage: str | None = None) -> Sweep:
    """The sweep in file `path`, with `flags` (settings given on the command line) fixed; `storage`
    (--storage, SWEEP_STORAGE) wins over the file's."""
    where = path
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # no more, whatever the file (or /dev/zero) holds
        text = raw.decode()
    except (OSError, UnicodeDecodeError) as e:
        raise SweepError(f"{where}: cannot read it ({getattr(e, 'strerror', None) or _short(e)})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise SweepError(f"{where}: larger than {MAX_FILE_BYTES // 1024} KiB, which no sweep file needs; "
                         "see docs/sweeps.md for the format")
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader, with no aliases)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise SweepError(f"{where}: not valid YAML{at}; see docs/sweeps.md for the format") from None
    except _Refused as e:
        raise SweepError(f"{where}: {_shortened(e)}") from None
    except ValueError as e:  # a number of thousands of digits, a date like 2026-13-45
        raise SweepError(f"{where}: a value YAML reads as a number or a date is out of range "
                         f"({_cut(str(e))}); quote it if it is text") from None
    if not isinstance(doc, dict):
        raise SweepError(f"{where}: must be a YAML mapping (name:, trials:, parameters:, ...), "
                         f"not {type(doc).__name__}; see docs/sweeps.md")
    unknown = sorted(set(map(str, doc)) - _KEYS)
    if unknown:
        raise SweepError(f"{where}: unknown key {_short(unknown[0])}; the keys are "
                         f"{', '.join(sorted(_KEYS))}")

    name = doc.get("name", Path(path).stem)
    if not isinstance(name, str) or not SWEEP_NAME.fullmatch(name):
        raise SweepError(f"{where}: name {_short(name)} is not a plain folder name: letters, digits, '.', "
                         "'_' and '-' (up to 60), starting with a letter or digit")
    count = doc.get("trials") if trials is None else trials
    origin = "--trials" if trials is not None else "trials"
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise SweepError(f"{where}: {origin} must be a whole number of at least 1 (got {_short(count)})")
    metric, direction = _objective(doc.get("objective", "val_accuracy"), where)
    sampler = doc.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise SweepError(f"{where}: sampler must be one of {', '.join(SAMPLERS)} (got {_short(sampler)})")
    pruning = _pruning(doc.get("pruning", False), where)

    raw = doc.get("parameters")
    if not isinstance(raw, dict) or not raw:
        raise SweepError(f"{where}: parameters must map at least one setting to its range or choices, "
                         "e.g. learning_rate: {low: 0.001, high: 0.01, log: true}")
    parameters = tuple(_parameter(str(n), spec, f"{where}: parameters.{_key(n)}") for n, spec in raw.items())
    if sampler == "grid":
        if any(p.kind != "choice" for p in parameters):
            raise SweepError(f"{where}: sampler grid needs choices for every parameter (it has no ranges)")
        # A grid runs each point once: by default all of them, never more (Katib's grid refuses it too).
        points = math.prod(len(p.choices) for p in parameters)
        if count is not None and count > points:
            raise SweepError(f"{where}: the grid has {points} points, so {origin} can be at most {points} "
                             f"(got {count}); leave trials out to run every point")
        count = points if count is None else count
    count = DEFAULT_TRIALS if count is None else count

    fixed_file = doc.get("fixed") or {}
    if not isinstance(fixed_file, dict):
        raise SweepError(f"{where}: fixed must map settings to values, e.g. epochs: 3")
    swept = {p.name for p in parameters}
    for origin, settings in (("fixed", fixed_file), ("flag", flags)):
        for key in settings:
            _check_fixable(str(key), origin, swept, where)
    fixed = {**{k: _fixed_value(k, v, f"{where}: fixed.{_key(k)}") for k, v in fixed_file.items()}, **flags}
    try:
        Config(**fixed).validate()
    except ConfigError as e:
        raise SweepError(f"{where}: {_shortened(e)}") from None
    origin, url = ("--storage", storage) if storage is not None else ("storage", doc.get("storage"))
    url = check_storage(url, f"{where}: {origin}") if url not in (None, "") else None
    heartbeat = _heartbeat(doc.get("heartbeat"), url, where)
    return Sweep(name, count, metric, direction, sampler, pruning, parameters, fixed, path, url, heartbeat)


def check_storage(url, where: str) -> str:
    """`url` if it names a PostgreSQL database without a password; else the one line that says why not.

    A password in the URL would show in `ps`, in the shell's history and in compose files: it is
    refused, and read from where libpq and compose keep one instead. The URL is never quoted back
    in full, as it might hold one.
    """
    if not isinstance(url, str):
        raise SweepError(f"{where} must be a postgresql://USER@HOST[:PORT]/DATABASE URL (got {_short(url)})")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError as e:
        raise SweepError(f"{where}: not a valid URL ({e}); give postgresql://USER@HOST[:PORT]/"
                         "DATABASE") from None
    if parts.password is not None or "password" in parse_qs(parts.query):
        raise SweepError(f"{where}: the URL holds a password, which ps, shell history and logs would show; "
                         f"drop it from the URL and put it in {PASSWORD_PLACES}")
    if parts.scheme not in STORAGE_SCHEMES:
        scheme = _cut(parts.scheme or url.split(":")[0])
        raise SweepError(f"{where}: {scheme}:// is not supported; give postgresql://USER@HOST[:PORT]/"
                         "DATABASE for sweepers on several hosts, or leave storage out for the journal "
                         "file on one host")
    if parts.path.strip("/") == "" or "/" in parts.path.strip("/"):
        raise SweepError(f"{where}: name the database: postgresql://USER@HOST[:PORT]/DATABASE")
    return url


def shown_url(url: str) -> str:
    """The URL as messages show it (it holds no password: check_storage refused that)."""
    return url if len(url) <= 120 else url[:117] + "..."


def _heartbeat(raw, url: str | None, where: str) -> Heartbeat:
    if raw is None:
        return Heartbeat()
    if url is None:
        raise SweepError(f"{where}: heartbeat applies to a PostgreSQL storage only (sweepers on one host "
                         "find a dead one by its lock); drop it, or give storage: postgresql://...")
    if not isinstance(raw, dict) or not raw or set(raw) - {"interval", "grace_period"}:
        raise SweepError(f"{where}: heartbeat must be {{interval: SECONDS, grace_period: SECONDS}}")
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SweepError(f"{where}: heartbeat.{key} must be a whole number of seconds, at least 1 "
                             f"(got {_short(value)})")
    beat = Heartbeat(**raw)
    if beat.grace_period <= beat.interval:
        raise SweepError(f"{where}: heartbeat.grace_period ({beat.grace_period} s) must be longer than its "
                         f"interval ({beat.interval} s), or a live sweeper's trial would be taken over")
    return beat


class _Refused(Exception):
    pass


class _Loader(yaml.SafeLoader):
    """yaml.safe_load without anchors and aliases, and with a cap on nesting.

    An alias costs nothing to load (it shares the object), but everything that walks the document
    walks every copy: ten aliases of ten aliases of ... make a few hundred bytes print as megabytes
    (a "billion laughs"). A sweep file has no use for them. PyYAML composes nested nodes by
    recursion, so thousands of brackets would end in a RecursionError: nesting is capped too.
    """

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(f"line {event.start_mark.line + 1}: YAML anchors and aliases (&name, *name) are "
                           "not accepted in a sweep file; write each value out")
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"line {event.start_mark.line + 1}: lists and mappings nested more than "
                               f"{MAX_DEPTH} deep; see docs/sweeps.md for the format")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _short(value) -> str:
    """repr(value), cut to SHOWN_CHARS: a message quotes what was given, not all of it."""
    return _cut(repr(value))


def _key(name) -> str:
    """A key of the file as a message names it, cut to SHOWN_CHARS."""
    return _cut(str(name))


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


# A value quoted in another module's message (app/config.py quotes with repr), longer than SHOWN_CHARS.
_LONG_QUOTE = re.compile("|".join(f"{q}[^{q}\\n]{{{SHOWN_CHARS},}}{q}" for q in "'\""))


def _shortened(message: object) -> str:
    """A message from elsewhere with each long quoted value cut."""
    return _LONG_QUOTE.sub(lambda m: m.group()[:SHOWN_CHARS - 4] + "..." + m.group()[-1], str(message))


def _objective(raw, where: str) -> tuple[str, str]:
    if isinstance(raw, str):
        raw = {"metric": raw}
    if not isinstance(raw, dict) or set(raw) - {"metric", "direction"}:
        raise SweepError(f"{where}: objective must be a metric name or {{metric: M, direction: D}}")
    metric = raw.get("metric", "val_accuracy")
    if metric not in OBJECTIVES:
        raise SweepError(f"{where}: objective metric must be one of {', '.join(OBJECTIVES)} "
                         f"(got {_short(metric)})")
    direction = raw.get("direction", OBJECTIVES[metric])
    if direction not in ("maximize", "minimize"):
        raise SweepError(f"{where}: objective direction must be maximize or minimize "
                         f"(got {_short(direction)})")
    return metric, direction


def _pruning(raw, where: str) -> Pruning | None:
    if raw is False or raw is None:
        return None
    if raw is True:
        return Pruning()  # the median pruner, as before pruners had names
    if isinstance(raw, str):
        raw = {"pruner": raw}
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: pruning must be true (the median pruner), false, a pruner's name "
                         f"({', '.join(PRUNERS)}) or {{pruner: NAME, OPTION: N, ...}}; see docs/sweeps.md")
    pruner = raw.get("pruner", "median")  # options alone, {startup_trials: N}: the median's, as before
    if not isinstance(pruner, str) or pruner not in PRUNERS:
        raise SweepError(f"{where}: pruning.pruner must be one of {', '.join(PRUNERS)} "
                         f"(got {_short(pruner)})")
    values = {}
    for key, value in raw.items():
        if key == "pruner":
            continue
        if key not in PRUNERS[pruner]:
            other = next((p for p, options in PRUNERS.items() if key in options), None)
            if other:
                raise SweepError(f"{where}: pruning.{key} is an option of the {other} pruner, not of "
                                 f"{pruner}")
            raise SweepError(f"{where}: pruning.{_key(key)}: the {pruner} pruner has no such option; it "
                             f"takes {', '.join(PRUNERS[pruner])}")
        least = PRUNERS[pruner][key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise SweepError(f"{where}: pruning.{key} must be a whole number of at least {least} "
                             f"(got {_short(value)})")
        values[key] = value
    return Pruning(pruner, **values)


def _field(name: str):
    return next((f for f in dataclasses.fields(Config) if f.name == name), None)


def _check_fixable(name: str, origin: str, swept: set[str], where: str) -> None:
    field = _field(name)
    shown = flag(field) if field else name
    if origin == "flag" and name in swept:
        raise SweepError(f"{where}: {shown} is a parameter of this sweep, so a flag cannot fix it; drop "
                         f"the flag, or move {name} from parameters to fixed")
    if field is None or not field.metadata["flag"]:
        raise SweepError(f"{where}: fixed.{_key(name)}: no such setting; see python -m app --help")
    if name in NOT_FIXABLE:
        raise SweepError(f"{where}: {shown}: the sweep names and resumes each trial's run itself")
    if origin == "fixed" and name in swept:
        raise SweepError(f"{where}: {name} is both a parameter and fixed; keep one")


def _parameter(name: str, raw, where: str) -> Parameter:
    field = _field(name)
    if field is None or not field.metadata["flag"]:
        raise SweepError(f"{where}: no such setting; sweepable: {', '.join(sweepable())}")
    if name not in sweepable():
        raise SweepError(f"{where}: {flag(field)} does not change what is learned, so it is not swept; "
                         f"sweepable: {', '.join(sweepable())} (fix others under fixed:)")
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: give {{low: A, high: B}} (log: true for a log range) "
                         "or {choices: [...]}")
    if "choices" in raw:
        if set(raw) != {"choices"}:
            others = ", ".join(sorted(set(raw) - {"choices"}))
            raise SweepError(f"{where}: choices cannot be combined with {others}")
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise SweepError(f"{where}: choices must be a non-empty list")
        values = tuple(_fixed_value(name, c, where) for c in choices)
        if len(set(values)) != len(values):
            raise SweepError(f"{where}: choices repeat a value ({_short(list(choices))})")
        return Parameter(name, "choice", choices=values)

    if kind(field) not in (int, float):
        raise SweepError(f"{where}: {flag(field)} is not a number, so it takes choices: [...], not a range")
    if set(raw) - {"low", "high", "log"} or not {"low", "high"} <= set(raw):
        raise SweepError(f"{where}: a range is {{low: A, high: B}}, with log: true for a log range")
    low, high = (_fixed_value(name, raw[k], f"{where}.{k}") for k in ("low", "high"))
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SweepError(f"{where}.log must be true or false (got {_short(log)})")
    if log and low <= 0:
        raise SweepError(f"{where}: a log range must lie above 0 (low is {_short(low)}); raise low, "
                         "or drop log: true")
    if low > high:
        raise SweepError(f"{where}: the range is inverted (low {_short(low)} > high {_short(high)}); "
                         "swap them")
    if low == high:
        raise SweepError(f"{where}: the range is empty (low = high = {_short(low)}); put a single value "
                         "under fixed:")
    return Parameter(name, kind(field).__name__, low=low, high=high, log=log)


def _fixed_value(name: str, value, where: str):
    """`value` as setting `name` takes it, checked by the setting's own validation."""
    field = _field(name)
    wanted = kind(field)
    if isinstance(value, str) and wanted is float and _FLOAT_TEXT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as text; a user means the number
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          bool: lambda v: isinstance(v, bool), str: lambda v: isinstance(v, str)}[wanted]
    if not ok(value):
        shown = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}[wanted]
        raise SweepError(f"{where}: {flag(field)} takes {shown} (got {_short(value)})")
    if wanted is float:
        value = float(value)
        if not math.isfinite(value):
            raise SweepError(f"{where}: {flag(field)} must be finite (got {_short(value)})")
    try:
        Config(**{name: value}).validate()
    except ConfigError as e:
        raise SweepError(f"{where}: {_shortened(e)}") from None
    return value
