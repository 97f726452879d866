"""python -m app.predict RUN FILE_OR_FOLDER...: what the exported model says of your pictures.

RUN is a run folder, a run's name under --log-dir/fit, an exported model (a folder with
saved_model.pb), or a published model (docs/serving.md: the folder of its versions, whose newest is
taken, or one version's folder). Each FILE_OR_FOLDER is a picture (PNG, JPEG, GIF, BMP, WebP), a
folder of them (searched through, as --data reads one), or an .npz of uint8 pixel arrays (each array
of it at the model's size, (N, height, width) or (N, height, width, channels)).

Only the export is used: the pictures go, as their files' bytes, through its `images` signature,
which decodes and resizes them inside the model as it does on a server (app/export.py), and arrays
through its pixel signature. So what this prints is what TensorFlow Serving would answer. One line
per picture (its path, the predicted class and its probability; --top K for more), or with --json
one JSON object per picture: {"file", "class", "probability", "top": [{"class", "probability"}]}.

Exit codes: 0 done, 2 bad input (not a model, a picture that does not decode, arrays of another
size or channel count), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import zipfile
from pathlib import Path

from app import cli

cli.require_packages("python -m app.predict")  # before the imports below, which need numpy

import numpy as np  # noqa: E402

from app import pictures  # noqa: E402
from app.data import DataError, dtype_name, npy_header  # noqa: E402

BATCH = 64  # pictures per call of the model
# An .npz member is refused by its header beyond this many pixels (as many as MAX_PIXELS-sized pictures):
# numpy allocates what the header claims before it reads a byte.
MAX_NPZ_PIXELS = 20 * pictures.MAX_PIXELS


def parser() -> argparse.ArgumentParser:
    p = cli.OneLineParser(prog="python -m app.predict", description=__doc__.split("\n\n")[0],
                          epilog="docs/serving.md: the exported model, its signatures, serving it")
    p.add_argument("run", metavar="RUN", help="a run folder or name, an exported or a published model")
    p.add_argument("inputs", metavar="FILE_OR_FOLDER", nargs="+",
                   help="pictures, folders of them, or .npz files")
    p.add_argument("--top", type=int, default=1, metavar="K", help="the K likeliest classes (default: 1)")
    p.add_argument("--json", action="store_true", help="one JSON object per picture, for scripts")
    p.add_argument("--log-dir", default="logs", metavar="DIR", help="where run names are looked up "
                                                                     "(default: logs)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.top < 1:
        return cli.fail(f"--top must be at least 1 (got {args.top})", 2)
    try:
        model_dir = find_model(args.run, args.log_dir)
        items = [item for given in args.inputs for item in _inputs(Path(given))]
    except DataError as e:
        return cli.fail(e, 2)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        model = Model(model_dir)
        for batch in (items[i:i + BATCH] for i in range(0, len(items), BATCH)):
            for (name, _), probabilities in zip(batch, model.answer(batch), strict=True):
                print(_shown(name, probabilities, model.class_names, args.top, args.json), flush=True)
    except DataError as e:
        return cli.fail(e, 2)
    return 0


def find_model(run: str, log_dir: str) -> Path:
    """The SavedModel folder that `run` names."""
    given = Path(run)
    candidates = [given, Path(log_dir) / "fit" / run] if given.parts[:1] != (".",) else [given]
    for path in candidates:
        if (path / "saved_model.pb").is_file():
            return path
        if (path / "saved_model" / "saved_model.pb").is_file():
            return path / "saved_model"
        versions = sorted((int(v.name), v) for v in path.glob("*") if v.name.isdigit()
                          and (v / "saved_model.pb").is_file()) if path.is_dir() else []
        if versions:
            return versions[-1][1]  # the newest published version, as TensorFlow Serving serves it
    raise DataError(f"{run}: not a model: no run of that name in {Path(log_dir) / 'fit'}, and not a folder "
                    "holding saved_model.pb (an export), saved_model/ (a run) or numbered versions (a "
                    "published model)")


def _inputs(path: Path) -> list[tuple[str, object]]:
    """(name shown, a picture file's Path or a uint8 array) for every picture `path` holds."""
    if path.is_dir():
        found = [(str(p), p) for p in pictures.picture_files(path)]
        if not found:
            raise DataError(f"{path}: no pictures in it ({', '.join(pictures.EXTENSIONS)})")
        return found
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".npz":
        return _arrays(path)
    if not path.name.lower().endswith(pictures.EXTENSIONS):
        raise DataError(f"{path}: not a picture ({', '.join(pictures.EXTENSIONS)}), a folder or an .npz")
    pictures.header(path)  # an absurd size is refused before anything decodes it
    return [(str(path), path)]


def _arrays(path: Path) -> list[tuple[str, object]]:
    try:
        with zipfile.ZipFile(path) as archive:
            for member in (m for m in archive.namelist() if m.endswith(".npy")):
                with archive.open(member) as f:
                    shape, dtype = npy_header(f)
                if dtype != np.uint8 or len(shape) not in (3, 4) or math.prod(shape) > MAX_NPZ_PIXELS:
                    raise DataError(f"{path}: {member[:-4]} is {dtype_name(dtype)} {shape}; give uint8 "
                                    "pixels 0-255, (N, height, width) or (N, height, width, channels), "
                                    f"at most {MAX_NPZ_PIXELS:,} pixels in an array")
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read it as an .npz of arrays ({e})") from None
    items = []
    for name, x in arrays.items():
        if x.dtype != np.uint8 or x.ndim not in (3, 4):
            raise DataError(f"{path}: {name} is {x.dtype} {x.shape}; give uint8 pixels 0-255, (N, height, "
                            "width) or (N, height, width, channels)")
        x = x[..., np.newaxis] if x.ndim == 3 else x
        items += [(f"{path}[{name}][{i}]", x[i]) for i in range(len(x))]
    return items


class Model:
    """The exported model and its two signatures (app/export.py)."""

    def __init__(self, path: Path):
        import tensorflow as tf

        try:
            self.loaded = tf.saved_model.load(str(path))
            self.class_names = [n.decode() for n in self.loaded.class_names.numpy()]
            self.shape = (*self.loaded.image_size.numpy().tolist(), int(self.loaded.channels.numpy()))
        except (OSError, AttributeError, ValueError) as e:
            raise DataError(f"{path}: not a model this project exported ({type(e).__name__}); export it "
                            "again by resuming its run") from None
        self.tf = tf

    def answer(self, batch: list[tuple[str, object]]) -> list[np.ndarray]:
        """Each item's probabilities, pictures through `images`, arrays through the pixel signature."""
        tf = self.tf
        out: list[np.ndarray | None] = [None] * len(batch)
        files = [(i, item) for i, (_, item) in enumerate(batch) if isinstance(item, Path)]
        arrays = [(i, item) for i, (_, item) in enumerate(batch) if not isinstance(item, Path)]
        if files:
            encoded = [Path(item).read_bytes() for _, item in files]
            try:
                answered = self.loaded.signatures["images"](images=tf.constant(encoded))["probabilities"]
            except tf.errors.InvalidArgumentError:
                answered = [self._one(batch[i][0], e) for (i, _), e in zip(files, encoded, strict=True)]
            for (i, _), probabilities in zip(files, np.asarray(answered), strict=True):
                out[i] = probabilities
        for i, x in arrays:
            if x.shape != self.shape:
                raise DataError(f"{batch[i][0]}: pixels of shape {x.shape}, but the model takes {self.shape} "
                                "(height, width, channels)")
        if arrays:
            pixels = tf.constant(np.stack([x for _, x in arrays]))
            answered = self.loaded.signatures["serving_default"](pixels=pixels)["probabilities"].numpy()
            for (i, _), probabilities in zip(arrays, answered, strict=True):
                out[i] = probabilities
        return out

    def _one(self, name: str, encoded: bytes) -> np.ndarray:
        """One picture alone: the one that does not decode is named."""
        try:
            return self.loaded.signatures["images"](images=self.tf.constant([encoded]))["probabilities"][0]
        except self.tf.errors.InvalidArgumentError:
            raise DataError(f"{name}: does not decode as a picture (cut off or corrupt)") from None


def _shown(name: str, probabilities: np.ndarray, class_names: list[str], top: int, as_json: bool) -> str:
    ranked = np.argsort(-probabilities, kind="stable")[:top]
    best = [{"class": class_names[k], "probability": round(float(probabilities[k]), 6)} for k in ranked]
    if as_json:
        return json.dumps({"file": name, **best[0], "top": best})
    return f"{name}\t" + ", ".join(f"{b['class']} {b['probability']:.4f}" for b in best)


if __name__ == "__main__":
    sys.exit(main())
