"""python -m app.sweep FILE [flags]: run trials of a sweep until its study has enough of them.

With --katib it runs nothing and prints the sweep as a Katib Experiment instead (app/sweep/katib.py).

The file and every flag are checked, and offline data read, before Optuna or TensorFlow is
imported: a mistake is one line and exit 2, with nothing written.
Exit codes as python -m app: 0 done, 2 bad input, 1 a failure, 130/143 stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from pathlib import Path

from app import cli

cli.require_packages("python -m app.sweep")  # before the imports below, which need numpy and yaml

from app import runs  # noqa: E402
from app.config import Config, ConfigError, add_arguments, flag_fields  # noqa: E402
from app.data import DataError, load_for  # noqa: E402
from app.scale import distribution  # noqa: E402
from app.scale.hardware import count_gpus  # noqa: E402
from app.sweep.leases import keep_one_gpu  # noqa: E402
from app.sweep.spec import NOT_FIXABLE, SweepError, Unreachable, check_same_space  # noqa: E402
from app.sweep.spec import load as load_sweep  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = cli.OneLineParser(
        prog="python -m app.sweep",
        description="Run trials of the sweep in FILE (docs/sweeps.md) until its study has the file's "
                    "number of finished trials; each trial is a normal run in LOG_DIR/fit/NAME-trial-NNN, "
                    "the study in LOG_DIR/sweeps/NAME. Start several of these at any moment on the same "
                    "log folder and file: they share the study and run different trials. After a stop "
                    "(Ctrl-C, docker stop, kill -9) the same command continues the sweep, and an "
                    "interrupted trial continues from its last completed epoch.",
        epilog="Every python -m app flag below fixes that setting in every trial (flags win over the "
               "file's fixed:); a flag for a setting the sweep searches is an error. Environment: "
               "SWEEP_ARGS, more flags (split as a shell would; for compose); SWEEPERS, how many "
               "sweepers share this machine (default 1): on a CPU each trains with its share of the "
               "cores; SWEEP_STORAGE, the default of --storage; SWEEP_DB_PASSWORD_FILE, a file holding "
               "the database's password (or libpq's PGPASSWORD, PGPASSFILE). A sweeper handed several "
               "GPUs trains on one of its own.")
    p.add_argument("file", metavar="FILE", help="the sweep file (YAML), e.g. sweeps/default.yaml")
    p.add_argument("--trials", type=int, metavar="N",
                   help="finished trials the study should have (default: the file's trials)")
    p.add_argument("--storage", metavar="URL", default=os.environ.get("SWEEP_STORAGE") or None,
                   help="the study in PostgreSQL, postgresql://USER@HOST[:PORT]/DATABASE (no password: "
                        "see SWEEP_DB_PASSWORD_FILE below), for sweepers on several hosts sharing the log "
                        "folder; wins over the file's storage: (default: $SWEEP_STORAGE, else the file's, "
                        "else the journal file LOG_DIR/sweeps/NAME/journal.log, for one host)")
    p.add_argument("--katib", action="store_true",
                   help="train nothing: print the sweep as a Katib Experiment (YAML) for Kubernetes, each "
                        "trial a job writing to the logs claim (docs/kubernetes.md#sweeps-with-katib)")
    p.add_argument("--katib-trial", metavar="KIND", choices=("tfjob", "trainjob"),
                   help="with --katib, what each trial is: tfjob, a TFJob of the training operator (the "
                        "default), or trainjob, a Kubeflow Trainer v2 TrainJob on the TrainingRuntime of "
                        "deploy/kubernetes/trainjob")
    names = tuple(f.name for f in flag_fields() if f.name not in NOT_FIXABLE)
    add_arguments(p, names)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        argv = [*argv, *shlex.split(os.environ.get("SWEEP_ARGS", ""))]
    except ValueError as e:
        return cli.fail(f"SWEEP_ARGS={os.environ['SWEEP_ARGS']!r}: {e}; quote it as in a shell", 2)
    given = vars(parser().parse_args(argv))
    path, trials, katib = given.pop("file"), given.pop("trials"), given.pop("katib")
    katib_trial = given.pop("katib_trial")
    if katib_trial and not katib:
        return cli.fail(f"--katib-trial {katib_trial}: only with --katib (what a Katib trial is)", 2)
    storage = given.pop("storage")
    if katib:
        return _print_katib(path, given, trials, argv, katib_trial or "tfjob")
    try:
        sweep = load_sweep(path, given, trials, storage)
        base = Config(**sweep.fixed).validate()
        distribution.check(base)
        if sweep.storage is None:
            check_same_space(sweep, base.log_dir)  # in the database: when the study is opened
        digits = load_for(base) if base.data else None
        sweepers = _sweepers(os.environ.get("SWEEPERS", "1"))
        if sweep.storage is not None:
            _check_database(sweep.storage)
        runs.check_writable(base.log_dir)  # the first thing written, once all else is known good
    except (SweepError, ConfigError, DataError) as e:
        return cli.fail(e, 2)
    except Unreachable as e:
        return cli.fail(e, 1)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    gpu = keep_one_gpu(Path(base.log_dir) / "sweeps" / "gpu-locks", count_gpus(), os.environ)
    if gpu is not None:
        print(f"sweeper: training on GPU {gpu} of {count_gpus()}", flush=True)
    threads = _share_of_cores(sweepers) if gpu is None and sweepers > 1 and count_gpus() == 0 else None
    from app.sweep.runner import run_sweep
    from app.train import RunFailed

    try:
        with _database_failures(sweep.storage):
            return run_sweep(sweep, digits, threads)
    except (SweepError, ConfigError, DataError) as e:
        return cli.fail(e, 2)
    except (RunFailed, Unreachable) as e:
        return cli.fail(e, 1)


def _database_failures(url: str | None):
    """With a PostgreSQL study, the database failing mid-sweep is one line and exit status 1."""
    if url is None:
        return contextlib.nullcontext()
    from app.sweep import database

    return database.reached(url)


def _check_database(url: str) -> None:
    from app.sweep import database  # Optuna and SQLAlchemy: only now that the file is known good

    database.connect_args()  # SWEEP_DB_PASSWORD_FILE readable: else SweepError, exit 2
    database.check_reachable(url)


def _print_katib(path: str, given: dict, trials: int | None, argv: list[str], trial: str) -> int:
    """Print the Katib Experiment; the file and flags are checked as for a sweep, nothing is written."""
    from app.sweep import katib

    try:
        sweep = load_sweep(path, given, trials)
        text = katib.to_yaml(katib.experiment(sweep, trial), shlex.join(["python", "-m", "app.sweep", *argv]))
    except (SweepError, ConfigError) as e:
        return cli.fail(e, 2)
    print(text, end="")
    return 0


def _sweepers(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise SweepError(f"SWEEPERS must be a whole number of at least 1 (got {text!r})")
    return int(text)


def _share_of_cores(sweepers: int) -> int:
    """The threads each of `sweepers` sweepers on one CPU host trains with: its share of the cores.

    TensorFlow sizes its thread pools to every core by default, so sweepers side by side would
    oversubscribe them (docs/sweeps.md has the measurement).
    """
    threads = max(1, len(os.sched_getaffinity(0)) // sweepers)
    print(f"sweeper: one of {sweepers} on this CPU host, {threads} thread{'s' * (threads != 1)} each",
          flush=True)
    return threads


if __name__ == "__main__":
    sys.exit(main())
