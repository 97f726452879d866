"""The container stack for real: a Docker engine, the stand-in base image, a non-root user, Chromium.

No registry can be reached here, so the project's Dockerfile is built on a stand-in for the
official TensorFlow image (standin_base_image.sh). Everything else is the real thing: the
Dockerfile, docker-compose.yml and the Makefile, driven by `make` as an unprivileged user in
the docker group, in a copy of this checkout that the user owns.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path

from helpers import http_get, http_post, run_folders

from tools.common import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
# The Dockerfile's ARG is the one place the TensorFlow version is written (tests/unit/test_versions.py).
TF_VERSION = re.search(r"^ARG TF_VERSION=(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)[1]
STANDIN = f"standin/tensorflow:{TF_VERSION}"  # what setup_machine.sh builds
IMAGE = "mnist-tensorboard/trainer"  # docker-compose.yml's image
USER = "e2e"
# The environment of a user who has exported nothing at all.
BARE_ENV = ("PATH", "HOME", "USER", "LANG")
# A compose project and ports of the tests' own, so that make e2e never meets (or stops) a stack of
# the developer's, nor a port something else holds: set for every command in the stack's environment.
PROJECT = "mnist-tensorboard-e2e"
TB_PORT, NOTEBOOK_PORT = free_port(), free_port()
TB = f"http://127.0.0.1:{TB_PORT}"
TB_SHOWN = f"http://localhost:{TB_PORT}"  # as make prints it
ARTIFACTS = ROOT / "artifacts"


def sh(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, text=True, capture_output=True, stdin=subprocess.DEVNULL,
                          **kwargs)


def tb_get(path: str):
    return http_get(TB + path)


def tb_post(path: str, payload: dict):
    return http_post(TB + path, payload)


def tb_answers() -> bool:
    try:
        tb_get("/data/runs")
        return True
    except OSError:
        return False


@functools.cache
def gpu_usable() -> bool:
    """Whether Docker can give this host's GPU to a container: the same probe as make setup's."""
    probe = sh("docker", "run", "--rm", "--gpus", "all", "--entrypoint", "true", IMAGE, check=False)
    return probe.returncode == 0


class Stack:
    """The project checkout of the unprivileged user, and ways to run commands there as them."""

    def __init__(self, home: Path, uid: int, gid: int, data_dir: Path, long_run: list[str]):
        self.dir, self.uid, self.gid = home / "mnist-tensorboard", uid, gid
        # long_run: flags for a run that lasts long enough to watch, stop and kill (10 s or more)
        self.data_dir, self.long_run = data_dir, long_run
        self.train_data = long_run[1]  # --data, as the container sees it
        self.env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(home), "USER": USER, "LANG": "C.UTF-8",
            # The two settings this machine needs: the stand-in base image, and the proxy's CA
            # bundle lent to pip during the build. No CUDA_WHEELS: make setup finds no GPU here,
            # and the build skips them by itself (test_stack checks it).
            "BASE_IMAGE": STANDIN,
            "BUILD_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
            "DATA_DIR": str(data_dir),
            "COMPOSE_PROJECT_NAME": PROJECT, "TB_PORT": str(TB_PORT), "NOTEBOOK_PORT": str(NOTEBOOK_PORT),
        }

    def command(self, *args: str, env: dict | None = None, bare: bool = False) -> list[str]:
        """`args` as the user; `bare`: with nothing exported but PATH, HOME, USER and LANG."""
        base = {k: v for k, v in self.env.items() if k in BARE_ENV} if bare else self.env
        pairs = [f"{k}={v}" for k, v in {**base, **(env or {})}.items()]
        prefix = [] if os.geteuid() == self.uid else ["runuser", "-u", USER, "--"]
        return [*prefix, "env", "-i", *pairs, *args]

    def run(self, *args: str, timeout: float = 1800, env: dict | None = None,
            bare: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args, env=env, bare=bare), cwd=self.dir, text=True,
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)

    def start(self, *args: str, env: dict | None = None, bare: bool = False) -> subprocess.Popen:
        return subprocess.Popen(self.command(*args, env=env, bare=bare), cwd=self.dir, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def runs(self) -> list[Path]:
        fit = self.dir / "logs" / "fit"
        return [fit / name for name in run_folders(fit)]

    def containers(self, *filters: str) -> list[str]:
        args = ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"]
        for f in filters:
            args += ["--filter", f]
        return sh(*args).stdout.split()
