"""A folder of your own pictures, one subfolder per class: found, checked and described without
TensorFlow, so that a mistake is refused in a second, before anything is decoded (docs/data.md).

Two layouts:
  DIR/train/<class>/...  and  DIR/test/<class>/...   the test pictures are the validation and test
                                                      set, as MNIST's test set is here;
  DIR/<class>/...                                     --validation-split of each class is held out,
                                                      chosen by --seed (split(): stratified).
Class names are the folder names, sorted, exactly as written. A class folder's pictures may sit in
subfolders of it. What real folders hold besides pictures is ignored, neither a class nor a picture:
hidden files and folders (.DS_Store, .ipynb_checkpoints), files beside the class folders (a
README), files of other kinds. Pictures are PNG, JPEG, GIF (its first frame), BMP and WebP: what
both Pillow (which reads the headers here) and TensorFlow (which decodes them, picture_cache.py) read.

Only headers are read here (Pillow's Image.open reads no pixels): a picture whose header claims more
than MAX_PIXELS is refused before anything could allocate it; one that does not decode is found
when the cache is built.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import os
import warnings
from pathlib import Path

import numpy as np

from app.data import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
# More than anyone trains this CNN on (a 7,000 x 7,000 photo); a header claiming more is refused unread.
MAX_PIXELS = 50_000_000
# --image-size auto: the most common size, scaled down to at most this on its longer side. The Dense
# layer after Flatten grows with the picture (docs/training.md#the-model): 7.4 M weights at 128x128.
AUTO_LONGER_SIDE = 128
# Pillow's modes without colour; a palette ("P") is colour unless every entry of it is grey.
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La"}


@dataclasses.dataclass(frozen=True)
class Picture:
    path: Path
    label: int
    size: tuple[int, int]  # (height, width), from the header
    colour: bool


@dataclasses.dataclass(frozen=True)
class Folder:
    root: Path
    layout: str  # "train-test" or "classes"
    class_names: list[str]
    train: list[Picture]  # all pictures, for the "classes" layout
    test: list[Picture]  # empty for the "classes" layout
    skipped: list[tuple[Path, str]]  # unreadable pictures left out (--skip-bad-images)

    def fingerprint(self) -> list:
        """What the cache is keyed by: every picture's place, label, size and modification time."""
        rows = []
        for part, pictures in (("train", self.train), ("test", self.test)):
            for p in pictures:
                stat = p.path.stat()
                place = str(p.path.relative_to(self.root))
                rows.append([part, place, p.label, stat.st_size, stat.st_mtime_ns])
        return rows


def is_picture_folder(path: Path) -> bool:
    """A folder meant to hold pictures in class folders: any folder without MNIST's IDX files."""
    from app.data import IDX_FILES

    names = {stem for stem in IDX_FILES.values()} | {f"{stem}.gz" for stem in IDX_FILES.values()}
    return path.is_dir() and not names & set(os.listdir(path))


def scan(root: Path, skip_bad: bool = False) -> Folder:
    """The folder's classes and pictures, every header checked; DataError says what is wrong."""
    names = _visible_folders(root)
    if not names:
        raise DataError(f"{root}: no class folders in it; put each class's pictures in a folder of its own, "
                        "DIR/<class>/... (or DIR/train/<class>/... and DIR/test/<class>/...)")
    if "train" in names or "test" in names:
        if set(names) & {"train", "test"} != {"train", "test"}:
            have, lacking = ("train", "test") if "train" in names else ("test", "train")
            raise DataError(f"{root}: has {have}/ but no {lacking}/; give both, each with the same class "
                            "folders, or put the class folders in the folder itself")
        train_names, test_names = _visible_folders(root / "train"), _visible_folders(root / "test")
        if train_names != test_names:
            only_train = sorted(set(train_names) - set(test_names))
            only_test = sorted(set(test_names) - set(train_names))
            raise DataError(f"{root}: train/ and test/ have different classes (only in train/: "
                            f"{', '.join(only_train) or '-'}; only in test/: {', '.join(only_test) or '-'}); "
                            "give both the same class folders")
        classes, layout = train_names, "train-test"
        parts = {"train": root / "train", "test": root / "test"}
    else:
        classes, layout, parts = names, "classes", {"train": root}
    if len(classes) < 2:
        raise DataError(f"{root}: only one class ({classes[0]!r}); a classifier needs two or more class "
                        "folders")
    skipped: list[tuple[Path, str]] = []
    found = {part: _pictures(folder, classes, skip_bad, skipped) for part, folder in parts.items()}
    return Folder(root, layout, classes, found["train"], found.get("test", []), skipped)


def _visible_folders(folder: Path) -> list[str]:
    """The names of the folder's non-hidden subfolders (symlinked ones too), sorted as Python sorts."""
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        raise DataError(f"{folder}: cannot read it ({e.strerror}); check its permissions") from None
    return sorted(e.name for e in entries if not e.name.startswith(".") and _is_dir(e, folder))


def _is_dir(entry: os.DirEntry, where: Path) -> bool:
    try:
        return entry.is_dir()
    except OSError as e:
        raise DataError(f"{where / entry.name}: {_why(e)}") from None


def _why(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "a symbolic link that loops back on itself; remove it"
    return f"cannot read it ({e.strerror})"


def _pictures(folder: Path, classes: list[str], skip_bad: bool, skipped: list) -> list[Picture]:
    pictures = []
    for label, name in enumerate(classes):
        found = [_checked(path, label, skip_bad, skipped) for path in _files(folder / name, ())]
        found = [p for p in found if p is not None]
        if not found:
            raise DataError(f"{folder / name}: no pictures in this class folder ({', '.join(EXTENSIONS)}); "
                            "add some, or remove the folder")
        pictures += found
    return pictures


def _files(folder: Path, above: tuple[str, ...]) -> list[Path]:
    """The picture files under `folder`, sorted; subfolders followed, but not a link back to a folder
    above (a loop: refused)."""
    real = os.path.realpath(folder)
    if any(real == a or a.startswith(real + os.sep) for a in above):
        raise DataError(f"{folder}: a symbolic link that leads back into a folder above it; remove it")
    above = (*above, real)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"{folder}: {_why(e)}") from None
    files = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = folder / entry.name
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
        except OSError as e:
            raise DataError(f"{path}: {_why(e)}") from None
        if not is_dir and not is_file and entry.is_symlink():
            try:
                os.stat(path)
            except OSError as e:  # a broken or looping link
                raise DataError(f"{path}: {_why(e)}") from None
        if is_dir:
            files += _files(path, above)
        elif is_file and entry.name.lower().endswith(EXTENSIONS):
            files.append(path)
    return files


def _checked(path: Path, label: int, skip_bad: bool, skipped: list) -> Picture | None:
    """The picture's header: its size and whether it has colour; None if it is skipped."""
    try:
        size, colour = header(path)
    except DataError as e:
        return _bad(path, str(e).split(": ", 1)[1], skip_bad, skipped)
    return Picture(path, label, size, colour)


def header(path: Path) -> tuple[tuple[int, int], bool]:
    """((height, width), has colour) from the picture's header alone; DataError for a file that is not
    a picture Pillow can read, or one that claims more than MAX_PIXELS (never decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the limit is checked below
            try:
                with Image.open(path) as image:
                    width, height = image.size
                    colour = _has_colour(image)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: not a picture that can be read ({reason})") from None
    if width * height > MAX_PIXELS or width < 1 or height < 1:
        raise DataError(f"{path}: its header claims {width} x {height} pixels, more than anyone trains on "
                        f"(at most {MAX_PIXELS:,}); it was not decoded")
    return (height, width), colour


def picture_files(folder: Path) -> list[Path]:
    """Every picture under `folder`, sorted, as a class folder's are found."""
    return _files(folder, ())


def _bad(path: Path, problem: str, skip_bad: bool, skipped: list) -> None:
    if not skip_bad:
        raise DataError(f"{path}: {problem}; replace or remove it, or pass --skip-bad-images to leave such "
                        "pictures out")
    skipped.append((path, problem))
    return None


def _has_colour(image) -> bool:
    if image.mode in _GREY_MODES:
        return False
    if image.mode in ("P", "PA"):
        palette = image.getpalette() or []
        return any(len(set(palette[i:i + 3])) > 1 for i in range(0, len(palette) - 2, 3))
    return True


# --- the size and colour pictures are brought to ---------------------------------------------------

def resolve_size(folder: Folder, image_size: str) -> tuple[int, int]:
    """(height, width): --image-size HxW, or for auto the training pictures' most common size, scaled
    down to at most AUTO_LONGER_SIDE on its longer side (ties: the larger, then the taller)."""
    if image_size != "auto":
        height, width = (int(v) for v in image_size.split("x"))
        return height, width
    counts = collections.Counter(p.size for p in folder.train)
    (height, width), _ = max(counts.items(), key=lambda kv: (kv[1], kv[0][0] * kv[0][1], kv[0]))
    scale = min(1.0, AUTO_LONGER_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resolve_channels(folder: Folder, channels: str) -> int:
    """--channels 1 or 3, or for auto 3 when any picture has colour, else 1."""
    if channels != "auto":
        return int(channels)
    return 3 if any(p.colour for p in (*folder.train, *folder.test)) else 1


def split(labels: np.ndarray, fraction: float, seed: int, class_names: list[str], where: Path) -> np.ndarray:
    """Which pictures are held out for validation: `fraction` of each class (at least one, and at
    least one left to train on), chosen by `seed`; a boolean mask, the same for the same inputs."""
    held = np.zeros(len(labels), dtype=bool)
    rng = np.random.default_rng([seed, 20261204])  # the split's own stream, not the training's
    for label, name in enumerate(class_names):
        members = np.flatnonzero(labels == label)
        count = round(len(members) * fraction)
        if count < 1 or count >= len(members):
            raise DataError(f"{where / name}: {len(members)} picture{'s' * (len(members) != 1)}, too few to "
                            f"hold out {fraction:g} of them for validation and train on the rest; add "
                            "pictures, change --validation-split, or give train/ and test/ folders")
        held[rng.choice(members, size=count, replace=False)] = True
    return held
