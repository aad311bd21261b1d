"""Shared test set-up: every test uses a temporary state root, never the default."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["tests.helpers.registry"]

REPO = Path(__file__).resolve().parent.parent


def cli_env(root: Path) -> dict[str, str]:
    """The environment of every CLI and daemon a test starts: its own state
    root, and user-mode networking unless a test asks for another (a
    ``--network-plugin`` flag, or IGNITE_NETWORK_PLUGIN set by the caller): the
    host's real ignite0 network, CNI's default as root, is not for tests."""
    return {**os.environ, "IGNITE_ROOT": str(root), "PYTHONPATH": str(REPO),
            "IGNITE_NETWORK_PLUGIN": os.environ.get("IGNITE_NETWORK_PLUGIN", "user")}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Ignite:
    """Runs the real `ignite` CLI (python -m ignitevm) against one state root."""

    def __init__(self, root: Path, env: dict[str, str] | None = None):
        self.root = root
        self.env = env or {}

    def __call__(self, *args: str, check: bool = True, timeout: float = 300,
                 input: str | None = None) -> Result:
        env = {**cli_env(self.root), **self.env}
        proc = subprocess.run([sys.executable, "-m", "ignitevm", *args], env=env,
                              capture_output=True, text=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        res = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"ignite {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return res


@pytest.fixture(autouse=True)
def _keep_umask() -> Iterator[None]:
    """Tests that run the CLI in-process must not leave its private umask (077) to the
    tests after them (the CLIs they start would inherit it)."""
    from ignitevm.util import umask

    mask = os.umask(0o022)
    os.umask(mask)
    yield
    os.umask(mask)
    umask._user.clear()


@pytest.fixture
def ignite(tmp_path: Path) -> Ignite:
    return Ignite(tmp_path / "root")
