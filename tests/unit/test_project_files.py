"""The files around the code agree with each other: the CI workflow runs what .ci/run runs, the changelog's
newest release is pyproject.toml's version, every action is pinned by commit, the license is declared, and
the Makefile's recipes stay short. Each check is shown to reject a broken copy.

Fast and without Docker or network: it reads files only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import nbformat
import pytest
import yaml
from helpers import ROOT

# A make target as a command names it (`make lint`, `sudo ... make e2e`), or a script that .ci/run calls.
STEP = re.compile(r"\bmake\s+([a-z][\w.-]*)|(?<![\w/.-])((?:\./)?[\w-]+(?:/[\w.-]+)+\.sh)\b")


def steps(command: str) -> list[str]:
    """The make targets and scripts a shell command runs, in order: ['make lint', 'tests/e2e/x.sh']."""
    return [f"make {target}" if target else script for target, script in STEP.findall(command)]


def ci_run_steps(text: str) -> list[str]:
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    return [step for line in lines for step in steps(line)]


def workflow_steps(text: str) -> list[str]:
    """Every job's run steps, jobs in the file's order (they run in parallel; the order is for reading)."""
    jobs = yaml.safe_load(text)["jobs"]
    return [step for job in jobs.values() for s in job.get("steps", []) for step in steps(s.get("run", ""))]


def check_workflow_runs_ci_run(workflow: str, ci_run: str) -> None:
    ours, theirs = workflow_steps(workflow), ci_run_steps(ci_run)
    assert ours == theirs, f"the workflow runs {ours}, .ci/run runs {theirs}"


def test_the_workflow_runs_what_ci_run_runs_in_its_order():
    workflow = (ROOT / ".github/workflows/ci.yml").read_text()
    ci_run = (ROOT / ".ci/run").read_text()
    assert ci_run_steps(ci_run) == ["make lint", "make test", "tests/integration/setup_postgresql.sh",
                                    "make test-integration", "make test-slow", "tests/e2e/setup_machine.sh",
                                    "make e2e"]
    check_workflow_runs_ci_run(workflow, ci_run)
    # A broken copy: the slow tests' job dropped.
    broken = workflow.replace("make test-slow", "echo skipped")
    with pytest.raises(AssertionError, match="test-slow"):
        check_workflow_runs_ci_run(broken, ci_run)
    # Or two jobs in another order than .ci/run's.
    swapped = (workflow.replace("run: make lint", "run: make @@")
               .replace("run: make test\n", "run: make lint\n").replace("run: make @@", "run: make test"))
    with pytest.raises(AssertionError, match=r"\['make test', 'make lint'"):
        check_workflow_runs_ci_run(swapped, ci_run)


def check_actions_pinned(workflow: str) -> None:
    for uses in re.findall(r"^\s*(?:-\s+)?uses:\s*(.+)$", workflow, re.MULTILINE):
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*", uses.strip()), \
            f"not pinned by full commit with its release in a comment: {uses}"


def test_every_action_is_pinned_by_commit_with_its_release():
    workflow = (ROOT / ".github/workflows/ci.yml").read_text()
    assert "uses:" in workflow
    check_actions_pinned(workflow)
    with pytest.raises(AssertionError, match="actions/checkout@v7"):
        by_tag = re.sub(r"actions/checkout@[0-9a-f]{40} # v[\d.]+", "actions/checkout@v7", workflow)
        check_actions_pinned(by_tag)


def changelog_release(text: str) -> str:
    """The newest released version of a Keep a Changelog file (the first heading after Unreleased)."""
    versions = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", text, re.MULTILINE)
    assert versions, "no released version (## [X.Y.Z] - YYYY-MM-DD) in the changelog"
    return versions[0]


def project_field(pyproject: str, key: str) -> str:
    """A string field of pyproject.toml's [project] table (tomllib came only with Python 3.11)."""
    table = re.search(r"^\[project\]\n(.*?)(?=^\[|\Z)", pyproject, re.MULTILINE | re.DOTALL).group(1)
    [value] = re.findall(rf'^{key} = "([^"]*)"', table, re.MULTILINE)
    return value


def check_version_matches(changelog: str, pyproject: str) -> None:
    version = project_field(pyproject, "version")
    assert version == changelog_release(changelog), \
        f"pyproject.toml says {version}, CHANGELOG.md's newest release is {changelog_release(changelog)}"


def test_pyproject_version_is_the_changelog_newest_release():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    headings = re.findall(r"^## (.+)$", changelog, re.MULTILINE)
    assert headings[0] == "[Unreleased]" or re.fullmatch(r"\[\d+\.\d+\.\d+\] - .+", headings[0]), headings
    check_version_matches(changelog, pyproject)
    # A broken copy: a release added to the changelog but not to pyproject.toml.
    released = changelog.replace("## [Unreleased]", "## [Unreleased]\n\n## [9.9.9] - 2027-01-01", 1)
    with pytest.raises(AssertionError, match="9.9.9"):
        check_version_matches(released, pyproject)


def test_the_license_is_apache_2_and_declared():
    assert project_field((ROOT / "pyproject.toml").read_text(), "license") == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert text.rstrip().endswith("limitations under the License.")


def long_recipes(makefile: str, most: int = 5) -> dict[str, int]:
    """Targets whose recipe has more than `most` lines (each tab-indented line counts)."""
    long, target, count = {}, None, 0
    for line in makefile.splitlines() + [""]:
        if line.startswith("\t") and target:
            count += 1
            continue
        if target and count > most:
            long[target] = count
        match = re.match(r"^([^\s#=:][^=:]*):(?!=)", line)
        target, count = (match.group(1), 0) if match else (None, 0)
    return long


def test_every_makefile_recipe_is_a_few_lines():
    makefile = (ROOT / "Makefile").read_text()
    assert long_recipes(makefile) == {}
    slow = "\t$(VENV)/bin/pytest --durations=15 -m slow tests/unit tests/integration\n"
    broken = makefile.replace(slow, slow + "\ttrue\n" * 5)
    assert long_recipes(broken) == {"test-slow": 6}


def test_the_committed_notebook_has_no_outputs_and_a_parameters_cell():
    notebook = nbformat.read(ROOT / "notebooks" / "mnist_tensorboard.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert [(c.outputs, c.execution_count) for c in code] == [([], None)] * len(code), \
        "clear the notebook's outputs before committing it"
    [parameters] = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert re.search(r"^epochs = 10\b", parameters.source, re.MULTILINE)
    # TensorBoard starts before the training cell, so the curves move while it runs.
    sources = [c.source for c in code]
    magic = next(i for i, s in enumerate(sources) if "%tensorboard --logdir" in s)
    training = next(i for i, s in enumerate(sources) if "train(config)" in s)
    assert magic < training


@pytest.mark.parametrize("target, variable, command", [
    ("up", "TRAIN_ARGS", "docker compose run --rm trainer "),
    ("train", "TRAIN_ARGS", "docker compose run --rm trainer "),
    ("multiworker", "MULTIWORKER_ARGS", "MULTIWORKER_ARGS="),
    ("sweep", "SWEEP_ARGS", "SWEEP_ARGS="),
])
def test_data_dir_trains_from_data_unless_the_flags_name_data_themselves(target, variable, command):
    def flags(*settings: str) -> str:
        env = {k: v for k, v in os.environ.items() if k not in (variable, "DATA_DIR")}
        dry = subprocess.run(["make", "-n", target, *settings], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
        assert dry.returncode == 0, dry.stderr
        [line] = [line for line in dry.stdout.splitlines() if line.lstrip().startswith(command)]
        return line

    # --dataset is another flag: with DATA_DIR set, --data /data is still added (once).
    assert flags("DATA_DIR=/x", f"{variable}=--dataset fashion_mnist").count("--data /data") == 1
    assert "--data /data" in flags("DATA_DIR=/x", f"{variable}=--epochs 1")
    for given in ("--data /y", "--data=/y"):
        assert "--data /data" not in flags("DATA_DIR=/x", f"{variable}={given}")
    assert "--data /data" not in flags(f"{variable}=--epochs 1")  # no DATA_DIR: nothing added


def test_the_slow_tests_run_as_root_in_the_workflow_as_in_ci():
    # The full-disk test mounts a tmpfs, which needs root; .ci/run runs as root.
    jobs = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())["jobs"]
    [run] = [s["run"] for job in jobs.values() for s in job["steps"] if "make test-slow" in s.get("run", "")]
    assert run.startswith("sudo "), run


# --- every compose service has limits that fit its job (CIS Docker 5.10, 5.11, 5.28) --------------------

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.gpu.yml")
DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")
# At least: several times the largest measured peak (docs/speed.md: 1,244 MB, the original description's
# trainer; the project's 810 MB), what TensorBoard used on two small runs (about 530 MB), the serving default,
# several times what Optuna Dashboard used on a small study (42 MB).
AT_LEAST = {"trainer": 4 << 30, "chief": 4 << 30, "worker": 4 << 30, "sweeper": 4 << 30, "notebook": 4 << 30,
            "tensorboard": 1 << 30, "serving": 512 << 20, "dashboard": 256 << 20}


def size_bytes(value) -> int:
    """A Compose byte value (4096, '8g', '512m', or compose config's '8589934592') in bytes."""
    number, unit = re.fullmatch(r"(\d+)([bkmg]?)", str(value).strip().lower()).groups()
    return int(number) << {"": 0, "b": 0, "k": 10, "m": 20, "g": 30}[unit]


def limit_problems(services: dict) -> list[str]:
    """What a service lacks: a memory limit, a process-count limit, a CPU cap or priority, a sized /tmp."""
    found = []
    for name, service in services.items():
        least = AT_LEAST.get(name, 1)
        if size_bytes(service.get("mem_limit") or 0) < least:
            found.append(f"{name}: mem_limit {service.get('mem_limit')!r}, want at least {least}")
        if not 0 < int(service.get("pids_limit") or 0) <= 8192:
            found.append(f"{name}: pids_limit {service.get('pids_limit')!r}")
        if not (float(service.get("cpus") or 0) > 0 or int(service.get("cpu_shares") or 0) not in (0, 1024)):
            found.append(f"{name}: neither cpus nor cpu_shares")
        tmpfs = service.get("tmpfs") or []
        if [t for t in tmpfs if "size=" not in t] or not tmpfs:
            found.append(f"{name}: /tmp tmpfs without a size: {tmpfs}")
    return found


def with_defaults(value):
    """The compose file's values as Compose reads them with nothing set: ${VAR:-default} -> default."""
    if isinstance(value, dict):
        return {k: with_defaults(v) for k, v in value.items()}
    if isinstance(value, list):
        return [with_defaults(v) for v in value]
    return DEFAULT.sub(lambda m: m[2], value) if isinstance(value, str) else value


def test_every_compose_service_has_limits_that_fit_its_job():
    services = with_defaults(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"])
    assert set(services) >= set(AT_LEAST)
    assert limit_problems(services) == []
    # A broken copy: TensorBoard without its memory limit, the trainer with an unsized /tmp.
    unlimited = {k: v for k, v in services["tensorboard"].items() if k != "mem_limit"}
    broken = {**services, "tensorboard": unlimited, "trainer": {**services["trainer"], "tmpfs": ["/tmp"]}}
    assert sorted(limit_problems(broken)) == ["tensorboard: mem_limit None, want at least 1073741824",
                                              "trainer: /tmp tmpfs without a size: ['/tmp']"]


def compose_config(**settings: str) -> dict:
    """`docker compose config` of both files and every profile, as Compose itself resolves them."""
    if shutil.which("docker") is None or subprocess.run(["docker", "compose", "version"],
                                                        capture_output=True).returncode != 0:
        pytest.skip("no docker compose here; the test above reads the file itself")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "HOST_UID": "1500",
           "HOST_GID": "1501", "COMPOSE_FILE": ":".join(COMPOSE_FILES), **settings}
    command = ["docker", "compose", "--env-file", "/dev/null", "--profile", "*", "config", "--format", "json"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]


def test_compose_itself_gives_every_service_its_limits_and_takes_the_settings():
    services = compose_config()
    assert set(services) >= set(AT_LEAST)
    assert limit_problems(services) == []
    mine = compose_config(TRAINER_MEMORY="12g", TRAINER_CPUS="1.5", TENSORBOARD_MEMORY="3g",
                          TENSORBOARD_CPUS="0.5", SERVING_MEMORY="2g", SERVING_CPUS="0.25",
                          DASHBOARD_MEMORY="768m", DASHBOARD_CPUS="0.75")
    for name in ("trainer", "chief", "worker", "sweeper", "notebook"):
        assert (size_bytes(mine[name]["mem_limit"]), mine[name]["cpus"]) == (12 << 30, 1.5), name
    assert (size_bytes(mine["tensorboard"]["mem_limit"]), mine["tensorboard"]["cpus"]) == (3 << 30, 0.5)
    assert (size_bytes(mine["serving"]["mem_limit"]), mine["serving"]["cpus"]) == (2 << 30, 0.25)
    assert (size_bytes(mine["dashboard"]["mem_limit"]), mine["dashboard"]["cpus"]) == (768 << 20, 0.75)


# --- every compose service is locked down, and what has no authentication is on this machine only -------

# The servers that read ./logs or ./models only, and may not write them.
READERS = {"tensorboard": "/logs", "serving": "/models", "dashboard": "/logs"}


def lockdown_problems(services: dict) -> list[str]:
    """What a service of `docker compose config` (HOST_UID 1500, HOST_GID 1501) lacks of x-locked-down, a
    port published beyond 127.0.0.1, a reader's mount that is writable."""
    found = []
    for name, service in services.items():
        if service.get("user") != "1500:1501":
            found.append(f"{name}: user {service.get('user')!r}")
        if service.get("cap_drop") != ["ALL"]:
            found.append(f"{name}: cap_drop {service.get('cap_drop')!r}")
        if "no-new-privileges:true" not in (service.get("security_opt") or []):
            found.append(f"{name}: security_opt {service.get('security_opt')!r}")
        if service.get("read_only") is not True:
            found.append(f"{name}: read_only {service.get('read_only')!r}")
        found += [f"{name}: port {p['published']} on {p.get('host_ip')!r}" for p in service.get("ports") or []
                  if p.get("host_ip") != "127.0.0.1"]
        if name in READERS:
            found += [f"{name}: {v['target']} writable" for v in service.get("volumes") or []
                      if v["type"] == "bind" and not v.get("read_only")]
            if READERS[name] not in [v["target"] for v in service.get("volumes") or []]:
                found.append(f"{name}: no {READERS[name]}")
    return found


def test_every_compose_service_is_locked_down_and_publishes_on_this_machine_only():
    services = compose_config()
    assert set(services) >= set(AT_LEAST) | set(READERS)
    assert lockdown_problems(services) == []
    dashboard = services["dashboard"]
    ports = [(p["host_ip"], p["published"], p["target"]) for p in dashboard["ports"]]
    assert ports == [("127.0.0.1", "8080", 8080)]
    assert dashboard["command"] == ["/logs/sweeps/default/journal.log"]
    assert dashboard["tmpfs"] == ["/tmp:size=64m"] and dashboard["profiles"] == ["dashboard"]
    # The settings: its port, the sweep, or the sweepers' PostgreSQL URL.
    mine = compose_config(DASHBOARD_PORT="8090", SWEEP_NAME="mine")["dashboard"]
    assert (mine["ports"][0]["published"], mine["command"]) == ("8090", ["/logs/sweeps/mine/journal.log"])
    url = "postgresql://sweeps@postgres/sweeps"
    assert compose_config(SWEEP_NAME="mine", SWEEP_STORAGE=url)["dashboard"]["command"] == [url]
    # A broken copy: the dashboard as root on every interface, writing ./logs; TensorBoard with capabilities.
    everywhere = [{**dashboard["ports"][0], "host_ip": "0.0.0.0"}]
    broken = {**services, "tensorboard": {**services["tensorboard"], "cap_drop": []},
              "dashboard": {**dashboard, "user": "0", "ports": everywhere,
                            "volumes": [{**dashboard["volumes"][0], "read_only": False}]}}
    assert sorted(lockdown_problems(broken)) == [
        "dashboard: /logs writable", "dashboard: port 8080 on '0.0.0.0'", "dashboard: user '0'",
        "tensorboard: cap_drop []"]
