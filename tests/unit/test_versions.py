"""The TensorFlow version is written once, in the Dockerfile's `ARG TF_VERSION`; the rest agrees.

Fast and without Docker: it reads files only.
"""

from __future__ import annotations

import re
import subprocess

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
