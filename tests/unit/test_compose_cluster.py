"""app/scale/compose_cluster.py without Docker: the cluster from the container names, finding this
container's task with a stand-in resolver, the one-line errors, the GPU each member keeps, the
command it execs, and that docker-compose.yml sets what the module reads.

The real thing (two containers on a compose network) runs in tests/e2e/test_multiworker.py.
"""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from helpers import ROOT

from app.scale import cluster_spec, distribution, hardware, jobset_cluster
from app.scale import compose_cluster as cc

PROJECT = "mnist-tensorboard"
# The addresses Docker's DNS would give: the chief and three workers.
ADDRESSES = {f"{PROJECT}-chief-1": "172.30.0.2", **{f"{PROJECT}-worker-{i}": f"172.30.0.{i + 2}"
                                                    for i in range(1, 4)}}


def resolver(addresses: dict[str, str], unknown_until: dict[str, int] | None = None):
    """A stand-in for Docker's DNS; a name in unknown_until fails that many lookups first."""
    failures = dict(unknown_until or {})

    def resolve(host: str) -> list[str]:
        if failures.get(host, 0) > 0:
            failures[host] -= 1
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        if host not in addresses:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return [addresses[host]]
    return resolve


class Clock:
    """A fake monotonic clock that sleep() advances."""

    def __init__(self):
        self.now, self.sleeps = 0.0, 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1


def test_the_cluster_names_the_compose_containers():
    assert cc.cluster(PROJECT, 2) == {
        "chief": [f"{PROJECT}-chief-1:2222"],
        "worker": [f"{PROJECT}-worker-1:2222", f"{PROJECT}-worker-2:2222"],
    }
    assert cc.tasks(cc.cluster("p", 2)) == [("chief", 0, "p-chief-1"), ("worker", 0, "p-worker-1"),
                                            ("worker", 1, "p-worker-2")]


def test_compose_and_jobset_pods_build_their_cluster_with_the_one_function(monkeypatch):
    """cluster_spec.cluster_spec makes every cluster spec: the compose containers' and a JobSet's (or a
    TrainJob's) pods', the chief first (tests/unit/test_kubernetes_jobs.py builds the pods' from their
    environment)."""
    seen = []
    original = cluster_spec.cluster_spec

    def spy(members, port=cluster_spec.PORT):
        seen.append(list(members))
        return original(members, port)

    monkeypatch.setattr(cc, "cluster_spec", spy)
    monkeypatch.setattr(jobset_cluster, "cluster_spec", spy)
    assert cc.cluster(PROJECT, 1) == {"chief": [f"{PROJECT}-chief-1:2222"],
                                      "worker": [f"{PROJECT}-worker-1:2222"]}
    pod = jobset_cluster.settings({"JOBSET_NAME": "js", "REPLICATED_JOB_NAME": "node",
                                   "JOB_COMPLETION_INDEX": "0", "WORKERS": "1"})
    assert jobset_cluster.cluster(pod) == {"chief": ["js-node-0-0.js:2222"],
                                           "worker": ["js-node-0-1.js:2222"]}
    assert seen == [[f"{PROJECT}-chief-1", f"{PROJECT}-worker-1"], ["js-node-0-0.js", "js-node-0-1.js"]]
    assert [cluster_spec.task_of(i) for i in range(3)] == [("chief", 0), ("worker", 0), ("worker", 1)]
    assert original(["a", "b:9"], 1) == {"chief": ["a:1"], "worker": ["b:9"]}  # an explicit port stays


@pytest.mark.parametrize("mine, task", [("172.30.0.2", ("chief", 0)), ("172.30.0.3", ("worker", 0)),
                                        ("172.30.0.5", ("worker", 2))])
def test_each_container_finds_its_own_task_by_its_address(mine, task):
    clock = Clock()
    found = cc.find_task(cc.cluster(PROJECT, 3), resolver(ADDRESSES), lambda a: a == mine,
                         clock=clock, sleep=clock.sleep)
    assert found == task
    assert clock.sleeps == 0


def test_it_waits_until_every_name_resolves():
    clock = Clock()
    late = {f"{PROJECT}-worker-3": 5, f"{PROJECT}-chief-1": 2}  # still starting, or restarting
    found = cc.find_task(cc.cluster(PROJECT, 3), resolver(ADDRESSES, late), lambda a: a == "172.30.0.3",
                         wait_seconds=60, clock=clock, sleep=clock.sleep)
    assert found == ("worker", 0)
    assert clock.sleeps == 5


def test_a_member_that_never_appears_ends_the_wait_with_one_line_naming_it():
    clock = Clock()
    only_two = {k: v for k, v in ADDRESSES.items() if not k.endswith(("-3", "-2"))}
    with pytest.raises(cc.ClusterError) as e:
        cc.find_task(cc.cluster(PROJECT, 3), resolver(only_two), lambda a: a == "172.30.0.2",
                     wait_seconds=30, clock=clock, sleep=clock.sleep)
    assert str(e.value) == (
        f"{PROJECT}-worker-2, {PROJECT}-worker-3 did not resolve within 30 s: start every member together "
        "(docker compose --profile multiworker up, or make multiworker), with the same WORKERS (3) for all")
    assert e.value.exit_code == 1  # a failure: Docker's restart policy tries again
    assert 30 <= clock.now <= 31


def test_a_container_outside_the_cluster_says_how_to_scale():
    """docker compose up --scale worker=3 with WORKERS=2: the third worker is none of the names."""
    with pytest.raises(cc.ClusterError) as e:
        cc.find_task(cc.cluster(PROJECT, 2), resolver(ADDRESSES), lambda a: a == "172.30.0.5")
    assert str(e.value).startswith(f"none of {PROJECT}-chief-1, {PROJECT}-worker-1, {PROJECT}-worker-2 "
                                   "resolves to this container's address")
    assert "scale the workers with WORKERS (not docker compose --scale)" in str(e.value)
    assert e.value.exit_code == 2
    with pytest.raises(cc.ClusterError, match="^more than one of "):
        cc.find_task(cc.cluster(PROJECT, 2), resolver(ADDRESSES), lambda a: True)


@pytest.mark.parametrize("environ, problem", [
    ({"WORKERS": "1"}, "COMPOSE_PROJECT_NAME is not set: run this in the chief or worker service"),
    ({"COMPOSE_PROJECT_NAME": PROJECT, "WORKERS": "0"}, "WORKERS='0': want the number of worker containers"),
    ({"COMPOSE_PROJECT_NAME": PROJECT, "WORKERS": "two"}, "WORKERS='two': want the number"),
    ({"COMPOSE_PROJECT_NAME": PROJECT}, "WORKERS='': want the number"),
])
def test_bad_settings_are_refused_in_one_line(environ, problem):
    with pytest.raises(cc.ClusterError) as e:
        cc.settings(environ)
    assert str(e.value).startswith(problem) and "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_tf_config_is_what_the_trainer_reads(monkeypatch):
    spec = cc.cluster(PROJECT, 2)
    config = cc.tf_config(spec, ("worker", 1))
    assert json.loads(config) == {"cluster": spec, "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", config)
    assert distribution.cluster() == (3, "worker:1")  # so --strategy auto picks multi-worker


@pytest.mark.parametrize("task, gpus, expected", [
    (("chief", 0), 0, None), (("worker", 0), 0, None),  # a CPU host: nothing to choose
    (("chief", 0), 4, "0"), (("worker", 0), 4, "1"), (("worker", 2), 4, "3"),
    (("worker", 1), 2, "0"), (("worker", 2), 2, "1"),  # more members than GPUs: round robin
])
def test_each_member_keeps_one_gpu(task, gpus, expected):
    assert cc.gpu_for(task, gpus) == expected


def test_gpus_are_counted_by_their_device_nodes(tmp_path):
    for name in ("nvidia0", "nvidia1", "nvidia12", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "null"):
        (tmp_path / name).touch()
    assert hardware.count_gpus(str(tmp_path)) == 3
    assert hardware.count_gpus(str(tmp_path / "absent")) == 0


def test_multiworker_args_are_split_like_a_shell_and_come_last():
    assert cc.app_args(["--run-name", "mw", "--resume", "auto"], "--epochs 3  --data '/data/my digits.npz'") \
        == ["--run-name", "mw", "--resume", "auto", "--epochs", "3", "--data", "/data/my digits.npz"]
    assert cc.app_args(["--run-name", "mw"], "") == ["--run-name", "mw"]
    with pytest.raises(cc.ClusterError, match=r"^MULTIWORKER_ARGS='--data \"/da': No closing quotation"):
        cc.app_args([], '--data "/da')


def test_the_local_address_test_binds_only_to_its_own_addresses():
    assert cc.is_mine("127.0.0.1")
    assert not cc.is_mine("192.0.2.1")  # TEST-NET-1: never a local address
    assert "127.0.0.1" in cc.resolve("localhost")


class Exec:
    def __init__(self):
        self.calls = []

    def __call__(self, path, argv, env):
        self.calls.append((path, argv, env))


def run_main(argv, environ, mine="172.30.0.3", dev="/nonexistent", **kwargs):
    execve = Exec()
    code = cc.main(argv, environ, resolve=resolver(ADDRESSES), is_mine=lambda a: a == mine, dev=dev,
                   execve=execve, **kwargs)
    return code, execve.calls


def test_main_execs_the_trainer_with_tf_config_and_the_same_flags(capsys):
    environ = {"COMPOSE_PROJECT_NAME": PROJECT, "WORKERS": "2", "MULTIWORKER_ARGS": "--epochs 2",
               "PATH": "/usr/bin"}
    code, [(path, argv, env)] = run_main(["--run-name", "mw", "--resume", "auto"], environ)
    assert code == 0
    assert path == sys.executable
    assert argv == [sys.executable, "-m", "app", "--run-name", "mw", "--resume", "auto", "--epochs", "2"]
    assert json.loads(env["TF_CONFIG"]) == {"cluster": cc.cluster(PROJECT, 2),
                                            "task": {"type": "worker", "index": 0}}
    assert env["PATH"] == "/usr/bin" and "CUDA_VISIBLE_DEVICES" not in env
    assert capsys.readouterr().out == "compose cluster: this is worker:0 of a chief and 2 workers\n"


def test_main_keeps_one_gpu_unless_told_which(tmp_path, capsys):
    for i in range(4):
        (tmp_path / f"nvidia{i}").touch()
    environ = {"COMPOSE_PROJECT_NAME": PROJECT, "WORKERS": "3"}
    _, [(_, _, env)] = run_main([], environ, mine="172.30.0.4", dev=str(tmp_path))
    assert (env["CUDA_VISIBLE_DEVICES"], env["CUDA_DEVICE_ORDER"]) == ("2", "PCI_BUS_ID")
    assert capsys.readouterr().out.endswith("this is worker:1 of a chief and 3 workers, on GPU 2\n")
    _, [(_, _, env)] = run_main([], {**environ, "CUDA_VISIBLE_DEVICES": "3"}, mine="172.30.0.4",
                                dev=str(tmp_path))
    assert env["CUDA_VISIBLE_DEVICES"] == "3"  # the user's choice stands


def test_main_refuses_bad_settings_before_exec(capsys):
    code, calls = run_main(["--run-name", "mw"], {"COMPOSE_PROJECT_NAME": PROJECT, "WORKERS": "none"})
    assert (code, calls) == (2, [])
    assert capsys.readouterr().err.startswith("error: WORKERS='none': want the number of worker containers")
    code, calls = run_main([], {"COMPOSE_PROJECT_NAME": "other", "WORKERS": "1"}, wait_seconds=0)
    assert (code, calls) == (1, [])
    assert capsys.readouterr().err.startswith(
        "error: other-chief-1, other-worker-1 did not resolve within 0 s")


def test_help_needs_no_cluster():
    code, [(_, argv, env)] = run_main(["--help"], {})
    assert code == 0 and argv[-1] == "--help" and "TF_CONFIG" not in env


# --- docker-compose.yml and docker-compose.gpu.yml set what the module reads -------------------

def compose(name: str = "docker-compose.yml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_the_compose_services_run_the_module_with_the_variables_it_reads():
    spec = compose()
    trainer = spec["services"]["trainer"]
    for name in ("chief", "worker"):
        service = spec["services"][name]
        assert service["profiles"] == ["multiworker"]
        assert service["image"] == trainer["image"]
        assert service["entrypoint"] == ["python3", "-m", "app.scale.compose_cluster"]
        assert service["command"] == ["--run-name", "${MULTIWORKER_RUN:-multiworker}", "--resume", "auto"]
        assert service["environment"] == {"COMPOSE_PROJECT_NAME": "${COMPOSE_PROJECT_NAME}",
                                          "WORKERS": "${WORKERS:-1}",
                                          "MULTIWORKER_ARGS": "${MULTIWORKER_ARGS:-}"}
        assert service["volumes"] == trainer["volumes"]
        for key in ("user", "cap_drop", "security_opt", "read_only", "tmpfs"):  # the x-locked-down anchor
            assert service[key] == spec["x-locked-down"][key], (name, key)
        assert service["restart"].startswith("on-failure:")
        assert "ports" not in service  # port 2222 stays on the compose network
    assert spec["services"]["worker"]["deploy"] == {"replicas": "${WORKERS:-1}"}
    assert "deploy" not in spec["services"]["chief"]
    # The fixed project name is what the container names, and so the cluster, start with.
    assert spec["name"] == PROJECT
    assert cc.PORT == 2222


def test_plain_compose_up_starts_tensorboard_only():
    services = compose()["services"]
    assert [name for name, s in services.items() if not s.get("profiles")] == ["tensorboard"]


def test_the_gpu_file_hands_every_member_all_gpus_to_choose_from():
    services = compose("docker-compose.gpu.yml")["services"]
    assert services["trainer"]["deploy"]["resources"]["reservations"]["devices"][0]["count"] == "${GPUS:-1}"
    for name in ("chief", "worker"):
        [device] = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device == {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
