"""python -m app: train the CNN on MNIST with live TensorBoard logs.

Flags are parsed and checked, and offline data is read and validated, before TensorFlow is
imported: a mistake is reported in well under a second, and leaves no run folder behind.
Exit codes: 0 done, 2 bad input or usage, 1 training failed, 130/143 stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys

from app import runs
from app.config import DATASETS, PRECISIONS, SCHEDULES, Config, ConfigError, resumed
from app.data import DataError, load

DEFAULTS = Config()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line, not argparse's usage block: the message already names the flag.
        self.exit(2, f"error: {message} (see python -m app --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m app",
        description="Train the MNIST CNN and log everything to TensorBoard. "
                    "Runs go to LOG_DIR/fit/RUN_NAME; point TensorBoard at LOG_DIR/fit.",
        # Only flags given on the command line appear in the result: --resume needs to know
        # which settings the user asked to change.
        argument_default=argparse.SUPPRESS,
    )
    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=int, metavar="N",
                       help=f"epochs to train; with --resume, the new total (default: {DEFAULTS.epochs})")
    train.add_argument("--batch-size", type=int, metavar="N",
                       help=f"images per training step (default: {DEFAULTS.batch_size})")
    train.add_argument("--learning-rate", type=float, metavar="LR",
                       help=f"Adam's learning rate (default: {DEFAULTS.learning_rate})")
    train.add_argument("--lr-schedule", choices=SCHEDULES,
                       help=f"cosine: decay the learning rate to zero over the run; constant: keep it "
                            f"(default: {DEFAULTS.lr_schedule})")
    train.add_argument("--precision", choices=PRECISIONS,
                       help="auto: mixed precision where the hardware gains from it (float16 on GPUs "
                            "with tensor cores, bfloat16 on CPUs with bf16 instructions), else float32 "
                            f"(default: {DEFAULTS.precision})")
    train.add_argument("--seed", type=int, metavar="N",
                       help=f"seed for weights, shuffling and dropout; the same seed gives the same "
                            f"result on the same machine (default: {DEFAULTS.seed})")
    source = p.add_argument_group("data")
    source.add_argument("--dataset", choices=DATASETS,
                        help=f"keras.datasets to download once and cache in $KERAS_HOME "
                             f"(default: {DEFAULTS.dataset})")
    source.add_argument("--data", metavar="PATH",
                        help="train offline from an .npz (x_train, y_train, x_test, y_test) or a folder "
                             "of the four MNIST IDX files, gzipped or not (default: download --dataset)")
    out = p.add_argument_group("runs and TensorBoard")
    out.add_argument("--log-dir", metavar="DIR",
                     help=f"runs go to DIR/fit/RUN_NAME (default: {DEFAULTS.log_dir})")
    out.add_argument("--run-name", metavar="NAME",
                     help="the run's folder name (default: the start time, YYYYMMDD-HHMMSS)")
    out.add_argument("--resume", action="store_true",
                     help="continue run --run-name from its last completed epoch (default: off)")
    out.add_argument("--batch-log-every", type=int, metavar="N",
                     help=f"log batch-level loss and accuracy every N steps "
                          f"(default: {DEFAULTS.batch_log_every})")
    out.add_argument("--profile-batches", metavar="START,END",
                     help="profile these training batches for TensorBoard's Profile tab, "
                          f"0 for off (default: {DEFAULTS.profile_batches})")
    return p


def main(argv: list[str] | None = None) -> int:
    given = vars(parser().parse_args(argv))
    try:
        config = Config(**given).validate()
        if config.resume:
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
