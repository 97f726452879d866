"""docker/write-env, make setup's .env, with a stand-in `docker` that answers the GPU probe either way.

tests/e2e/test_stack.py runs the real thing through `make setup` on this machine, which has no GPU; here
both answers of the probe, the exact .env and what is printed, and the user's own lines kept.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from helpers import ROOT

HEADER = ("# Written by `make setup`, which rewrites these two comments, HOST_UID, HOST_GID and\n"
          "# COMPOSE_FILE each time (re-run it after adding a GPU); lines of your own stay.\n")
MINE = ["# my settings", "TB_HOST=127.0.0.1", "export HOST_UID=1000", "  COMPOSE_FILE = gone.yml",
        HEADER.splitlines()[0], "DATA_DIR=/data/mnist"]


def write_env(folder, gpu: bool) -> subprocess.CompletedProcess:
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    # Records its arguments; exit status 0 as a host with a usable GPU answers, 125 as one without.
    docker.write_text(f'#!/bin/sh\necho "$@" >> "{folder}/docker-calls"\nexit {0 if gpu else 125}\n')
    docker.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOST_UID": "1500", "HOST_GID": "1501"}
    return subprocess.run([ROOT / "docker/write-env", "some/image"], cwd=folder, env=env,
                          capture_output=True, text=True)


@pytest.mark.parametrize("gpu", [True, False])
def test_the_gpu_probe_decides_compose_file(tmp_path, gpu):
    result = write_env(tmp_path, gpu)
    assert result.returncode == 0, result.stderr
    files = "docker-compose.yml:docker-compose.gpu.yml" if gpu else "docker-compose.yml"
    assert (tmp_path / ".env").read_text() == HEADER + f"HOST_UID=1500\nHOST_GID=1501\nCOMPOSE_FILE={files}\n"
    gpu_line = ("GPU: Docker can use this host's NVIDIA GPU; the trainer reserves one" if gpu else
                "GPU: none usable by Docker here (no NVIDIA GPU or container toolkit): training on CPU")
    assert result.stdout == f"{gpu_line}\n.env: HOST_UID=1500 HOST_GID=1501 COMPOSE_FILE={files}\n"
    assert (tmp_path / "docker-calls").read_text() == "run --rm --gpus all --entrypoint true some/image\n"
    assert not (tmp_path / ".env.tmp").exists()


def test_its_own_lines_are_rewritten_and_the_users_kept(tmp_path):
    (tmp_path / ".env").write_text("\n".join(MINE) + "\n")
    assert write_env(tmp_path, gpu=True).returncode == 0
    ours = HEADER + "HOST_UID=1500\nHOST_GID=1501\nCOMPOSE_FILE=docker-compose.yml:docker-compose.gpu.yml\n"
    kept = "# my settings\nTB_HOST=127.0.0.1\nDATA_DIR=/data/mnist\n"
    assert (tmp_path / ".env").read_text() == ours + kept
    # Again, after the GPU went away: nothing doubles, COMPOSE_FILE follows the probe.
    assert write_env(tmp_path, gpu=False).returncode == 0
    assert (tmp_path / ".env").read_text() == ours.replace(":docker-compose.gpu.yml", "") + kept
