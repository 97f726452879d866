"""docker/write-env, make setup's .env, with a stand-in `docker` that answers the GPU probe either way;
.env private (mode 600) from the start under any umask; a TensorBoard published beyond this machine
refused without the opt-in; make build taking the CUDA wheels only where that probe found a GPU.

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


def write_env(folder, gpu: bool, built: bool = True, settings: dict | None = None,
              umask: int = 0o022) -> subprocess.CompletedProcess:
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    # Records its arguments; `image inspect` finds the image if `built`; `run --gpus` exits with 0 as a
    # host with a usable GPU answers, 125 as one without.
    docker.write_text(f"""#!/bin/sh
echo "$@" >> "{folder}/docker-calls"
case "$1" in image) exit {0 if built else 1} ;; esac
exit {0 if gpu else 125}
""")
    docker.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("TB_HOST", "EXPOSE_UNAUTHENTICATED")}
    env |= {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOST_UID": "1500", "HOST_GID": "1501"}
    env |= settings or {}
    return subprocess.run([ROOT / "docker/write-env", "some/image", "the/base:1-gpu"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=30, preexec_fn=lambda: os.umask(umask))


def mode(path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize("gpu", [True, False])
def test_the_gpu_probe_decides_compose_file(tmp_path, gpu):
    result = write_env(tmp_path, gpu)
    assert result.returncode == 0, result.stderr
    files = "docker-compose.yml:docker-compose.gpu.yml" if gpu else "docker-compose.yml"
    assert (tmp_path / ".env").read_text() == HEADER + f"HOST_UID=1500\nHOST_GID=1501\nCOMPOSE_FILE={files}\n"
    gpu_line = ("GPU: Docker can use this host's NVIDIA GPU; the trainer reserves one" if gpu else
                "GPU: none usable by Docker here (no NVIDIA GPU or container toolkit): training on CPU, "
                "and the image is built without the CUDA wheels (CUDA_WHEELS=1 builds them anyway)")
    assert result.stdout == f"{gpu_line}\n.env: HOST_UID=1500 HOST_GID=1501 COMPOSE_FILE={files}\n"
    assert (tmp_path / "docker-calls").read_text() == ("image inspect some/image\n"
                                                       "run --rm --gpus all --entrypoint true some/image\n")
    assert not (tmp_path / ".env.tmp").exists()
    assert mode(tmp_path / ".env") == 0o600


def test_its_own_lines_are_rewritten_and_the_users_kept(tmp_path):
    (tmp_path / ".env").write_text("\n".join(MINE) + "\n")
    assert write_env(tmp_path, gpu=True).returncode == 0
    ours = HEADER + "HOST_UID=1500\nHOST_GID=1501\nCOMPOSE_FILE=docker-compose.yml:docker-compose.gpu.yml\n"
    kept = "# my settings\nTB_HOST=127.0.0.1\nDATA_DIR=/data/mnist\n"
    assert (tmp_path / ".env").read_text() == ours + kept
    # Again, after the GPU went away: nothing doubles, COMPOSE_FILE follows the probe.
    assert write_env(tmp_path, gpu=False).returncode == 0
    assert (tmp_path / ".env").read_text() == ours.replace(":docker-compose.gpu.yml", "") + kept


def test_env_is_private_from_its_first_byte_whatever_the_umask(tmp_path):
    """Other local users must not read .env (it holds JUPYTER_TOKEN): mode 600 even under umask 000,
    already while it is being written, and also where an interrupted setup left a readable .env.tmp."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # grep runs while .env.tmp is open for writing: record the mode the file had then.
    (bin_dir / "grep").write_text(f"""#!/bin/sh
stat -c %a .env.tmp >> "{tmp_path}/modes-while-written"
exec /usr/bin/env PATH=/usr/bin:/bin grep "$@"
""")
    (bin_dir / "grep").chmod(0o755)
    (tmp_path / ".env").write_text("JUPYTER_TOKEN=s3cret\n")
    (tmp_path / ".env.tmp").write_text("left by an interrupted setup\n")
    (tmp_path / ".env.tmp").chmod(0o666)
    result = write_env(tmp_path, gpu=False, umask=0)
    assert result.returncode == 0, result.stderr
    assert mode(tmp_path / ".env") == 0o600
    assert set((tmp_path / "modes-while-written").read_text().split()) == {"600"}
    assert (tmp_path / ".env").read_text().endswith("JUPYTER_TOKEN=s3cret\n")
    assert not (tmp_path / ".env.tmp").exists()


def test_a_rewrite_makes_a_readable_env_private_again(tmp_path):
    """A .env of mode 644 (written before, or chmod'ed by hand) is 600 after make setup, lines kept."""
    (tmp_path / ".env").write_text("JUPYTER_TOKEN=s3cret\n")
    (tmp_path / ".env").chmod(0o644)
    assert write_env(tmp_path, gpu=True).returncode == 0
    assert mode(tmp_path / ".env") == 0o600
    assert (tmp_path / ".env").read_text().endswith("JUPYTER_TOKEN=s3cret\n")


REFUSED = ("error: TB_HOST={host} would publish TensorBoard, which has no authentication, beyond this "
           "machine (Docker's published ports bypass ufw and firewalld); watch it from elsewhere through an "
           "SSH tunnel (docs/containers.md#tensorboard-has-no-authentication), or set "
           "EXPOSE_UNAUTHENTICATED=tensorboard to publish it anyway\n")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "[::]"])
@pytest.mark.parametrize("where", ["environment", ".env"])
def test_tensorboard_beyond_this_machine_is_refused_without_the_opt_in(tmp_path, host, where):
    before = "# mine\nJUPYTER_TOKEN=s3cret\n" + (f"TB_HOST={host}\n" if where == ".env" else "")
    (tmp_path / ".env").write_text(before)
    result = write_env(tmp_path, gpu=True, settings={"TB_HOST": host} if where == "environment" else {})
    assert (result.returncode, result.stdout, result.stderr) == (2, "", REFUSED.format(host=host))
    assert (tmp_path / ".env").read_text() == before  # nothing written, nothing probed
    assert not (tmp_path / "docker-calls").exists()
    assert not (tmp_path / ".env.tmp").exists()


@pytest.mark.parametrize("settings, env_lines", [
    ({"TB_HOST": "0.0.0.0", "EXPOSE_UNAUTHENTICATED": "tensorboard"}, ""),
    ({}, "TB_HOST=0.0.0.0\nEXPOSE_UNAUTHENTICATED=tensorboard\n"),
    ({"TB_HOST": "10.0.0.5"}, "export EXPOSE_UNAUTHENTICATED='tensorboard'\n"),
])
def test_the_opt_in_publishes_it_and_says_so(tmp_path, settings, env_lines):
    (tmp_path / ".env").write_text(env_lines)
    result = write_env(tmp_path, gpu=False, settings=settings)
    assert result.returncode == 0, result.stderr
    host = settings.get("TB_HOST", "0.0.0.0")
    assert result.stdout.splitlines()[0] == (
        f"TensorBoard: published on {host}, without authentication (EXPOSE_UNAUTHENTICATED=tensorboard)")
    assert (tmp_path / ".env").read_text().endswith(env_lines)


@pytest.mark.parametrize("settings", [
    {"TB_HOST": "127.0.0.1"}, {"TB_HOST": "127.0.0.2"}, {"TB_HOST": "::1"}, {"TB_HOST": "[::1]"}, {},
    {"TB_HOST": "0.0.0.0", "EXPOSE_UNAUTHENTICATED": "jupyter"},  # an opt-in for something else
])
def test_loopback_needs_no_opt_in_and_another_opt_in_is_none(tmp_path, settings):
    result = write_env(tmp_path, gpu=False, settings=settings)
    exposed = settings.get("EXPOSE_UNAUTHENTICATED") == "jupyter"
    assert result.returncode == (2 if exposed else 0), result.stderr
    assert "TensorBoard: published" not in result.stdout


def test_before_the_first_build_the_probe_runs_in_the_base_image(tmp_path):
    assert write_env(tmp_path, gpu=False, built=False).returncode == 0
    probe = "run --rm --gpus all --entrypoint true the/base:1-gpu"
    assert (tmp_path / "docker-calls").read_text() == f"image inspect some/image\n{probe}\n"


@pytest.mark.parametrize("env_lines, given, wheels", [
    ("COMPOSE_FILE=docker-compose.yml:docker-compose.gpu.yml\n", {}, "1"),  # setup found a GPU
    ("COMPOSE_FILE=docker-compose.yml\n", {}, "0"),  # it found none
    ("", {}, "0"),  # no setup yet
    ("COMPOSE_FILE=docker-compose.yml\n", {"CUDA_WHEELS": "1"}, "1"),  # the user's choice wins
    ("COMPOSE_FILE=docker-compose.yml\nCUDA_WHEELS=1\n", {}, "1"),  # also as a line of their own
    ("COMPOSE_FILE=docker-compose.yml:docker-compose.gpu.yml\n", {"CUDA_WHEELS": "0"}, "0"),
])
def test_the_build_takes_the_cuda_wheels_only_where_setup_found_a_gpu(tmp_path, env_lines, given, wheels):
    (tmp_path / ".env").write_text(env_lines)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_WHEELS"} | given
    dry = subprocess.run(["make", "-n", "-f", ROOT / "Makefile", "build"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert f"CUDA_WHEELS={wheels} docker compose -f docker-compose.yml build trainer" in dry.stdout
