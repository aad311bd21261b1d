"""Shared by the registry tests: a HOME with no credentials, the CLI, clean failures."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.conftest import Ignite

# The host's proxy settings stay out of the tests (test_pull_proxy.py sets its own).
NO_PROXIES = {name: "" for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
              for name in (base, base.upper())}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME with no credentials and no certificates (the real ones are never read)."""
    h = tmp_path / "home"
    (h / "certs.d").mkdir(parents=True)
    return h


@pytest.fixture
def ig(tmp_path: Path, home: Path) -> Ignite:
    return Ignite(tmp_path / "root", env={
        "HOME": str(home), "DOCKER_CONFIG": str(home / ".docker"), "XDG_RUNTIME_DIR": str(home),
        "IGNITE_CERTS_DIRS": str(home / "certs.d"), "IGNITE_INSECURE_REGISTRIES": "",
        **NO_PROXIES})


def fails(ig: Ignite, *args: str) -> str:
    """Run a command that must fail cleanly; return its error line."""
    before = ig("image", "ls", "-q").stdout
    res = ig(*args, check=False)
    assert res.returncode == 1, res
    lines = res.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    assert ig("image", "ls", "-q").stdout == before  # nothing half-made
    assert not list((ig.root / "tmp").glob("*[0-9a-f]"))
    return res.stderr


def creds_dir(path: Path, host: str, user: str, password: str, key: str | None = None) -> str:
    path.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (path / "config.json").write_text(json.dumps({"auths": {key or host: {"auth": auth}}}))
    return str(path)
