"""python -m app.sweep FILE [flags]: run trials of a sweep until its study has enough of them.

The file and every flag are checked, and offline data read, before Optuna or TensorFlow is
imported: a mistake is one line and exit 2, with nothing written.
Exit codes as python -m app: 0 done, 2 bad input, 1 a failure, 130/143 stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys

from app import distribution, runs
from app.config import Config, ConfigError, add_arguments, flag_fields
from app.data import DataError, load
from app.sweep.spec import NOT_FIXABLE, SweepError, check_same_space
from app.sweep.spec import load as load_sweep


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"error: {message} (see python -m app.sweep --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m app.sweep",
        description="Run trials of the sweep in FILE (docs/sweeps.md) until its study has the file's "
                    "number of finished trials; each trial is a normal run in LOG_DIR/fit/NAME-trial-NNN, "
                    "the study in LOG_DIR/sweeps/NAME. Start several of these at any moment on the same "
                    "log folder and file: they share the study and run different trials. After a stop "
                    "(Ctrl-C, docker stop, kill -9) the same command continues the sweep, and an "
                    "interrupted trial continues from its last completed epoch.",
        epilog="Every python -m app flag below fixes that setting in every trial (flags win over the "
               "file's fixed:); a flag for a setting the sweep searches is an error.")
    p.add_argument("file", metavar="FILE", help="the sweep file (YAML), e.g. sweeps/default.yaml")
    p.add_argument("--trials", type=int, metavar="N",
                   help="finished trials the study should have (default: the file's trials)")
    names = tuple(f.name for f in flag_fields() if f.name not in NOT_FIXABLE)
    add_arguments(p, names)
    return p


def main(argv: list[str] | None = None) -> int:
    given = vars(parser().parse_args(argv))
    path, trials = given.pop("file"), given.pop("trials")
    try:
        sweep = load_sweep(path, given, trials)
        base = Config(**sweep.fixed).validate()
        distribution.check(base)
        runs.check_writable(base.log_dir)
        check_same_space(sweep, base.log_dir)
        digits = load(base.dataset, base.data) if base.data else None
    except (SweepError, ConfigError, DataError) as e:
        return _fail(e, 2)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    from app.sweep.runner import run_sweep
    from app.train import RunFailed

    try:
        return run_sweep(sweep, digits)
    except (SweepError, ConfigError, DataError) as e:
        return _fail(e, 2)
    except RunFailed as e:
        return _fail(e, 1)


def _fail(message: object, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
