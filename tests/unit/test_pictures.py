"""A folder of your own pictures: both layouts, what is ignored, the size and colour chosen, the
held-out split, the cache (decoded once, reused, rebuilt when a picture changes, never written into
the data folder), and every kind of bad folder refused in one line with nothing left behind.

Decoding runs here in this process (TensorFlow's decoder, as the cache and the export use it); the
runs that train on pictures are in tests/integration/test_picture_runs.py."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import SLICE, loading_in_a_fresh_process, run_main
from PIL import Image

from app import data, picture_cache, pictures
from app.__main__ import main
from tools.common import COLOURS, write_pictures


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("MNIST_TB_CACHE", str(folder))
    return folder


def load(path, **options):
    return data.load("mnist", str(path), **options)


def refused(tmp_path, path, *words, flags=()) -> str:
    result = run_main(main, "--data", str(path), *flags, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and all(w in line for w in words), line
    assert not (tmp_path / "logs").exists()
    cache = tmp_path / "cache" / "pictures"
    assert not cache.exists() or not list(cache.iterdir()), list(cache.iterdir())  # no half-written cache
    return line


# --- what a folder holds --------------------------------------------------------------------------

def test_one_folder_of_class_folders_holds_out_a_share_of_each_class(tmp_path):
    folder = write_pictures(tmp_path / "pics", COLOURS, per_class=10)
    (folder / "sky blue" / "more").mkdir()  # pictures in a class folder's subfolder count too
    Image.new("RGB", (32, 24), (50, 90, 220)).save(folder / "sky blue" / "more" / "extra.bmp")
    (folder / ".hidden class").mkdir()
    Image.new("RGB", (32, 24)).save(folder / ".hidden class" / "x.png")
    images = load(folder)
    # Sorted as written: capitals first, spaces kept; the hidden folder and the litter ignored.
    assert images.class_names == ["Red apple", "green leaf", "sky blue"]
    assert (images.counts("train"), images.counts("test")) == ([8, 8, 9], [2, 2, 2])
    assert images.x_train.dtype == np.uint8 and images.x_train.shape[1:] == (24, 32, 3)
    assert images.details["validation_split"] == 0.2 and len(images.details["validation_files"]) == 6
    assert all(f.split("/")[0] in images.class_names for f in images.details["validation_files"])
    # The same seed holds out the same pictures; another seed others.
    assert load(folder).details["validation_files"] == images.details["validation_files"]
    assert load(folder, seed=7).details["validation_files"] != images.details["validation_files"]


def test_train_and_test_folders_are_the_training_and_validation_sets(tmp_path):
    root = tmp_path / "pics"
    write_pictures(root / "train", COLOURS, per_class=6, grey=True)
    write_pictures(root / "test", COLOURS, per_class=3, grey=True, seed=1)
    images = load(root)
    assert images.details["layout"] == "train-test" and "validation_split" not in images.details
    assert (images.counts("train"), images.counts("test")) == ([6, 6, 6], [3, 3, 3])
    assert images.channels == 1  # no picture has colour


@pytest.mark.parametrize("extension", ["png", "jpg", "jpeg", "gif", "bmp", "webp", "PNG"])
def test_every_format_it_says_it_reads_is_read(tmp_path, extension):
    folder = write_pictures(tmp_path / "pics", {"a": (200, 0, 0), "b": (0, 0, 200)}, per_class=5,
                            formats=(extension,), sizes=((20, 20),))
    images = load(folder)
    assert len(images.y_train) + len(images.y_test) == 10 and images.image_size == "20x20"
    # Red stays red (a GIF's palette, a JPEG's colour conversion): within JPEG's error.
    red = np.asarray(images.x_train)[np.asarray(images.y_train) == 0].mean(axis=(0, 1, 2))
    assert red[0] > 120 and red[2] < 90, red


def test_the_size_is_the_most_common_one_capped_and_the_colour_any_pictures(tmp_path):
    folder = write_pictures(tmp_path / "pics", COLOURS, per_class=6, sizes=((24, 32), (24, 32), (40, 40)))
    scanned = pictures.scan(folder)
    assert pictures.resolve_size(scanned, "auto") == (24, 32)
    assert pictures.resolve_size(scanned, "50x60") == (50, 60)
    assert pictures.resolve_channels(scanned, "auto") == 3 and pictures.resolve_channels(scanned, "1") == 1
    big = write_pictures(tmp_path / "big", COLOURS, per_class=2, sizes=((300, 400),))
    assert pictures.resolve_size(pictures.scan(big), "auto") == (96, 128)  # at most 128 on the longer side
    grey_palette = Image.new("P", (8, 8))
    grey_palette.putpalette([v for i in range(256) for v in (i, i, i)])
    assert not pictures._has_colour(grey_palette)


def test_pictures_of_other_sizes_are_resized_and_converted_as_the_export_does(tmp_path):
    folder = write_pictures(tmp_path / "pics", COLOURS, per_class=5, sizes=((24, 32), (48, 64)))
    images = load(folder, channels="1", image_size="12x16")
    assert images.x_train.shape[1:] == (12, 16, 1)
    import tensorflow as tf

    from app.export import decoded

    # The cache's pixels are the export's decoding of the same file, exactly.
    where = Path(images.details["cache"])
    first = folder / picture_cache.files(where)["train"][0]
    expected = decoded(tf.io.read_file(str(first)), (12, 16), 1).numpy()
    cached = np.load(where / "x_train.npy", mmap_mode="r")[0]
    assert np.array_equal(cached, expected)


# --- the cache --------------------------------------------------------------------------------------

def test_the_cache_is_used_again_and_rebuilt_when_a_picture_changes(tmp_path, cache, capsys):
    folder = write_pictures(tmp_path / "pics", COLOURS, per_class=5)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    first = load(folder)
    assert "decoded 15 pictures" in capsys.readouterr().out
    again = load(folder)
    assert capsys.readouterr().out == ""  # nothing decoded
    assert again.details["cache"] == first.details["cache"] and isinstance(again.x_train, np.memmap)
    assert np.array_equal(np.asarray(again.x_train), np.asarray(first.x_train))
    changed = folder / "green leaf" / "gre-001.jpg"
    Image.new("RGB", (32, 24), (0, 0, 0)).save(changed)
    os.utime(changed, ns=(1, 1))
    rebuilt = load(folder)
    assert "decoded 15 pictures" in capsys.readouterr().out
    assert rebuilt.details["cache"] != first.details["cache"]
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # the data folder untouched
    assert not list(cache.rglob(".tmp-*"))


def test_the_cache_goes_where_the_environment_says(monkeypatch, tmp_path):
    monkeypatch.delenv("MNIST_TB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert picture_cache.cache_root() == tmp_path / "xdg" / "mnist-tensorboard"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert picture_cache.cache_root() == tmp_path / "home" / ".cache" / "mnist-tensorboard"


# --- bad folders, refused ---------------------------------------------------------------------------

def test_an_empty_folder_a_single_class_and_an_empty_class_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    refused(tmp_path, tmp_path / "empty", "empty: no class folders in it")
    one = write_pictures(tmp_path / "one", {"only": (1, 2, 3)}, per_class=3)
    refused(tmp_path, one, "only one class ('only')", "two or more")
    two = write_pictures(tmp_path / "two", COLOURS, per_class=3)
    (two / "empty class").mkdir()
    (two / "empty class" / "notes.txt").write_text("no pictures")
    refused(tmp_path, two, "two/empty class: no pictures in this class folder")


def test_train_and_test_that_disagree_are_refused(tmp_path):
    root = tmp_path / "pics"
    write_pictures(root / "train", COLOURS, per_class=3)
    refused(tmp_path, root, "has train/ but no test/")
    write_pictures(root / "test", {"Red apple": (1, 1, 1), "cherry": (2, 2, 2)}, per_class=2)
    refused(tmp_path, root, "train/ and test/ have different classes",
            "only in train/: green leaf, sky blue", "only in test/: cherry")


def test_a_class_too_small_for_the_split_is_refused(tmp_path):
    folder = write_pictures(tmp_path / "pics", COLOURS, per_class=6)
    for picture in sorted((folder / "sky blue").glob("sky-*"))[2:]:
        picture.unlink()
    refused(tmp_path, folder, "pics/sky blue: 2 pictures, too few to hold out 0.2 of them")
    assert load(folder, validation_split=0.5).counts("test") == [3, 3, 1]  # half of 2 is one


def test_a_file_that_is_no_picture_is_named_unless_skipped(tmp_path, capsys):
    folder = write_pictures(tmp_path / "pics", COLOURS, per_class=5)
    (folder / "green leaf" / "notes.png").write_text("not a picture")
    refused(tmp_path, folder, "green leaf/notes.png: not a picture that can be read", "--skip-bad-images")
    images = load(folder, skip_bad_images=True)
    assert sum(images.counts("train")) + sum(images.counts("test")) == 15
    assert [p for p, _ in images.details["skipped"]] == ["green leaf/notes.png"]


def test_a_cut_off_picture_is_refused_with_its_name_and_nothing_cached(tmp_path):
    folder = write_pictures(tmp_path / "pics", COLOURS, per_class=5)
    cut = folder / "sky blue" / "sky-002.png"
    cut.write_bytes(cut.read_bytes()[:-600])  # the header whole, the pixels cut off
    refused(tmp_path, folder, "sky blue/sky-002.png: does not decode as a picture (cut off or corrupt)")
    images = load(folder, skip_bad_images=True)  # skipped: counted, named, the rest decoded
    assert [p for p, _ in images.details["skipped"]] == ["sky blue/sky-002.png"]
    assert sum(images.counts("train")) + sum(images.counts("test")) == 14
    # A later run without the flag is refused as the first would have been, from the cache.
    refused_line = run_main(main, "--data", str(folder), cwd=tmp_path).stderr
    assert "sky-002.png: does not decode" in refused_line


def png_bomb(path, side: int = 30_000) -> None:
    """A real grayscale PNG of side x side zeros: its header claims 900 million pixels, its file
    holds under a megabyte."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor, row = zlib.compressobj(9), bytes(side + 1)  # filter byte 0, then the row
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_a_picture_whose_header_claims_a_huge_size_is_refused_unread_in_bounded_memory(tmp_path):
    folder = write_pictures(tmp_path / "pics", COLOURS, per_class=3)
    bomb = folder / "Red apple" / "huge.png"
    png_bomb(bomb)
    assert bomb.stat().st_size < 1 << 20
    message, peak_mb, tensorflow = loading_in_a_fresh_process(folder)
    assert "huge.png: its header claims 30000 x 30000 pixels" in message and "not decoded" in message
    assert not tensorflow and peak_mb < 250, (tensorflow, peak_mb)


def test_a_symlink_loop_is_refused(tmp_path):
    folder = write_pictures(tmp_path / "pics", COLOURS, per_class=3)
    os.symlink(folder, folder / "green leaf" / "back up")
    refused(tmp_path, folder, "green leaf/back up: a symbolic link that leads back into a folder above it")
    os.unlink(folder / "green leaf" / "back up")
    os.symlink("self.png", folder / "green leaf" / "self.png")
    refused(tmp_path, folder, "green leaf/self.png: a symbolic link that loops back on itself")


@pytest.mark.parametrize("flags, says", [
    (["--image-size", "64"], "--image-size must be auto or HEIGHTxWIDTH"),
    (["--image-size", "0x10"], "--image-size must be auto or HEIGHTxWIDTH"),
    (["--validation-split", "1.5"], "--validation-split must be a fraction between 0 and 1"),
    (["--channels", "2"], "--channels"),
])
def test_bad_picture_settings_are_refused(tmp_path, flags, says):
    folder = write_pictures(tmp_path / "pics", COLOURS, per_class=3)
    refused(tmp_path, folder, says, flags=flags)


def test_picture_settings_do_not_apply_to_arrays(tmp_path):
    refused(tmp_path, SLICE, "--image-size 32x32: ", "holds 28x28 images", flags=["--image-size", "32x32"])
    refused(tmp_path, SLICE, "--channels 3: ", flags=["--channels", "3"])
