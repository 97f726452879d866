"""docker/up-and-check (make multiworker's and make sweep's exit status) with a stand-in `docker`
that plays each way containers can end; docker/notebook keeping the token it writes private; the address
make prints for TensorBoard; the notebook image's server config refusing an empty token; make dashboard
(docker/dashboard) and the dashboard container's entrypoint. The real ones run in tests/e2e."""

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


def make_dashboard(tmp_path, *settings: str, env_lines: str = ""):
    """`make dashboard SETTINGS` in a checkout of links, a stand-in docker: its result, docker's calls."""
    for name in ("Makefile", "docker", "Dockerfile"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / ".env").write_text(env_lines)
    env = stand_in_docker(tmp_path, "127.0.0.1:8080")
    env = {k: v for k, v in env.items() if k not in ("SWEEP_NAME", "SWEEP_STORAGE", "DASHBOARD_PORT")}
    result = subprocess.run(["make", "dashboard", *settings], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return result, calls


@pytest.mark.parametrize("settings, name", [([], "default"), (["SWEEP_NAME=mine"], "mine")])
def test_make_dashboard_starts_it_on_the_sweeps_journal_and_prints_where_it_is(tmp_path, settings, name):
    (tmp_path / "logs" / "sweeps" / name).mkdir(parents=True)
    (tmp_path / "logs" / "sweeps" / name / "journal.log").write_text("")
    result, calls = make_dashboard(tmp_path, *settings)
    assert result.returncode == 0, result.stdout + result.stderr
    shown = f"Optuna Dashboard: http://localhost:8080 (sweep {name} (logs/sweeps/{name}/journal.log);"
    assert f"{shown} make down stops it)" in result.stdout.splitlines(), result.stdout
    assert "compose --profile dashboard up -d --wait dashboard" in calls
    assert not [c for c in calls if "postgres" in c]


def test_make_dashboard_refuses_a_sweep_that_never_ran_and_names_those_that_did(tmp_path):
    for name in ("default", "other"):
        (tmp_path / "logs" / "sweeps" / name).mkdir(parents=True)
        (tmp_path / "logs" / "sweeps" / name / "journal.log").write_text("")
    result, calls = make_dashboard(tmp_path, "SWEEP_NAME=typo")
    assert result.returncode == 2, result.stdout + result.stderr
    said = ("error: no sweep named typo in logs/sweeps (sweeps there: default other); give SWEEP_NAME=<the "
            "sweep file's name:>, or run make sweep first")
    assert said in result.stderr.splitlines(), result.stderr
    assert not [c for c in calls if " up " in c]
    # A checkout where no sweep ran yet (make setup makes logs/fit, not logs/sweeps).
    (tmp_path / "fresh").mkdir()
    result, _ = make_dashboard(tmp_path / "fresh")
    assert result.returncode == 2 and "(sweeps there: none)" in result.stderr, result.stdout + result.stderr


def test_make_dashboard_on_postgresql_starts_the_database_first(tmp_path):
    url = "postgresql://sweeps@postgres/sweeps"
    result, calls = make_dashboard(tmp_path, env_lines=f"SWEEP_STORAGE={url}\n")
    assert result.returncode == 0, result.stdout + result.stderr
    ups = [c for c in calls if " up " in c]
    assert ups == ["compose --profile postgres up -d --wait postgres",
                   "compose --profile dashboard up -d --wait dashboard"], calls
    assert f"Optuna Dashboard: http://localhost:8080 (the studies in {url}; make down stops it)" in \
        result.stdout.splitlines(), result.stdout


def dashboard_entrypoint(tmp_path, storage: str) -> subprocess.CompletedProcess:
    """docker-compose.yml's dashboard entrypoint, its secret in tmp_path, a stand-in optuna-dashboard."""
    import yaml

    shell, flag, script, name = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][
        "dashboard"]["entrypoint"]
    secret = tmp_path / "sweep_db_password"
    secret.write_text("s3cret\n")
    script = script.replace("$$", "$").replace("/run/secrets/sweep_db_password", str(secret))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "optuna-dashboard").write_text('#!/bin/sh\necho "args: $*"\necho "password: ${PGPASSWORD:-}"\n'
                                              'echo "options: ${PGOPTIONS:-}"\n')
    (bin_dir / "optuna-dashboard").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    return subprocess.run([shell, flag, script, name, storage], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=30)


def test_the_dashboard_container_opens_a_journal_as_it_is_and_postgresql_read_only(tmp_path):
    journal = tmp_path / "journal.log"
    journal.write_text("")
    opened = dashboard_entrypoint(tmp_path, str(journal))
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout.splitlines() == [f"args: --host 0.0.0.0 --port 8080 --server wsgiref {journal}",
                                          "password: ", "options: "]
    # PostgreSQL: the sweepers' password from the secret (not the URL), every transaction read-only.
    url = "postgresql://sweeps@postgres/sweeps"
    opened = dashboard_entrypoint(tmp_path, url)
    assert opened.stdout.splitlines() == [f"args: --host 0.0.0.0 --port 8080 --server wsgiref {url}",
                                          "password: s3cret", "options: -c default_transaction_read_only=on"]
    # A journal that is not there: one line, exit status 2, and no dashboard started (it would make one).
    missing = dashboard_entrypoint(tmp_path, "/logs/sweeps/nope/journal.log")
    assert (missing.returncode, missing.stdout) == (2, "")
    said = "error: no study at /logs/sweeps/nope/journal.log: no sweep of that name ran in ./logs\n"
    assert missing.stderr == said
