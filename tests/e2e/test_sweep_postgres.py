"""The postgres profile for real: `make sweep SWEEP_STORAGE=postgresql://sweeps@postgres/sweeps` as the
unprivileged user starts the PostgreSQL container (a stand-in for the official image, built by
standin_postgres_image.sh), then two sweeper containers whose study is in it. One sweeper is `docker
kill`ed mid-trial: no lock tells the other, its heartbeats stop, and after the grace period the other
continues that trial from its checkpoint; the study ends with exactly its trials, each started once.
The same command again exits 0. The server runs locked down: as the user, read-only, no capability,
published on 127.0.0.1 only, its data in the named volume, its password a file no one else reads.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from helpers import wait_for
from stack import PROJECT, sh

# make_sweep: the fixture, make sweep in the background, no container left behind.
from test_sweep import a_trial_mid_way, checkpoints, fresh_sweep, make_sweep, sweeper_container  # noqa: F401

pytestmark = pytest.mark.e2e
NAME, TRIALS, EPOCHS = "e2epg", 3, 6
STANDIN_POSTGRES = "standin/postgres:debian-15"  # what standin_postgres_image.sh builds
STORAGE = "postgresql://sweeps@postgres/sweeps"
DB_PORT = 15432  # not 5432: this machine may run a PostgreSQL of its own
GRACE = 10


@pytest.fixture
def postgres_profile(stack):
    """The stand-in image (built here when missing and running as root), and no server or data left."""
    if sh("docker", "image", "inspect", STANDIN_POSTGRES, check=False).returncode != 0:
        if os.geteuid() != 0:
            pytest.fail(f"no {STANDIN_POSTGRES}: run `sudo tests/e2e/standin_postgres_image.sh`",
                        pytrace=False)
        subprocess.run([Path(__file__).with_name("standin_postgres_image.sh")], check=True, timeout=1800)
    env = {"POSTGRES_IMAGE": STANDIN_POSTGRES, "SWEEP_STORAGE": STORAGE, "SWEEP_DB_PORT": str(DB_PORT)}
    volume = f"{PROJECT}_sweep-db"

    def remove():
        stack.run("docker", "compose", "--profile", "postgres", "rm", "--force", "--stop", "postgres",
                  env=env)
        sh("docker", "volume", "rm", "--force", volume, check=False)

    remove()
    yield env, volume
    remove()


def test_make_sweep_on_postgresql_two_sweepers_one_docker_killed_every_trial_once(
        stack, make_sweep, postgres_profile):  # noqa: F811
    env, volume = postgres_profile
    runs = fresh_sweep(stack, NAME, TRIALS)
    sweep_file = stack.dir / "sweeps" / f"{NAME}.yaml"
    sweep_file.write_text(sweep_file.read_text() + f"heartbeat: {{interval: 2, grace_period: {GRACE}}}\n")
    args = [f"SWEEP=sweeps/{NAME}.yaml", "SWEEPERS=2", f"SWEEP_ARGS=--data {stack.train_data}",
            *(f"{k}={v}" for k, v in env.items())]

    first = make_sweep(args)
    run = wait_for(lambda: a_trial_mid_way(stack, runs), 1200, "a trial with a checkpoint", interval=0.2,
                   process=first.process)
    started = re.compile(rf"^sweeper-(\d+)\s+\| trial \d+ \(.*\): starting run logs/fit/{run}$")
    number = wait_for(lambda: next((m[1] for m in map(started.match, list(first.lines)) if m), None), 30,
                      f"the line that started {run}")
    sh("docker", "kill", sweeper_container(number))  # SIGKILL: no goodbye, no lock the other can see
    killed_at = checkpoints(stack, run)[-1]
    assert 0 < killed_at < EPOCHS
    code, output = first.finish(timeout=3600)
    print(output)
    [failed] = [line for line in output.splitlines() if line.startswith("sweep: failed: ")]
    assert f"{PROJECT}-sweeper-{number} exited with 137" in failed, failed
    # The other one took the killed sweeper's trial over, by heartbeat, in this same make sweep.
    assert re.search(rf"\| trial \d+ \(.*\): continuing run logs/fit/{run}$", output, re.MULTILINE), output
    assert re.search(rf"\| resuming {run} after epoch {killed_at} of {EPOCHS}$", output, re.MULTILINE), output
    assert len(re.findall(rf": starting run logs/fit/{run}$", output, re.MULTILINE)) == 1, output
    assert f"study in the database {STORAGE}" in output

    code, again = make_sweep(args).finish(timeout=3600)
    print(again)
    assert code == 0, again
    tables = [line for line in again.splitlines()
              if line.endswith(f"| sweep {NAME}: {TRIALS} trials ({TRIALS} complete, 0 pruned, 0 failed)")]
    assert len(tables) == 2, again
    assert ": starting run " not in again and ": continuing run " not in again, again

    fit, folder = stack.dir / "logs" / "fit", stack.dir / "logs" / "sweeps" / NAME
    summary = json.loads((folder / "summary.json").read_text())
    assert [(t["number"], t["state"]) for t in summary["trials"]] == [(n, "complete") for n in range(TRIALS)]
    assert sorted(p.name for p in fit.glob(f"{NAME}-trial-*")) == runs
    for each in runs:
        assert json.loads((fit / each / "metrics.json").read_text())["epochs_completed"] == EPOCHS
    assert sorted(p.name for p in folder.iterdir()) == ["summary.json"]  # the study is in the database

    # The server, locked down: as the user, read-only, no capability, on 127.0.0.1, data in the volume.
    [server] = stack.containers("label=com.docker.compose.service=postgres")
    state = json.loads(sh("docker", "inspect", server).stdout)[0]
    config, host = state["Config"], state["HostConfig"]
    assert config["User"] == f"{stack.uid}:{stack.gid}" and config["Image"] == STANDIN_POSTGRES
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["PortBindings"] == {"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(DB_PORT)}]}
    assert [m["Name"] for m in state["Mounts"] if m["Type"] == "volume"] == [volume]
    password = (stack.dir / ".sweep-db-password").read_text()
    assert len(password) >= 24 and (stack.dir / ".sweep-db-password").stat().st_mode & 0o777 == 0o600
    assert not any(password in line for line in config["Env"])  # only POSTGRES_PASSWORD_FILE
    assert "POSTGRES_PASSWORD_FILE=/run/secrets/sweep_db_password" in config["Env"]
    files = sh("docker", "exec", server, "ls", "-ln", "/var/lib/postgresql/data").stdout
    assert re.search(rf"^d\S+ +\d+ +{stack.uid} +{stack.gid} .* pgdata$", files, re.MULTILINE), files
    # Reachable from this host with the password, and refusing a wrong one.
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=DB_PORT, user="sweeps", dbname="sweeps",
                         password=password, connect_timeout=10) as connection:
        assert connection.execute("SELECT count(*) FROM trials").fetchone() == (TRIALS,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=DB_PORT, user="sweeps", dbname="sweeps", password="wrong",
                        connect_timeout=10)
    started = time.monotonic()
    stopped = stack.run("docker", "compose", "--profile", "postgres", "stop", "postgres", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert time.monotonic() - started < 20  # SIGINT: PostgreSQL's fast shutdown, not the 30 s kill
