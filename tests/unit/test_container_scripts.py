"""docker/up-and-check (make multiworker's and make sweep's exit status) with a stand-in `docker`
that plays each way containers can end; docker/notebook keeping the token it writes private; the address
make prints for TensorBoard; and the notebook image's server config refusing an empty token. The real
ones run in tests/e2e."""

from __future__ import annotations

import os
import runpy
import socket
import subprocess

import pytest
from helpers import ROOT


def up_and_check(tmp_path, up_status: int, ps_lines: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "ps").write_text(ps_lines)
    # `compose up` exits with up_status; `compose ps` prints each container's name, state, exit code.
    (bin_dir / "docker").write_text(f"""#!/bin/sh
echo "$@" >> "{tmp_path}/calls"
case "$*" in
  *" up "*) exit {up_status} ;;
  *" ps "*) cat "{tmp_path}/ps" ;;
esac
""")
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run([ROOT / "docker/up-and-check", "sweep", "Run it again.", "See the table.", "sweep",
                           "sweeper"], env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("up_status, ps_lines, code, says", [
    (0, "p-sweeper-1 exited 0\np-sweeper-2 exited 0\n", 0,
     "sweep: done, all 2 containers exited with 0; See the table."),
    (0, "p-sweeper-1 exited 0\np-sweeper-2 exited 3\n", 1,
     "sweep: failed: p-sweeper-2 exited with 3; their output above says why. Run it again."),
    (0, "p-sweeper-1 running 0\n", 1, "sweep: failed: p-sweeper-1 running with 0;"),
    (130, "p-sweeper-1 exited 0\n", 1, "sweep: failed: compose up ended with exit status 130;"),
    (1, "", 1, "sweep: failed: compose up ended with exit status 1, no sweeper container ran;"),
    (0, "", 1, "sweep: failed: no sweeper container ran;"),
])
def test_up_and_check_says_how_the_containers_ended(tmp_path, up_status, ps_lines, code, says):
    result = up_and_check(tmp_path, up_status, ps_lines)
    assert result.returncode == code, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith(says), result.stdout
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "compose --profile sweep up --force-recreate sweeper"
    assert calls[-1] == "compose --profile sweep rm --force --stop sweeper"  # the finished ones removed


class Config:
    """What Jupyter's loader hands the config file as `c`: attributes made on first use."""

    def __getattr__(self, name):
        value = type(self)()
        setattr(self, name, value)
        return value


@pytest.mark.parametrize("token", ["", None])
def test_the_notebook_server_refuses_to_start_without_a_token(monkeypatch, token):
    if token is None:
        monkeypatch.delenv("JUPYTER_TOKEN", raising=False)
    else:
        monkeypatch.setenv("JUPYTER_TOKEN", token)
    with pytest.raises(SystemExit, match="JUPYTER_TOKEN is empty: make notebook writes one into .env"):
        runpy.run_path(str(ROOT / "docker/image/jupyter_server_config.py"), {"get_config": Config})


def test_the_notebook_server_takes_the_token_and_listens_inside_the_container(monkeypatch):
    monkeypatch.setenv("JUPYTER_TOKEN", "s3cret")
    c = runpy.run_path(str(ROOT / "docker/image/jupyter_server_config.py"), {"get_config": Config})["c"]
    assert c.IdentityProvider.token == "s3cret"
    assert (c.ServerApp.ip, c.ServerApp.port, c.ServerApp.open_browser) == ("0.0.0.0", 8888, False)


def stand_in_docker(tmp_path, port_answer: str) -> dict[str, str]:
    """A `docker` that records its calls, finds no GPU, and says a service's port is at `port_answer`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(f"""#!/bin/sh
echo "$@" >> "{tmp_path}/calls"
case "$*" in
  *" port "*) echo "{port_answer}" ;;
  "run --rm --gpus"*) exit 125 ;;
esac
""")
    (bin_dir / "docker").chmod(0o755)
    unset = ("JUPYTER_TOKEN", "TB_HOST", "TB_PORT", "EXPOSE_UNAUTHENTICATED", "MAKEFLAGS", "MAKELEVEL")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return env | {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize("existing", [None, "# mine\nDATA_DIR=/data\n"])
def test_make_notebook_writes_its_token_into_a_private_env(tmp_path, existing):
    """The token lets whoever has it run code as you: never in a file other users can read, whatever
    the umask and whatever mode .env had."""
    env_file = tmp_path / ".env"
    if existing is not None:
        env_file.write_text(existing)
        env_file.chmod(0o644)
    env = stand_in_docker(tmp_path, "127.0.0.1:8888")
    result = subprocess.run([ROOT / "docker/notebook"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=30, preexec_fn=lambda: os.umask(0))
    assert result.returncode == 0, result.stderr
    assert env_file.stat().st_mode & 0o777 == 0o600
    [token] = [line[len("JUPYTER_TOKEN="):] for line in env_file.read_text().splitlines()
               if line.startswith("JUPYTER_TOKEN=")]
    assert len(token) == 48 and env_file.read_text().startswith(existing or "JUPYTER_TOKEN=")
    address = f"http://127.0.0.1:8888/lab/tree/mnist_tensorboard.ipynb?token={token}"
    assert f"JupyterLab: {address} " in result.stdout


@pytest.mark.parametrize("published, settings, shown", [
    ("127.0.0.1:6006", {}, "http://localhost:6006"),
    ("0.0.0.0:6006", {"TB_HOST": "0.0.0.0", "EXPOSE_UNAUTHENTICATED": "tensorboard"},
     f"http://{socket.gethostname()}:6006 (every interface of this host, without authentication)"),
    ("192.168.1.20:6007", {"TB_HOST": "192.168.1.20", "EXPOSE_UNAUTHENTICATED": "tensorboard"},
     "http://192.168.1.20:6007 (without authentication)"),
])
def test_make_tensorboard_prints_where_it_really_is(tmp_path, published, settings, shown):
    """Opted in to every interface, make names this host and says what it exposes, not localhost."""
    for name in ("Makefile", "docker", "Dockerfile"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = stand_in_docker(tmp_path, published) | settings
    result = subprocess.run(["make", "tensorboard"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"TensorBoard: {shown}" in result.stdout.splitlines(), result.stdout
