"""TF_CONFIG's cluster spec: the one function that every launcher of this project builds it with.

Two launchers use it, each from what its platform tells a member about itself:
compose_cluster.py (the compose multiworker profile: the container names) and jobset_cluster.py (the
pods of a JobSet, and of a Kubeflow Trainer TrainJob, which runs as one: the pod's index and host names).
Both list the members in the same order, the chief first, and hand the list to `cluster_spec`; the
training operator's TFJob (deploy/kubernetes/base) writes TF_CONFIG itself. docs/scaling.md.

Also here: what both launchers do next, waiting until every member's name resolves (a member that
starts late or restarts is not resolvable yet), and replacing themselves with the trainer.
"""

from __future__ import annotations

import errno
import json
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping

PORT = 2222  # each member's tf.distribute server, reachable only from the job's own members


class ClusterError(Exception):
    """The cluster cannot be formed; the message is one line that says what to do."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def cluster_spec(members: list[str], port: int = PORT) -> dict[str, list[str]]:
    """TF_CONFIG's cluster: the first member the chief, the others the workers, in order. A member is
    a host name (given `port`) or an explicit host:port."""
    addresses = [m if ":" in m else f"{m}:{port}" for m in members]
    return {"chief": addresses[:1], "worker": addresses[1:]}


def task_of(position: int) -> tuple[str, int]:
    """The task of the member at `position` of cluster_spec's list: 0 the chief, i worker i - 1."""
    return ("chief", 0) if position == 0 else ("worker", position - 1)


def tasks(spec: Mapping[str, list[str]]) -> list[tuple[str, int, str]]:
    """Every (task type, index, host name) of the cluster, the chief first."""
    return [(kind, i, address.rsplit(":", 1)[0]) for kind in ("chief", "worker")
            for i, address in enumerate(spec.get(kind, []))]


def tf_config(spec: Mapping[str, list[str]], task: tuple[str, int]) -> str:
    kind, index = task
    return json.dumps({"cluster": dict(spec), "task": {"type": kind, "index": index}})


def wait_for_names(hosts: list[str], resolve: Callable[[str], Iterable[str]], wait_seconds: float,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> tuple[dict[str, set[str]], list[str]]:
    """({host: its addresses}, hosts still unknown): polls every second until all resolve or
    `wait_seconds` have passed. `resolve(host)` raises OSError while the host has no address."""
    deadline = clock() + wait_seconds
    while True:
        addresses, missing = {}, []
        for host in dict.fromkeys(hosts):
            try:
                addresses[host] = set(resolve(host))
            except OSError:
                missing.append(host)
        if not missing or clock() >= deadline:
            return addresses, missing
        sleep(1.0)


def resolve(host: str) -> list[str]:
    """The addresses of `host`; OSError (socket.gaierror) while the DNS does not know it."""
    return sorted({info[4][0] for info in socket.getaddrinfo(host, PORT, type=socket.SOCK_STREAM)})


def is_mine(address: str) -> bool:
    """Whether `address` is one of this container's: only a local address can be bound to."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                return False
            raise
    return True


def exec_trainer(args: list[str], env: dict, execve: Callable[[str, list[str], dict], object]) -> None:
    """Replace this process with `python -m app ARGS`, so that a stop signals the trainer directly."""
    execve(sys.executable, [sys.executable, "-m", "app", *args], env)
