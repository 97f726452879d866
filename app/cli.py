"""What the two command lines (python -m app, python -m app.sweep) share: the one-line parser, the
error exit, and the check that this Python has the project's packages at all."""

from __future__ import annotations

import argparse
import importlib.util
import sys

# What a run imports; the first missing one is named. Checked by name, without importing anything.
PACKAGES = ("numpy", "yaml", "tensorflow", "keras", "tensorboard", "PIL")


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line, not argparse's usage block: the message already names the flag.
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def fail(message: object, code: int) -> int:
    """Print `error: message` on stderr and return the exit code."""
    print(f"error: {message}", file=sys.stderr)
    return code


def require_packages(prog: str) -> None:
    """Exit 2 with one line when this Python lacks the project's packages: a user who runs the
    README's commands with the system's Python gets the way in, not a ModuleNotFoundError."""
    missing = next((name for name in PACKAGES if importlib.util.find_spec(name) is None), None)
    if missing:
        sys.exit(fail(f"{prog} needs the project's packages, and this Python ({sys.executable}) has no "
                      f"{missing}: run `make venv`, then `.venv/bin/{prog} ...`, "
                      "or run it in a container (make up, docker compose run --rm trainer)", 2))
