"""Fixtures for the end-to-end tests: the stack, set up once per session (see stack.py)."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

import pytest
from stack import ARTIFACTS, HERE, ROOT, SHARED_MNIST, STANDIN, USER, Stack, sh


def _unprivileged_user() -> tuple[Path, int, int]:
    if os.geteuid() != 0:  # a developer's own account, in the docker group
        entry = pwd.getpwuid(os.geteuid())
        return Path(entry.pw_dir), entry.pw_uid, entry.pw_gid
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        sh("useradd", "--create-home", "--groups", "docker", "--shell", "/bin/bash", USER)
        entry = pwd.getpwnam(USER)
    sh("usermod", "-aG", "docker", USER)
    return Path(entry.pw_dir), entry.pw_uid, entry.pw_gid


def _copy_checkout(target: Path, uid: int, gid: int) -> None:
    """The checkout as git sees it (tracked and new files, nothing ignored), owned by the user."""
    if target.exists():
        shutil.rmtree(target)
    listed = sh("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    for path in [target, *target.rglob("*")]:
        os.chown(path, uid, gid)
    target.parent.chmod(0o755)


@pytest.fixture(scope="session")
def stack() -> Stack:
    if os.geteuid() == 0:
        sh(str(HERE / "ensure_docker.sh"))
        sh(str(HERE / "standin_base_image.sh"), STANDIN, timeout=1800)
        if not shutil.which("chromium"):
            sh("apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium",
               env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
    home, uid, gid = _unprivileged_user()
    if SHARED_MNIST.is_dir():  # the real 10,000 + 10,000 digits, the default 10 epochs
        data_dir, long_run = SHARED_MNIST, ["--data", "/data"]
    else:  # the committed slice, in small batches, to train long enough to watch
        data_dir = ROOT / "tests" / "data"
        long_run = ["--data", "/data/mnist-slice.npz", "--epochs", "30", "--batch-size", "32"]
    stack = Stack(home, uid, gid, data_dir, long_run)
    _copy_checkout(stack.dir, uid, gid)
    stack.run("docker", "compose", "down", "--remove-orphans")  # whatever a previous run left
    ARTIFACTS.mkdir(exist_ok=True)
    yield stack
    stack.run("make", "down")
