"""Pictures decoded once: a folder of pictures as uint8 arrays in a cache, read memory-mapped.

Each picture is decoded and resized by TensorFlow, with the very ops the exported model runs on a
picture it is sent (app/export.py: decode_image, then tf.image.resize, bilinear with antialiasing),
so a picture gets the same pixels in training, in `python -m app.predict` and on a server.

The cache is a folder per (pictures, size, channels): CACHE_ROOT/<key>/ with x_train.npy, y_train.npy,
x_test.npy, y_test.npy (the "classes" layout: every picture in x_train, split later) and files.json.
The key hashes every picture's path, label, byte size and modification time, and the size and
channels: a picture added, removed, renamed or rewritten is a new cache. Written to a hidden folder
then renamed, so a cache folder is always complete; runs starting together may both decode, one
rename wins. A held-out split is a copy of rows in a subfolder split-<fraction>-<seed>/, made the
same way: copying rows is cheap, decoding is not.

Where: $MNIST_TB_CACHE, else $XDG_CACHE_HOME/mnist-tensorboard, else ~/.cache/mnist-tensorboard; the
image sets XDG_CACHE_HOME=/cache, a named volume (never the data folder, which compose mounts
read-only). Delete the folder to clear it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from app import pictures
from app.data import DataError

VERSION = 1  # of the cache's format and of how pictures are decoded: a change makes new caches
ARRAYS = ("x_train", "y_train", "x_test", "y_test")
PROGRESS_SECONDS = 2.0  # how often a long decode says how far it is


def cache_root() -> Path:
    if os.environ.get("MNIST_TB_CACHE"):
        return Path(os.environ["MNIST_TB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnist-tensorboard"


def key(folder: pictures.Folder, size: tuple[int, int], channels: int) -> str:
    content = json.dumps([VERSION, list(size), channels, folder.class_names, folder.fingerprint()])
    return hashlib.sha256(content.encode()).hexdigest()[:20]


def arrays(folder: pictures.Folder, size: tuple[int, int], channels: int,
           skip_bad: bool = False) -> tuple[dict[str, np.ndarray], Path]:
    """The folder's pictures as memory-mapped arrays (x (N, H, W, C) uint8, y (N,) uint8), decoded
    now unless cached; and the cache folder. With `skip_bad`, pictures that do not decode are left
    out (files.json lists them), else the first one is refused."""
    where = cache_root() / "pictures" / key(folder, size, channels)
    if not (where / "files.json").is_file():
        _build(folder, size, channels, skip_bad, where)
    files = json.loads((where / "files.json").read_text())
    if files["skipped"] and not skip_bad:  # cached by a run that skipped them: refuse as it would have
        path, problem = files["skipped"][0]
        raise DataError(f"{folder.root / path}: {problem}; replace or remove it, or pass --skip-bad-images "
                        "to leave such pictures out")
    return {name: np.load(where / f"{name}.npy", mmap_mode="r") for name in ARRAYS}, where


def files(where: Path) -> dict:
    """files.json: the pictures in the cache's rows (paths in the folder, per part), and those left out."""
    return json.loads((where / "files.json").read_text())


def skipped(where: Path) -> list[tuple[str, str]]:
    """The pictures the cache left out: (path in the folder, why)."""
    return [tuple(s) for s in files(where)["skipped"]]


def held_out(cached: dict[str, np.ndarray], where: Path, held: np.ndarray, fraction: float,
             seed: int) -> dict[str, np.ndarray]:
    """The training rows not `held` as x_train, the held ones as x_test: memory-mapped copies."""
    folder = where / f"split-{fraction:g}-{seed}"
    if not (folder / "done").is_file():
        x, y = cached["x_train"], cached["y_train"]
        parts = {"train": np.flatnonzero(~held), "test": np.flatnonzero(held)}

        def write(tmp: Path) -> None:
            for part, rows in parts.items():
                out = np.lib.format.open_memmap(tmp / f"x_{part}.npy", mode="w+", dtype=np.uint8,
                                                shape=(len(rows), *x.shape[1:]))
                for start in range(0, len(rows), 4096):  # in chunks: a folder larger than memory too
                    out[start:start + 4096] = x[rows[start:start + 4096]]
                out.flush()
                del out
                np.save(tmp / f"y_{part}.npy", np.asarray(y[rows]))
            (tmp / "done").write_text("")

        _written(folder, write)
    return {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS}


def _written(target: Path, write) -> None:
    """Call write(tmp) on a hidden folder beside `target`, then rename it into place (one rename of
    runs that raced wins; the others' copies go)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.exists():
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def _build(folder: pictures.Folder, size: tuple[int, int], channels: int, skip_bad: bool,
           where: Path) -> None:
    try:
        _written(where, lambda tmp: _decode_into(tmp, folder, size, channels, skip_bad))
    except OSError as e:
        raise DataError(f"cannot write the picture cache in {where.parent} ({e.strerror or e}); set "
                        "MNIST_TB_CACHE to a writable folder") from None


def _decode_into(tmp: Path, folder: pictures.Folder, size: tuple[int, int], channels: int,
                 skip_bad: bool) -> None:
    progress = _Progress(folder.root, len(folder.train) + len(folder.test))
    files: dict = {"root": str(folder.root), "class_names": folder.class_names, "size": list(size),
                   "channels": channels, "skipped": []}
    for part, found in (("train", folder.train), ("test", folder.test)):
        kept = _decode_part(tmp, part, found, size, channels, skip_bad, progress, files["skipped"],
                            folder.root)
        np.save(tmp / f"y_{part}.npy", np.array([p.label for p in kept], dtype=np.uint8))
        files[part] = [str(p.path.relative_to(folder.root)) for p in kept]
    (tmp / "files.json").write_text(json.dumps(files) + "\n")
    progress.finished(tmp.parent)


def _decode_part(tmp: Path, part: str, found: list, size: tuple[int, int], channels: int, skip_bad: bool,
                 progress: _Progress, skipped: list, root: Path) -> list:
    """Decode `found` into tmp/x_<part>.npy; the pictures kept, in order."""
    import tensorflow as tf

    from app.export import decoded

    x = np.lib.format.open_memmap(tmp / f"x_{part}.npy", mode="w+", dtype=np.uint8,
                                  shape=(len(found), *size, channels))
    paths = tf.data.Dataset.from_tensor_slices(tf.constant([str(p.path) for p in found], dtype=tf.string))

    def decoding(start: int):  # in order, two at a time, from picture `start` on
        return iter(paths.skip(start).map(lambda path: decoded(tf.io.read_file(path), size, channels),
                                          num_parallel_calls=2, deterministic=True).prefetch(8))

    iterator, kept = decoding(0), []
    for index, picture in enumerate(found):
        try:
            x[len(kept)] = next(iterator).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
            problem = "does not decode as a picture (cut off or corrupt)"
            if not skip_bad:
                raise DataError(f"{picture.path}: {problem}; replace or remove it, or pass "
                                "--skip-bad-images to leave such pictures out") from None
            skipped.append([str(picture.path.relative_to(root)), problem])
            iterator = decoding(index + 1)  # an iterator that failed is not trusted further
            continue
        kept.append(picture)
        progress.one_more()
    x.flush()
    del x
    if len(kept) < len(found):  # a file cannot shrink in place: the kept rows, copied
        full = np.load(tmp / f"x_{part}.npy", mmap_mode="r")
        np.save(tmp / f"x_{part}.kept.npy", full[:len(kept)])
        del full
        os.replace(tmp / f"x_{part}.kept.npy", tmp / f"x_{part}.npy")
    return kept


class _Progress:
    """A line every PROGRESS_SECONDS while a big folder decodes, and one at the end."""

    def __init__(self, root: Path, total: int):
        self.root, self.total, self.done = root, total, 0
        self.started = self.shown = time.monotonic()
        self.first = None  # when the first picture was done: the rate counts from there

    def one_more(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.first is None:
            self.first = self.shown = now
        elif now - self.shown >= PROGRESS_SECONDS and self.done < self.total:
            self.shown = now
            rate = (self.done - 1) / (now - self.first)
            left = (self.total - self.done) / rate
            print(f"decoding {self.root}: {self.done:,} of {self.total:,} pictures "
                  f"({self.done / self.total:.0%}), {rate:,.0f}/s, about {left:.0f} s left", flush=True)

    def finished(self, cache: Path) -> None:
        seconds = time.monotonic() - self.started
        print(f"decoded {self.done:,} pictures of {self.root} in {seconds:.1f} s "
              f"({self.done / max(seconds, 1e-9):,.0f}/s) into the cache {cache}", flush=True)
