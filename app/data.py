"""Load and validate the data: a keras.datasets download, an .npz file, a folder of IDX files, or a
folder of your own pictures (pictures.py, decoded once into a cache by picture_cache.py).

Whatever the source, the result is the same `Images`: uint8 pixels shaped (N, height, width,
channels) and uint8 labels 0 to classes - 1, with the class names. Pixels stay uint8 until a batch
is formed (see pipeline.py): a quarter of the memory of float32; a picture folder's arrays are
memory-mapped from the cache, so a folder larger than memory trains too. The arrays are checked
with numpy only, and a picture folder's layout and headers too, so bad data is refused before
TensorFlow is imported; only decoding a picture folder the first time imports it.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
# An IDX file may claim any count in its header; refusing absurd ones bounds memory before reading.
# Generous: EMNIST, the largest MNIST-layout set, has about 700,000 training images.
MAX_IMAGES = 1_000_000

CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # unsigned bytes, 3 dims (images) or 1 dim (labels)


class DataError(Exception):
    """The data is missing or malformed; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Images:
    x_train: np.ndarray  # uint8 (N, height, width, channels)
    y_train: np.ndarray  # uint8 (N,), 0 to len(class_names) - 1
    x_test: np.ndarray  # the validation and test set
    y_test: np.ndarray
    source: str
    class_names: list[str]
    # What a run records of its data (data.json, the Text and HParams tabs): the layout, how the
    # validation set was chosen, pictures left out, the cache.
    details: dict = dataclasses.field(default_factory=dict)

    @property
    def image_size(self) -> str:
        return f"{self.x_train.shape[1]}x{self.x_train.shape[2]}"

    @property
    def channels(self) -> int:
        return self.x_train.shape[3]

    def counts(self, split: str) -> list[int]:
        """Pictures per class in the `train` or `test` split."""
        labels = self.y_train if split == "train" else self.y_test
        return np.bincount(np.asarray(labels), minlength=len(self.class_names)).tolist()


def load(dataset: str, data_path: str | None, *, image_size: str = "auto", channels: str = "auto",
         validation_split: float = 0.2, seed: int = 42, skip_bad_images: bool = False) -> Images:
    """The training and test images from `data_path` if given, else from keras.datasets; the
    keywords apply to a folder of pictures (app/config.py says what each does)."""
    if data_path is None:
        arrays = _download(dataset)
        source = f"keras.datasets.{dataset}"
    else:
        path = Path(data_path)
        if not path.exists():
            raise DataError(f"--data {data_path}: no such file or folder; give a folder of pictures (one "
                            "subfolder per class), an .npz file or a folder of MNIST IDX files")
        from app import pictures

        if pictures.is_picture_folder(path):
            return _load_pictures(path, image_size, channels, validation_split, seed, skip_bad_images)
        arrays = _read_idx_folder(path) if path.is_dir() else _read_npz(path)
        source = str(path)
    images = Images(**_validated(arrays, source), source=source, class_names=CLASS_NAMES[dataset],
                    details={"kind": "arrays"})
    _check_fixed(images, image_size, channels)
    return images


def load_for(config) -> Images:
    """The data of a run's Config."""
    return load(config.dataset, config.data, image_size=config.image_size, channels=config.channels,
                validation_split=config.validation_split, seed=config.seed,
                skip_bad_images=config.skip_bad_images)


def _check_fixed(images: Images, image_size: str, channels: str) -> None:
    """--image-size and --channels resize and convert pictures; arrays are taken as they are."""
    if image_size not in ("auto", images.image_size):
        raise DataError(f"--image-size {image_size}: {images.source} holds {images.image_size} images, which "
                        "are used as they are; --image-size resizes a folder of pictures")
    if channels not in ("auto", str(images.channels)):
        raise DataError(f"--channels {channels}: {images.source} holds images of {images.channels} "
                        "channel(s), used as they are; --channels converts a folder of pictures")


def _load_pictures(path: Path, image_size: str, channels: str, validation_split: float, seed: int,
                   skip_bad: bool) -> Images:
    from app import picture_cache, pictures

    folder = pictures.scan(path, skip_bad)
    if folder.layout == "classes":  # refused before anything is decoded (again below, after)
        pictures.split(np.array([p.label for p in folder.train]), validation_split, seed, folder.class_names,
                       path)
    size = pictures.resolve_size(folder, image_size)
    depth = pictures.resolve_channels(folder, channels)
    cached, where = picture_cache.arrays(folder, size, depth, skip_bad)
    details = {"kind": "pictures", "layout": folder.layout, "cache": str(where),
               "skipped": [[str(p.relative_to(path)), why] for p, why in folder.skipped]
               + [list(s) for s in picture_cache.skipped(where)]}
    if folder.layout == "classes":
        held = pictures.split(np.asarray(cached["y_train"]), validation_split, seed, folder.class_names, path)
        files = picture_cache.files(where)["train"]
        details.update(validation_split=validation_split, split_seed=seed,
                       validation_files=sorted(f for f, h in zip(files, held, strict=True) if h))
        cached = picture_cache.held_out(cached, where, held, validation_split, seed)
    return Images(**cached, source=str(path), class_names=folder.class_names, details=details)


def _validated(arrays: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """MNIST's layout, checked: 28x28 grayscale, labels 0-9; x gets its channel axis, (N, 28, 28, 1)."""
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim == 4 and x.shape[-1] == 1:
            x = x[..., 0]
        if x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"{source}: x_{split} has shape {x.shape}, expected (N, 28, 28); "
                            "images must be 28x28 grayscale")
        if x.dtype != np.uint8:
            raise DataError(f"{source}: x_{split} has dtype {x.dtype}, expected uint8 pixels 0-255; "
                            "save the raw, unscaled images")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{source}: y_{split} has shape {y.shape} and dtype {y.dtype}, "
                            "expected a 1-D array of integer class labels")
        if len(x) == 0:
            raise DataError(f"{source}: the {split} set is empty; it needs at least one image")
        if len(x) != len(y):
            raise DataError(f"{source}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels; "
                            "they must match one to one")
        if y.min() < 0 or y.max() >= NUM_CLASSES:
            raise DataError(f"{source}: y_{split} has labels from {y.min()} to {y.max()}, "
                            f"expected 0 to {NUM_CLASSES - 1}")
        out[f"x_{split}"], out[f"y_{split}"] = np.ascontiguousarray(x)[..., np.newaxis], y.astype(np.uint8)
    return out


# --- .npz (the keras.datasets layout) -------------------------------------------------------


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            missing = [k for k in IDX_FILES if f"{k}.npy" not in members]
            if missing:
                raise DataError(f"{path}: missing array(s) {', '.join(missing)}; an .npz needs "
                                "x_train, y_train, x_test and y_test (the keras.datasets layout)")
            for key in IDX_FILES:
                with archive.open(f"{key}.npy") as member:
                    _check_npy_header(path, key, member)
        # allow_pickle=False as well: an .npz with object arrays could run code when unpickled.
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in IDX_FILES}
    except DataError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, zlib.error) as e:
        raise DataError(f"{path}: cannot read it as an .npz file ({_reason(e)}); "
                        "give an .npz or a folder of MNIST IDX files") from None


def npy_header(member) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an .npy file (an .npz member) claims, read from its header alone."""
    version = np.lib.format.read_magic(member)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
        np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(member)
    return shape, dtype


def _check_npy_header(path: Path, key: str, member) -> None:
    """Refuse an array by its header alone, before numpy allocates or unpickles anything.

    The header's shape and dtype are what numpy allocates (shape x itemsize bytes) before it reads a
    byte of data, so both are checked here: a count within MAX_IMAGES with a 1,400-byte "pixel" would
    claim a terabyte. What passes is at most MAX_IMAGES 28x28 uint8 images (784 MB) and as many
    integer labels; `_validated` checks the values once loaded.
    """
    shape, dtype = npy_header(member)
    if dtype.hasobject:
        raise DataError(f"{path}: {key} holds Python objects (pickled), which are refused for safety; "
                        "save plain numeric arrays with numpy.savez")
    if not shape or not 0 <= shape[0] <= MAX_IMAGES or math.prod(shape) > MAX_IMAGES * 28 * 28:
        raise DataError(f"{path}: {key} has shape {shape}, expected at most {MAX_IMAGES:,} items")
    if key.startswith("x_"):
        if shape[1:] not in (IMAGE_SHAPE, (*IMAGE_SHAPE, 1)):
            raise DataError(f"{path}: {key} has shape {shape}, expected (N, 28, 28); "
                            "images must be 28x28 grayscale")
        if dtype != np.uint8:
            raise DataError(f"{path}: {key} has dtype {dtype_name(dtype)}, expected uint8 pixels 0-255; "
                            "save the raw, unscaled images")
    elif len(shape) != 1 or not np.issubdtype(dtype, np.integer):
        raise DataError(f"{path}: {key} has shape {shape} and dtype {dtype_name(dtype)}, "
                        "expected a 1-D array of integer class labels")


def dtype_name(dtype: np.dtype) -> str:
    """numpy's name of a dtype, or its code where the name says nothing of its size (void, text)."""
    return dtype.str if dtype.kind in "VSUa" else str(dtype)


# --- IDX (the original MNIST distribution format) ------------------------------------------


def _read_idx_folder(folder: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for key, stem in IDX_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise DataError(f"{folder}: missing {stem}[.gz]; the folder needs the four MNIST IDX files "
                            f"({', '.join(IDX_FILES.values())}, gzipped or not)")
        arrays[key] = _read_idx(found[0], ndim=3 if key.startswith("x") else 1)
    return arrays


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    try:
        with path.open("rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        if gzipped:
            with gzip.open(path, "rb") as f:
                return _parse_idx(f, path, ndim, _gzip_size_hint(path))
        with path.open("rb") as f:
            return _parse_idx(f, path, ndim, os.path.getsize(path))
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read it ({_reason(e)}); replace it with an intact copy") from None


def _parse_idx(f, path: Path, ndim: int, size_hint: int | None) -> np.ndarray:
    header_size = 4 + 4 * ndim
    header = f.read(header_size)
    if len(header) < header_size:
        raise DataError(f"{path}: truncated IDX header; replace it with an intact copy")
    magic = int.from_bytes(header[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise DataError(f"{path}: not an IDX file of {'images' if ndim == 3 else 'labels'} "
                        f"(magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[ndim]:08x})")
    dims = tuple(int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != IMAGE_SHAPE:
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    if not 0 < dims[0] <= MAX_IMAGES:
        raise DataError(f"{path}: header claims {dims[0]} items, expected 1 to {MAX_IMAGES:,}")
    expected = int(np.prod(dims))
    # Cheap early refusal when the size is known up front (raw files, honest gzip trailers).
    if size_hint is not None and size_hint != header_size + expected:
        raise DataError(f"{path}: holds {size_hint - header_size} bytes of data but its header "
                        f"promises {expected}; the file is truncated or corrupt")
    body = f.read(expected)  # never more than the header promised: a gzip bomb stops here
    if len(body) < expected:
        raise DataError(f"{path}: truncated: {len(body)} of {expected} bytes; replace it with an intact copy")
    if f.read(1):
        raise DataError(f"{path}: has data beyond what its header promises; the file is corrupt")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _gzip_size_hint(path: Path) -> int | None:
    """The uncompressed size from the gzip trailer (mod 2**32), or None when it cannot be trusted."""
    size = os.path.getsize(path)
    if size < 18:
        return None
    with path.open("rb") as f:
        f.seek(-4, os.SEEK_END)
        isize = int.from_bytes(f.read(4), "little")
    # Sizes of 4 GiB and more wrap around; those are refused by MAX_IMAGES anyway, so only
    # trust the hint below the largest legal file.
    return isize if isize < 16 + MAX_IMAGES * 28 * 28 else None


# --- keras.datasets --------------------------------------------------------------------------


# Where keras.datasets downloads from, for error messages (Keras' own names the URL only sometimes).
ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


def _download(dataset: str) -> dict[str, np.ndarray]:
    """keras.datasets, cached under $KERAS_HOME/datasets (default ~/.keras/datasets)."""
    from keras import datasets  # imports TensorFlow: only on this path

    caches = _keras_caches()
    before = _snapshot(caches)
    try:
        (x_train, y_train), (x_test, y_test) = getattr(datasets, dataset).load_data()
    except Exception as e:  # Keras raises bare Exception for URL failures, ValueError for bad hashes
        # What this attempt left behind is partial or wrong (a proxy's error page, say): if it
        # stayed, the next run would fail on it, or for a set without a hash, train on it.
        for path, _, _ in _snapshot(caches) - before:  # files new or changed since the start
            Path(path).unlink(missing_ok=True)
        raise DataError(f"could not download {dataset} from {ORIGIN} ({_reason(e)}); "
                        "train offline with --data PATH (an .npz or a folder of MNIST IDX files)") from None
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _keras_caches() -> list[Path]:
    """Keras' dataset cache, and the one it falls back to when that is not writable."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()
    return [home / "datasets", Path("/tmp/.keras/datasets")]


def _snapshot(folders: list[Path]) -> set[tuple[str, int, int]]:
    return {(str(p), p.stat().st_size, p.stat().st_mtime_ns)
            for folder in folders if folder.is_dir() for p in folder.rglob("*") if p.is_file()}


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
