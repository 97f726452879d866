"""python -m app: train the CNN on MNIST with live TensorBoard logs.

Flags are parsed and checked, and offline data is read and validated, before TensorFlow is
imported: a mistake is reported in well under a second, and leaves nothing behind.
Exit codes: 0 done, 2 bad input or usage, 1 training failed, 130/143 stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys

from app import cli

cli.require_packages("python -m app")  # before the imports below, which need numpy

from app import runs  # noqa: E402
from app.config import ConfigError, add_arguments  # noqa: E402
from app.data import DataError, load_for  # noqa: E402
from app.scale import distribution  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = cli.OneLineParser(
        prog="python -m app",
        description="Train the MNIST CNN and log everything to TensorBoard. "
                    "Runs go to LOG_DIR/fit/RUN_NAME; point TensorBoard at LOG_DIR/fit.",
    )
    add_arguments(p)  # every flag comes from its declaration in app/config.py
    return p


def main(argv: list[str] | None = None) -> int:
    given = vars(parser().parse_args(argv))
    try:
        config = runs.settled_config(given)
        if distribution.check(config) == 1:  # of several workers, only the chief claims the folder
            runs.check_unclaimed(config)
        digits = load_for(config) if config.data else None
        runs.check_writable(config.log_dir)  # the first thing written, once all else is known good
    except (ConfigError, DataError) as e:
        return cli.fail(e, 2)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines are noise here
    from app.train import Interrupted, RunFailed, train

    try:
        train(config, digits)
    except (ConfigError, DataError) as e:
        return cli.fail(e, 2)
    except RunFailed as e:
        return cli.fail(e, 1)
    except Interrupted as e:
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
