"""python -m app.publish RUN [--models DIR] [--name NAME]: a run's exported model as the next version
of a served model.

TensorFlow Serving (and KServe's TensorFlow runtime) read a model base path DIR/NAME holding one
numbered folder per version, and serve the highest: DIR/NAME/1/, DIR/NAME/2/, ... each a SavedModel.
This copies RUN's export (its saved_model/; RUN as app.predict takes it) to DIR/NAME/<highest + 1>/:
into a hidden folder first, synced, then renamed, so a server polling DIR/NAME never sees half a
version, and two publishers at once get two versions. Nothing is ever replaced or deleted.
docs/serving.md has the rest.

Exit codes: 0 published, 2 bad input (RUN is no model, DIR/NAME not a model base path).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

from app import cli, durable
from app.data import DataError
from app.predict import find_model

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def parser() -> argparse.ArgumentParser:
    p = cli.OneLineParser(prog="python -m app.publish", description=__doc__.split("\n\n")[0])
    p.add_argument("run", metavar="RUN", help="a run folder or name, or an exported model")
    p.add_argument("--models", default="models", metavar="DIR",
                   help="where served models live (default: models)")
    p.add_argument("--name", default="model", help="the model's name, its folder in DIR and its name in "
                                                    "TensorFlow Serving's URLs (default: model)")
    p.add_argument("--log-dir", default="logs", metavar="DIR",
                   help="where run names are looked up (default: logs)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if not NAME.fullmatch(args.name):
            raise DataError(f"--name {args.name!r}: use letters, digits, '.', '_' and '-', starting with a "
                            "letter or digit")
        source = find_model(args.run, args.log_dir)
        version = publish(source, Path(args.models) / args.name)
    except DataError as e:
        return cli.fail(e, 2)
    print(f"published {source} as version {version.name} of model {args.name}: {version}", flush=True)
    return 0


def publish(source: Path, base: Path) -> Path:
    """Copy the SavedModel in `source` to the next version folder of model base path `base`."""
    base.mkdir(parents=True, exist_ok=True)
    strays = [p.name for p in base.iterdir() if not p.name.isdigit() and not p.name.startswith(".")]
    if strays:
        raise DataError(f"{base}: holds {', '.join(sorted(strays)[:3])}, not only numbered versions: is it "
                        "a model base path? Give another --models or --name")
    while True:
        versions = [int(p.name) for p in base.iterdir() if p.name.isdigit()]
        target = base / str(max(versions, default=0) + 1)
        tmp = base / f".publishing-{target.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(source, tmp)
            durable.sync_tree(tmp)
            os.rename(tmp, target)  # fails if another publisher took this number first: try the next
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if target.exists():
                continue
            raise
        durable.sync(base)
        return target


if __name__ == "__main__":
    sys.exit(main())
