"""The TensorFlow version is written once, in the Dockerfile's `ARG TF_VERSION`; the rest agrees.

Fast and without Docker: it reads files only.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from helpers import ROOT

# A pinned TensorFlow wherever it appears: an image tag (tensorflow/tensorflow:X.Y.Z-gpu, a stand-in's
# .../tensorflow:X.Y.Z) or a pip pin (tensorflow==, tensorflow-cpu==, tensorflow[and-cuda]==).
PINS = re.compile(r"tensorflow(?::|(?:-cpu|-gpu|\[and-cuda\])?==)(\d+\.\d+(?:\.\d+)?)")
# The files of the image side, which derive the version and must not write it themselves.
IMAGE_SIDE = ("Makefile", "docker-compose.yml", "docker-compose.gpu.yml", ".ci/", "tests/e2e/", "docker/")


def dockerfile_version() -> str:
    found = re.findall(r"^ARG TF_VERSION=(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert len(found) == 1, f"the Dockerfile should declare ARG TF_VERSION=... once, found {found}"
    return found[0]


def pins(path: str, package: str) -> list[str]:
    text = (ROOT / path).read_text()
    return re.findall(rf"^{re.escape(package)}==(\S+)", text, re.MULTILINE | re.IGNORECASE)


def tracked_text_files() -> list[str]:
    """The files git tracks (and new ones it does not ignore), docs/ and binaries left out."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    names = []
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if name.startswith("docs/") or not path.is_file() or b"\0" in path.read_bytes()[:4096]:
            continue
        names.append(name)
    return names


def test_the_dockerfile_declares_a_full_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+", dockerfile_version())


def test_the_python_pins_match_the_dockerfile():
    version = dockerfile_version()
    assert pins("requirements-dev.txt", "tensorflow-cpu") == [version]
    # TensorBoard is released alongside TensorFlow: the same major.minor, its own patch level.
    [tensorboard] = pins("requirements.txt", "tensorboard")
    assert tensorboard.split(".")[:2] == version.split(".")[:2], (tensorboard, version)


def test_no_other_file_pins_another_tensorflow():
    version = dockerfile_version()
    other = {(name, found) for name in tracked_text_files()
             for found in PINS.findall((ROOT / name).read_text(errors="replace")) if found != version}
    assert other == set(), f"TensorFlow pins that differ from the Dockerfile's {version}: {sorted(other)}"


def test_the_image_side_derives_the_version_instead_of_writing_it():
    version = dockerfile_version()
    written = [name for name in tracked_text_files()
               if name.startswith(IMAGE_SIDE) and version in (ROOT / name).read_text(errors="replace")]
    assert written == [], f"{version} written outside the Dockerfile's ARG TF_VERSION: {written}"


# --- The lock files ---------------------------------------------------------------------------------
# requirements*.in are edited by hand; `make lock` (pip-compile) writes each one's lock file,
# requirements*.txt, with a hash for every file of every package, and pip installs them with
# --require-hashes.
LOCKS = {"requirements.txt": "requirements.in", "requirements-cuda.txt": "requirements-cuda.in",
         "requirements-notebook.txt": "requirements-notebook.in",
         "requirements-dev.txt": "requirements-dev.in"}
# A requirement of a lock file: `name==version`, then only --hash options (pip's own format).
LOCKED = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)((?:\s+--hash=sha256:[0-9a-f]{64})*)")
# A requirement of an .in file: a name, extras, and a version when it is pinned (== only; a range is not).
WANTED = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[\w,-]+\])?(?:==([^\s=]\S*)|\s*[<>!~=].*)?")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def logical_lines(text: str) -> list[str]:
    """A requirements file's lines with their continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", text)
    return [line for line in (re.sub(r"(^|\s)#.*", "", raw).strip() for raw in text.splitlines()) if line]


def locked(text: str, name: str = "lock") -> dict[str, str]:
    """name -> version of a lock file; an error for any line that is not a pin with hashes."""
    pins = {}
    for line in logical_lines(text):
        match = LOCKED.fullmatch(line)
        assert match, f"{name}: not `name==version --hash=sha256:...`: {line[:80]}"
        assert match[3], f"{name}: {match[1]}=={match[2]} has no hash"
        pins[normalized(match[1])] = match[2]
    return pins


def wanted(text: str) -> dict[str, str | None]:
    """name -> version (None when unpinned) of an .in file; -r/-c lines left out."""
    found = {}
    for line in logical_lines(text):
        if not line.startswith("-"):
            match = WANTED.fullmatch(line)
            assert match, f"not a requirement this check understands: {line}"
            found[normalized(match[1])] = match[2]
    return found


def check_lock(lock_text: str, in_text: str, name: str = "lock") -> dict[str, str]:
    """The lock has hashes everywhere and every requirement of its .in, at the .in's pin. TensorFlow
    itself is never in a lock: the base image's or tensorflow-cpu is the one there."""
    pins = locked(lock_text, name)
    assert "tensorflow" not in pins, f"{name} pins tensorflow, which would replace the base image's"
    for package, version in wanted(in_text).items():
        if package == "tensorflow":
            continue
        assert package in pins, f"{name} lacks {package}: run make lock"
        assert version in (None, pins[package]), \
            f"{name} pins {package}=={pins[package]}, its .in file {version}: run make lock"
    return pins


def test_every_lock_pins_everything_with_hashes_and_agrees_with_its_in_file():
    for lock, source in LOCKS.items():
        text = (ROOT / lock).read_text()
        check_lock(text, (ROOT / source).read_text(), lock)
        # What Dependabot reads to write it again the same way: the tool, its Python and the options.
        assert re.search(r"^# This file is autogenerated by pip-compile with Python 3\.11$", text, re.M), lock
        assert f"--output-file={lock} " in text and "--generate-hashes" in text and f" {source}\n" in text


def test_the_check_rejects_a_lock_with_a_missing_hash_or_a_stale_pin():
    lock, source = (ROOT / "requirements.txt").read_text(), (ROOT / "requirements.in").read_text()
    version = locked(lock)["keras"]
    # keras's hashes dropped: the line ends after its version.
    no_hash = re.sub(rf"^(keras=={re.escape(version)}) \\\n(?:\s+--hash=\S+(?: \\)?\n)+", r"\1\n", lock,
                     flags=re.MULTILINE)
    assert no_hash != lock
    with pytest.raises(AssertionError, match=f"keras=={re.escape(version)} has no hash"):
        check_lock(no_hash, source)
    # An unpinned line, as a hand edit would add.
    with pytest.raises(AssertionError, match="not `name==version"):
        check_lock(lock + "requests\n", source)
    # The .in file moved on and the lock did not follow.
    with pytest.raises(AssertionError, match=rf"pins keras=={re.escape(version)}, its .in file 9.9.9"):
        check_lock(lock, source.replace(f"keras=={version}", "keras==9.9.9"))
    # TensorFlow itself in a lock (pip-compile --allow-unsafe writes it).
    with pytest.raises(AssertionError, match="pins tensorflow"):
        check_lock(lock + f"tensorflow=={dockerfile_version()} --hash=sha256:{'0' * 64}\n", source)


def test_the_locks_agree_with_each_other_and_with_the_dockerfile():
    version = dockerfile_version()
    assert wanted((ROOT / "requirements.in").read_text())["tensorflow"] == version
    assert wanted((ROOT / "requirements-cuda.in").read_text())["tensorflow"] == version
    locks = {name: locked((ROOT / name).read_text(), name) for name in LOCKS}
    assert locks["requirements-dev.txt"]["tensorflow-cpu"] == version
    # One version of each package in every lock it is in (the .in files' -c lines make it so).
    seen: dict[str, tuple[str, str]] = {}
    for name, pins in locks.items():
        for package, pin in pins.items():
            first = seen.setdefault(package, (name, pin))
            assert first[1] == pin, f"{package}: {first[1]} in {first[0]}, {pin} in {name}"
    # .venv has what the trainer image has on top of TensorFlow, at its versions.
    assert set(locks["requirements.txt"]) <= set(locks["requirements-dev.txt"])
    # The GPU image's wheels: cuDNN 9 (the reason they are installed at all, see the Dockerfile).
    assert locks["requirements-cuda.txt"]["nvidia-cudnn-cu12"].startswith("9.")


def test_the_locks_on_tensorflow_leave_out_setuptools_and_pip():
    """Dependabot writes a lock again with --allow-unsafe when it pins setuptools or pip, and that would put
    tensorflow into it (dependabot-core, python/.../pip_compile_file_updater.rb): the images' two locks on
    TensorFlow leave all three out; the base image has them."""
    for name in ("requirements.txt", "requirements-cuda.txt"):
        text = (ROOT / name).read_text()
        assert not {"setuptools", "pip"} & set(locked(text, name)), name
        [command] = re.findall(r"^#\s+(pip-compile .*)$", text, re.MULTILINE)
        assert "--unsafe-package=tensorflow" in command and "--allow-unsafe" not in command, command


# --- The base image by digest -----------------------------------------------------------------------
DIGEST = "sha256:" + "0123456789abcdef" * 4


def check_base_image_reference(dockerfile: str) -> None:
    """The first FROM takes BASE_IMAGE as it is given, so `name:tag@sha256:...` pins the base image
    (docs/containers.md, "Pinning the base image"); anything appended to it would break that form."""
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert froms and froms[0] == "${BASE_IMAGE}", f"the first FROM should take ${{BASE_IMAGE}}: {froms[:1]}"


def test_the_base_image_can_be_pinned_by_digest(tmp_path):
    dockerfile = (ROOT / "Dockerfile").read_text()
    check_base_image_reference(dockerfile)
    with pytest.raises(AssertionError, match="FROM"):
        check_base_image_reference(dockerfile.replace("FROM ${BASE_IMAGE} ", "FROM ${BASE_IMAGE}-gpu ", 1))
    # The digest form as the default, the way a user writes it in BASE_IMAGE, passes hadolint (make lint's):
    # a reference with both a tag and a digest is valid where Dockerfile syntax is concerned.
    pinned = re.sub(r"^ARG BASE_IMAGE=(\S+)$", rf"ARG BASE_IMAGE=\1@{DIGEST}", dockerfile, flags=re.MULTILINE)
    assert f"-gpu@{DIGEST}" in pinned
    (tmp_path / "Dockerfile").write_text(pinned)
    hadolint = subprocess.run([str(ROOT / ".venv/bin/hadolint"), "Dockerfile"], cwd=tmp_path,
                              capture_output=True, text=True)
    assert hadolint.returncode == 0, hadolint.stdout + hadolint.stderr
