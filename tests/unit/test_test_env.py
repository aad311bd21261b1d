"""The tests' own rule: every CLI and daemon a test starts gets its
environment from tests.conftest.cli_env, which keeps it off the host's real
ignite0 network (CNI is the default as root) unless the test asks for CNI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env


def test_cli_env_defaults_to_user_mode_networking(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.delenv("IGNITE_NETWORK_PLUGIN", raising=False)
    env = cli_env(tmp_path)
    assert env["IGNITE_ROOT"] == str(tmp_path) and env["IGNITE_NETWORK_PLUGIN"] == "user"
    monkeypatch.setenv("IGNITE_NETWORK_PLUGIN", "cni")
    assert cli_env(tmp_path)["IGNITE_NETWORK_PLUGIN"] == "cni"


@pytest.mark.parametrize("module", sorted(m for m in (REPO / "tests").glob("*/test_*.py")
                                          if m.name != Path(__file__).name),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_test_builds_a_cli_environment_of_its_own(module: Path) -> None:
    """(test_ignite_e2e.py's daemon and gitops tests once started ignited with
    only IGNITE_ROOT set: as root, it made the host's real ignite0 bridge.)"""
    text = module.read_text()
    assert "IGNITE_ROOT=str(" not in text, f"{module.name}: use tests.conftest.cli_env"
