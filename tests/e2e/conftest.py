"""Fixtures for the end-to-end tests: the stack, set up once per session (see stack.py).

The machine itself (Docker, Compose, the e2e user, the stand-in base image, Chromium) is prepared
by setup_machine.sh, which `make e2e` runs as root; here it is only checked.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

import pytest
from stack import ARTIFACTS, ROOT, SHARED_MNIST, STANDIN, USER, Stack, sh

HINT = "run `sudo tests/e2e/setup_machine.sh` (make e2e does it when run as root)"


def _missing(what: str):
    pytest.fail(f"e2e machine not ready: {what}; {HINT}", pytrace=False)


def _unprivileged_user() -> tuple[Path, int, int]:
    if os.geteuid() != 0:  # a developer's own account, in the docker group
        entry = pwd.getpwuid(os.geteuid())
        return Path(entry.pw_dir), entry.pw_uid, entry.pw_gid
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        _missing(f"no user {USER}")
    if entry.pw_uid == 1000:  # the UID compose files tend to assume: it would hide exactly those bugs
        _missing(f"user {USER} has UID 1000")
    return Path(entry.pw_dir), entry.pw_uid, entry.pw_gid


def _check_machine(stack: Stack) -> None:
    """What setup_machine.sh provides, seen by the user who runs the tests' commands."""
    if stack.run("docker", "info").returncode != 0:
        _missing(f"{USER if os.geteuid() == 0 else 'you'} cannot reach the Docker daemon")
    if stack.run("docker", "compose", "version").returncode != 0:
        _missing("no Docker Compose v2 plugin for the user")
    if sh("docker", "image", "inspect", STANDIN, check=False).returncode != 0:
        _missing(f"no stand-in base image {STANDIN}")
    if not shutil.which("chromium"):
        _missing("no chromium")


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
    home, uid, gid = _unprivileged_user()
    if SHARED_MNIST.is_dir():  # the real 10,000 + 10,000 digits, the default 10 epochs
        data_dir, long_run = SHARED_MNIST, ["--data", "/data"]
    else:  # the committed slice, in small batches, to train long enough to watch
        data_dir = ROOT / "tests" / "data"
        long_run = ["--data", "/data/mnist-slice.npz", "--epochs", "30", "--batch-size", "32"]
    stack = Stack(home, uid, gid, data_dir, long_run)
    _copy_checkout(stack.dir, uid, gid)  # a fresh checkout: no .env, no runs
    _check_machine(stack)
    stack.run("make", "down")  # whatever a previous session left running (make needs no .env for it)
    ARTIFACTS.mkdir(exist_ok=True)
    yield stack
    stack.run("make", "down")
