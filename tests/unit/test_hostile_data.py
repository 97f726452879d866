"""Hostile files for the data loaders: mutations, absurd headers, gzip bombs, pickles."""

from __future__ import annotations

import gzip
import io
import os
import random
import zipfile
import zlib

import numpy as np
import pytest
from helpers import idx_bytes, loading_in_a_fresh_process, slice_arrays

from app import data
from app.data import IDX_FILES, DataError


def _idx_folder(folder, files: dict[str, bytes]):
    folder.mkdir(exist_ok=True)
    for stem, content in files.items():
        (folder / stem).write_bytes(content)
    return folder


def _mutate(rng: random.Random, blob: bytes) -> bytes:
    kind = rng.choice(["truncate", "flip", "header", "append", "zero"])
    if kind == "truncate":
        return blob[: rng.randrange(len(blob))]
    if kind == "append":
        return blob + rng.randbytes(rng.randrange(1, 64))
    if kind == "zero":
        return b""
    blob = bytearray(blob)
    where = rng.randrange(16) if kind == "header" else rng.randrange(len(blob))
    blob[where] = rng.randrange(256)
    return bytes(blob)


def test_fuzzed_files_load_correctly_or_are_refused_with_a_data_error(tmp_path):
    """Every mutation either still loads as valid digits or is refused as DataError, nothing else."""
    rng = random.Random(2026)
    arrays = {k: v[:50] for k, v in slice_arrays().items()}
    raw = {IDX_FILES[k]: idx_bytes(v) for k, v in arrays.items()}
    npz = io.BytesIO()
    np.savez_compressed(npz, **arrays)
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(300):
        if case % 3 == 0:  # an .npz
            path = tmp_path / f"case{case}.npz"
            path.write_bytes(_mutate(rng, npz.getvalue()))
        else:  # IDX files, gzipped or not, one of them mutated (gzip bytes or the raw content)
            target = rng.choice(list(raw))
            files = {stem: gzip.compress(content) if case % 3 == 1 else content
                     for stem, content in raw.items()}
            files[target] = (gzip.compress(_mutate(rng, raw[target])) if case % 3 == 1 and rng.random() < 0.5
                             else _mutate(rng, files[target]))
            suffix = ".gz" if case % 3 == 1 else ""
            path = _idx_folder(tmp_path / f"case{case}", {f"{s}{suffix}": c for s, c in files.items()})
        try:
            digits = data.load("mnist", str(path))
        except DataError:
            outcomes["refused"] += 1
            continue
        assert digits.x_train.shape[1:] == (28, 28, 1) and digits.x_train.dtype == np.uint8
        assert len(digits.x_train) == len(digits.y_train) and digits.y_train.max() <= 9
        outcomes["loaded"] += 1
    assert outcomes["refused"] > 150 and outcomes["loaded"] > 10, outcomes  # both paths were exercised


def _gzip_bomb(path, header: bytes, zeros: int, fake_size: int | None = None) -> None:
    """A valid IDX header followed by `zeros` zero bytes, streamed through deflate (about 1 MB per GiB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    chunk = bytes(1 << 24)
    with open(path, "wb") as out:
        out.write(compressor.compress(header))
        for _ in range(zeros // len(chunk)):
            out.write(compressor.compress(chunk))
        out.write(compressor.flush())
    if fake_size is not None:  # a trailer that lies about the size, to get past the cheap check
        with open(path, "r+b") as out:
            out.seek(-4, os.SEEK_END)
            out.write((fake_size % 2**32).to_bytes(4, "little"))


@pytest.mark.slow
@pytest.mark.parametrize("lying_trailer", [False, True])
def test_gzip_bombs_over_a_gibibyte_are_refused_in_bounded_memory(tmp_path, lying_trailer):
    folder = tmp_path / "bomb"
    _idx_folder(folder, {f"{IDX_FILES[k]}.gz": gzip.compress(idx_bytes(v))
                         for k, v in slice_arrays().items()})
    header = (0x803).to_bytes(4, "big") + (60_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    expected = 16 + 60_000 * 28 * 28
    _gzip_bomb(folder / "train-images-idx3-ubyte.gz", header, zeros=1200 << 20,
               fake_size=expected if lying_trailer else None)
    assert (folder / "train-images-idx3-ubyte.gz").stat().st_size < 5 << 20
    message, peak_mb, _ = loading_in_a_fresh_process(folder)
    assert "train-images-idx3-ubyte.gz" in message
    assert ("beyond what its header promises" if lying_trailer else "promises") in message
    # Never more than the 47 MB the header allows, whatever the 1.2 GiB inside.
    assert peak_mb < 250, peak_mb


@pytest.mark.parametrize("dims, words", [
    ((4_000_000_000, 28, 28), "header claims"),
    ((100, 28_000, 28_000), "expected 28x28"),
    ((0, 28, 28), "header claims 0 items"),
])
def test_absurd_idx_headers_are_refused_before_reading(tmp_path, dims, words):
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    files = {f"{IDX_FILES[k]}": idx_bytes(v) for k, v in slice_arrays().items()}
    files["train-images-idx3-ubyte"] = header + bytes(1000)
    message, peak_mb, _ = loading_in_a_fresh_process(_idx_folder(tmp_path / "absurd", files))
    assert words in message and peak_mb < 250


class _Exploit:
    """Unpickling this would create a file: proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_an_npz_with_a_pickle_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pickle-was-loaded"
    arrays = slice_arrays()
    arrays["y_test"] = np.array([_Exploit(str(marker))] * len(arrays["y_test"]), dtype=object)
    np.savez(tmp_path / "evil.npz", **arrays)
    with pytest.raises(DataError, match="pickled"):
        data.load("mnist", str(tmp_path / "evil.npz"))
    assert not marker.exists()


def test_an_npz_claiming_a_huge_array_is_refused_before_allocating(tmp_path):
    """x_train's header claims 10**9 images (784 GB); numpy would allocate that before reading."""
    arrays = {k: v for k, v in slice_arrays().items() if k != "x_train"}
    np.savez(tmp_path / "huge.npz", **arrays)
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "|u1", "fortran_order": False,
                                               "shape": (10**9, 28, 28)})
    npy.write(slice_arrays()["x_train"].tobytes())
    with zipfile.ZipFile(tmp_path / "huge.npz", "a") as archive:
        archive.writestr("x_train.npy", npy.getvalue())
    message, peak_mb, _ = loading_in_a_fresh_process(tmp_path / "huge.npz")
    assert "x_train has shape (1000000000, 28, 28)" in message and peak_mb < 250


def _npz_with_header(tmp_path, key: str, header: dict):
    """The slice, but `key`'s .npy header replaced by `header`, followed by the slice's own bytes."""
    arrays = {k: v for k, v in slice_arrays().items() if k != key}
    path = tmp_path / "claims.npz"
    np.savez(path, **arrays)
    npy = io.BytesIO()
    np.lib.format.write_array_header_2_0(npy, {"fortran_order": False, **header})
    npy.write(slice_arrays()[key].tobytes())
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(f"{key}.npy", npy.getvalue())
    return path


@pytest.mark.parametrize("key, header, says", [
    # A million 28x28 images passes the count check, but each pixel claims 1,400 bytes: 1.1 TB.
    ("x_train", {"descr": "|V1400", "shape": (1_000_000, 28, 28)},
     "x_train has dtype |V1400, expected uint8"),
    ("x_train", {"descr": "<f8", "shape": (1_000_000, 28, 28)}, "x_train has dtype float64, expected uint8"),
    ("x_test", {"descr": "|u1", "shape": (300, 28, 28_000_000)}, "x_test has shape (300, 28, 28000000)"),
    ("y_train", {"descr": "<U100000", "shape": (1_000_000,)},  # 373 GiB of text
     "y_train has shape (1000000,) and dtype <U100000"),
    ("y_test", {"descr": "|u1", "shape": (1_000, 1_000_000)}, "y_test has shape (1000, 1000000)"),
])
def test_an_npz_header_claiming_terabytes_is_refused_by_its_dtype_before_allocating(tmp_path, key, header,
                                                                                     says):
    message, peak_mb, _ = loading_in_a_fresh_process(_npz_with_header(tmp_path, key, header))
    assert says in message and peak_mb < 250, (message, peak_mb)
