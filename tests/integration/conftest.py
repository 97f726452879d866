"""Fixtures shared by the tests: one real trained run, a real TensorBoard serving it, and a real
PostgreSQL server for sweeps across hosts."""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

import pytest
from helpers import SLICE, TensorBoard, run_cli, wait_for


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One real two-epoch run on the slice, shared by the tests that inspect its results."""
    workdir = tmp_path_factory.mktemp("trained")
    # Batches of 64: 19 steps an epoch on the slice's 1,200 images, enough to learn something.
    result = run_cli("--data", str(SLICE), "--epochs", "2", "--batch-size", "64", "--run-name", "tiny",
                     "--batch-log-every", "5", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return result, workdir / "logs" / "fit" / "tiny"


@pytest.fixture(scope="session")
def tensorboard(trained):
    _, run_dir = trained
    server = TensorBoard(run_dir.parent)
    wait_for(lambda: "tiny/validation" in server.get("/data/runs"), 60, "TensorBoard to list the run")
    yield server
    server.stop()


class PostgreSQL:
    """A private PostgreSQL cluster: Debian's server binaries, password authentication over TCP."""

    user, password = "sweeps", "a long test password"

    def __init__(self, port: int, folder):
        self.port, self.folder = port, folder

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database (one per test), and its URL without password."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                             dbname="postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _postgresql_bin():
    import glob

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    initdb = found[-1] if found else shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


@pytest.fixture(scope="session")
def postgresql():
    """A real PostgreSQL server of the tests' own on a free port, started once and removed after.

    initdb refuses to run as root: as root the cluster belongs to Debian's postgres user. Skipped,
    with the script to run, where the server binaries are absent.
    """
    bindir = _postgresql_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): run "
                    "tests/integration/setup_postgresql.sh as root (apt-get install postgresql)")
    as_user = []
    folder = tempfile.mkdtemp(prefix="sweep-postgresql-")
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and no postgres user to run the test server as: run "
                        "tests/integration/setup_postgresql.sh")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, pwfile = os.path.join(folder, "data"), os.path.join(folder, "password")
    run = functools.partial(subprocess.run, check=True, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    run([*as_user, "sh", "-c", f'umask 077; printf %s "$1" > {pwfile}', "sh", PostgreSQL.password])
    run([*as_user, f"{bindir}/initdb", "-D", data, "-U", PostgreSQL.user, f"--pwfile={pwfile}",
         "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--no-sync"])
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    run([*as_user, f"{bindir}/pg_ctl", "-D", data, "-o", options, "-l", os.path.join(folder, "log"), "-w",
         "start"])
    try:
        yield PostgreSQL(port, folder)
    finally:
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
