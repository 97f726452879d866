"""python -m app: train the CNN on MNIST with live TensorBoard logs.

Flags are parsed and checked, and offline data is read and validated, before TensorFlow is
imported: a mistake is reported in well under a second, and leaves no run folder behind.
Exit codes: 0 done, 2 bad input or usage, 1 training failed, 130/143 stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys

from app import distribution, runs
from app.config import Config, ConfigError, add_arguments, resumed
from app.data import DataError, load


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line, not argparse's usage block: the message already names the flag.
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m app",
        description="Train the MNIST CNN and log everything to TensorBoard. "
                    "Runs go to LOG_DIR/fit/RUN_NAME; point TensorBoard at LOG_DIR/fit.",
    )
    add_arguments(p)  # every flag comes from its declaration in app/config.py
    return p


def main(argv: list[str] | None = None) -> int:
    given = vars(parser().parse_args(argv))
    try:
        config = Config(**given).validate()
        distribution.check(config)
        if runs.continuing(config.log_dir, config.run_name, config.resume):
            saved = runs.existing(config.log_dir, config.run_name) / "config.json"
            config = resumed(saved.read_text(), given)
        runs.check_writable(config.log_dir)
        digits = load(config.dataset, config.data) if config.data else None
    except (ConfigError, DataError) as e:
        return _fail(e, 2)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines are noise here
    from app.train import Interrupted, RunFailed, train

    try:
        train(config, digits)
    except (ConfigError, DataError) as e:
        return _fail(e, 2)
    except RunFailed as e:
        return _fail(e, 1)
    except Interrupted as e:
        return e.exit_code
    return 0


def _fail(message: object, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
