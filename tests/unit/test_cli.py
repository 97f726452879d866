"""The command line: help, and every kind of bad input refused in one line, with nothing left behind.

In this process, through main(argv), as the fast tier runs command lines; one subprocess per exit path
shows that bad input is refused before TensorFlow is imported."""

from __future__ import annotations

import gzip
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, SLICE, cli_env, idx_bytes, run_main, slice_arrays

from app import config
from app.__main__ import main
from app.data import IDX_FILES


def assert_refused(result: subprocess.CompletedProcess, workdir, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not (workdir / "logs").exists(), f"written: {list((workdir / 'logs').rglob('*'))}"


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return run_main(main, *args, cwd=cwd)


def test_help_shows_every_flag_with_its_default(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # undo argparse's line wrapping
    for flag, default in [("--epochs", "10"), ("--batch-size", "256"), ("--learning-rate", "0.005"),
                          ("--lr-schedule", "cosine"), ("--precision", "auto"), ("--seed", "42"),
                          ("--dataset", "mnist"), ("--data", "download --dataset"), ("--log-dir", "logs"),
                          ("--run-name", "the start time, YYYYMMDD-HHMMSS"), ("--resume", "no"),
                          ("--batch-log-every", "20"), ("--profile-batches", "0 (off)"),
                          ("--strategy", "auto"), ("--deterministic", "off")]:
        assert f"{flag} " in text
        assert f"(default: {default})" in text, flag
    # ...and nothing else: every flag declared in app/config.py, no flag that is not.
    declared = {config.flag(f) for f in config.flag_fields()}
    shown = set(re.findall(r"^  (--[a-z-]+)", result.stdout, re.MULTILINE))
    assert shown == declared  # (argparse lists -h, --help first, on a line of its own)


@pytest.mark.parametrize("args, words", [
    (["--epochs", "-1"], ["--epochs"]),
    (["--epochs", "0"], ["--epochs"]),
    (["--epochs", "ten"], ["--epochs", "ten"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--learning-rate", "0"], ["--learning-rate"]),
    (["--learning-rate", "-0.1"], ["--learning-rate"]),
    (["--learning-rate", "nan"], ["--learning-rate"]),
    (["--seed", "-5"], ["--seed"]),
    (["--dataset", "cifar10"], ["--dataset", "cifar10"]),
    (["--no-such-flag"], ["--no-such-flag"]),
    (["--batch-log-every", "0"], ["--batch-log-every"]),
    (["--profile-batches", "5,2"], ["--profile-batches"]),
    (["--run-name", "../../etc"], ["--run-name"]),
    (["--run-name", "/tmp/elsewhere"], ["--run-name"]),
    (["--resume"], ["--resume", "--run-name"]),
    (["--resume", "--run-name", "never-ran"], ["never-ran"]),
    (["--data", "/no/such/place"], ["/no/such/place"]),
])
def test_bad_flags_are_refused_in_one_line(tmp_path, args, words):
    assert_refused(run_cli(*args, cwd=tmp_path), tmp_path, *words)


def test_log_dir_that_cannot_be_written_is_refused(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    result = run_cli("--data", str(SLICE), "--log-dir", "a-file/logs", cwd=tmp_path)
    assert_refused(result, tmp_path, "--log-dir", "a-file/logs")


def test_unreadable_data_is_refused(tmp_path):
    # A socket file exists but cannot be opened, by root either (file modes would not stop root).
    data = tmp_path / "digits.npz"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(data))
        result = run_cli("--data", str(data), cwd=tmp_path)
    assert_refused(result, tmp_path, str(data), "cannot read")


@pytest.mark.parametrize("args", [
    ["--epochs", "-1"],  # a bad value: ConfigError
    ["--no-such-flag"],  # argparse's own refusal
    ["--data", "/no/such/place"],  # bad data: DataError
])
def test_bad_input_is_refused_before_tensorflow_is_imported(tmp_path, args):
    code = ("import sys, app.__main__ as cli\ntry:\n    code = cli.main(sys.argv[1:])\n"
            "except SystemExit as e:\n    code = e.code\n"
            "assert code == 2 and 'tensorflow' not in sys.modules, sorted(sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "logs").exists()


def test_outside_the_projects_environment_the_commands_say_how_to_get_in(tmp_path):
    # A Python without the project's packages: -S leaves site-packages off its path.
    for module in ("app", "app.sweep"):
        result = subprocess.run([sys.executable, "-S", "-m", module, "--help"], cwd=ROOT, env=cli_env(),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(f"error: python -m {module} needs the project's packages"), line
        assert "make venv" in line


def test_a_run_name_in_use_is_refused_and_the_run_left_as_it_was(tmp_path):
    run = tmp_path / "logs" / "fit" / "first"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    before = {p: p.read_bytes() for p in run.rglob("*")}
    result = run_cli("--data", str(SLICE), "--run-name", "first", cwd=tmp_path)
    assert result.returncode == 2 and "run 'first' already exists" in result.stderr
    assert "add --resume to continue it" in result.stderr
    assert {p: p.read_bytes() for p in run.rglob("*")} == before


# --- bad data files, one per way a dataset can be wrong ------------------------------------------

def _npz(tmp_path, **changes) -> str:
    arrays = {**slice_arrays(), **changes}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return str(path)


def _idx_folder(tmp_path, corrupt: str | None = None) -> str:
    """The slice as four gzipped IDX files, optionally with one of them broken."""
    folder = tmp_path / "idx"
    folder.mkdir()
    for key, stem in IDX_FILES.items():
        raw = idx_bytes(slice_arrays()[key])
        if corrupt == "magic" and key == "x_train":
            raw = b"\x00\x00\x08\x04" + raw[4:]
        if corrupt == "truncated" and key == "x_test":
            raw = raw[: len(raw) // 2]
        if corrupt == "dims" and key == "x_train":
            raw = raw[:8] + (32).to_bytes(4, "big") + raw[12:]
        packed = gzip.compress(raw)
        if corrupt == "gzip" and key == "y_train":
            packed = packed[:10] + b"\xff" * 20 + packed[30:]
        (folder / f"{stem}.gz").write_bytes(packed)
    if corrupt == "missing":
        (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    return str(folder)


def _text_file(path) -> str:
    path.write_text("hello")
    return str(path)


BAD_DATA = {
    "npz without y_test": (lambda p: _npz(p, y_test=None), ["y_test"]),
    "images of the wrong shape": (lambda p: _npz(p, x_train=np.zeros((10, 32, 32), np.uint8),
                                                 y_train=np.zeros(10, np.uint8)), ["(N, 28, 28)"]),
    "float images": (lambda p: _npz(p, x_test=slice_arrays()["x_test"].astype(np.float32) / 255), ["uint8"]),
    "labels outside 0-9": (lambda p: _npz(p, y_train=np.full(1200, 10, np.uint8)), ["labels", "0 to 9"]),
    "counts that differ": (lambda p: _npz(p, y_train=slice_arrays()["y_train"][:-1]), ["1200", "1199"]),
    "an empty set": (lambda p: _npz(p, x_test=np.zeros((0, 28, 28), np.uint8),
                                    y_test=np.zeros(0, np.uint8)), ["empty"]),
    "pickled object arrays": (lambda p: _npz(p, y_test=np.array([object()] * 300, dtype=object)), ["pickle"]),
    "not an npz at all": (lambda p: _text_file(p / "notes.npz"), ["npz"]),
    "a folder without the IDX files": (lambda p: _idx_folder(p, "missing"), ["t10k-labels-idx1-ubyte"]),
    "a corrupt gzip": (lambda p: _idx_folder(p, "gzip"), ["train-labels-idx1-ubyte.gz"]),
    "a bad IDX magic number": (lambda p: _idx_folder(p, "magic"), ["magic"]),
    "a truncated IDX file": (lambda p: _idx_folder(p, "truncated"), ["t10k-images"]),
    "IDX images that are not 28x28": (lambda p: _idx_folder(p, "dims"), ["28x28"]),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_is_refused_in_one_line(tmp_path, case):
    make, words = BAD_DATA[case]
    path = make(tmp_path)
    assert_refused(run_cli("--data", path, cwd=tmp_path), tmp_path, *words)
