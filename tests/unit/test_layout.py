"""The layout is what docs/development.md says it is: every folder it names exists and every folder
of the code is named; what may import what holds; and nothing in the repository names a module or
file that does not exist (a stale `python -m app.devices` after a move, say)."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT

# Files whose text names modules and paths. CHANGELOG.md is history: it names what was there then.
NAMING = re.compile(r"(\.md|\.py|\.ya?ml|\.toml|\.txt|\.sh|\.ipynb|Makefile|Dockerfile|\.ci/run|"
                    r"docker/[\w-]+)$")
# A module as an entry point or an import names it: python -m app.x, "-m", "app.x" (compose, Kubernetes),
# from app.x import ..., import app.x.
MODULE = re.compile(r"""(?:-m\s+|"-m",\s*"|\bfrom\s+|\bimport\s+)((?:app|tools)(?:\.[A-Za-z_]\w*)+)""")
PATH = re.compile(r"(?<![\w./-])((?:app|tools|tests|docs|docker|deploy|sweeps|notebooks|\.ci|\.github)"
                  r"/[\w./*-]*)")


# Names that are not paths of this repository: examples a user creates, and other projects' names.
NOT_PATHS = {"sweeps/NAME.yaml", "sweeps/mine.yaml", "tests/e2e/x.sh", "docker/compose", ".github/dependabot"}


def tracked() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    # This file names stale modules on purpose, to show the check finds them.
    return [ROOT / n for n in names.splitlines()
            if NAMING.search(n) and n not in ("CHANGELOG.md", "tests/unit/test_layout.py")]


def module_exists(dotted: str) -> bool:
    """`app.x.y...` names a module or package, followed by attributes at most (`tools.NAME`, a
    placeholder, names none)."""
    parts = dotted.split(".")
    if any(part.isupper() for part in parts):
        return True
    found = False
    for end in range(2, len(parts) + 1):
        base = ROOT.joinpath(*parts[:end])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            found = True
        elif not found:
            return False
    return found


def path_exists(text: str) -> bool:
    text = text.rstrip(".")
    if "*" in text:
        return bool(list(ROOT.glob(text)))
    return (ROOT / text).exists()


def stale_references(files: list[Path]) -> list[str]:
    stale = []
    for path in files:
        text = path.read_text(errors="replace")
        name = path.relative_to(ROOT)
        stale += [f"{name}: {m}" for m in MODULE.findall(text) if not module_exists(m)]
        stale += [f"{name}: {m}" for m in PATH.findall(text) if m not in NOT_PATHS and not path_exists(m)]
    return sorted(set(stale))


def test_nothing_names_a_module_or_file_that_does_not_exist():
    assert stale_references(tracked()) == []


def test_the_check_finds_a_stale_module_and_a_stale_path(tmp_path):
    doc = ROOT / "docs" / ".stale-check.md"
    try:
        doc.write_text("Run `python -m app.devices`; see app/compose_cluster.py and tests/test_cli.py; "
                       "`python -m app.scale.devices` and app/scale/ and tests/unit/test_*.py are fine.\n")
        assert stale_references([doc]) == ["docs/.stale-check.md: app.devices",
                                           "docs/.stale-check.md: app/compose_cluster.py",
                                           "docs/.stale-check.md: tests/test_cli.py"]
    finally:
        doc.unlink()


# --- docs/development.md#layout ------------------------------------------------------------------

def layout_block() -> str:
    text = (ROOT / "docs" / "development.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("    "))


def named_folders() -> set[str]:
    """The folders the layout block names at the start of a line: `    app/scale/   ...`."""
    return {m.group(1).rstrip("/") for m in re.finditer(r"^    ([\w./-]+/)\s", layout_block(), re.MULTILINE)}


def code_folders() -> set[str]:
    """Every folder that holds tracked files, down to the Python packages and the test tiers; data
    and manifests below those are the named folder's business."""
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    folders = set()
    for name in names.splitlines():
        parts = Path(name).parts[:-1]
        depth = 2 if parts[:1] in (("app",), ("tests",), ("deploy",), ("docker",)) else 1
        if parts:
            folders.add("/".join(parts[:depth]))
    return folders


def test_the_layout_names_every_folder_and_only_folders_that_exist():
    named, real = named_folders(), code_folders()
    assert named == real, f"named, not there: {sorted(named - real)}; there, unnamed: {sorted(real - named)}"


# --- what may import what --------------------------------------------------------------------------

def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name.split(".")[0] in ("app", "tools")}


def package_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:2]) if parts[0] == "app" and len(parts) > 2 else parts[0]


# Who may import whom (docs/development.md#layout): a package's modules may import the names
# allowed (each with everything below it), or everything but the names forbidden.
ALLOWED = {
    "app.scale": ("app.config", "app.borrowed", "app.scale"),
    "app.tabs": ("app.config", "app.data", "app.pipeline", "app.validation", "app.tabs"),
}
FORBIDDEN = {"app": ("app.sweep", "tools"), "app.sweep": ("tools",), "tools": ()}


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def import_problems(files: list[Path]) -> list[str]:
    problems = []
    for path in files:
        package = package_of(path)
        for name in imports(path) - {"app"}:
            wrong = (not _under(name, ALLOWED[package]) if package in ALLOWED
                     else _under(name, FORBIDDEN[package]))
            if wrong:
                problems.append(f"{path.relative_to(ROOT)} imports {name}")
    return sorted(problems)


def python_files() -> list[Path]:
    return sorted(p for folder in ("app", "tools") for p in (ROOT / folder).rglob("*.py"))


def test_what_may_import_what():
    assert import_problems(python_files()) == []


@pytest.mark.parametrize("module, line", [
    ("app/train.py", "from tools import bench"),
    ("app/tabs/images.py", "from app import train"),
    ("app/scale/devices.py", "from app.sweep import study"),
])
def test_a_forbidden_import_is_found(tmp_path, module, line):
    copy = ROOT / Path(module).with_name(f"_copy_{Path(module).name}")
    try:
        copy.write_text(line + "\n")
        assert import_problems([copy]) != []
    finally:
        copy.unlink()
