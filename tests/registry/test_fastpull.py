"""The lean second pull (cli/fastpull.py) against real registries: the same output as the
full path when a recorded tag has not moved, and the full path (``None``) for everything
else, with nothing changed first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Ignite
from tests.helpers.registry import PASSWORD, USER, Registry
from tests.registry.conftest import creds_dir

pytestmark = pytest.mark.registry


def _fast(
    ig: Ignite,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *words: str,
    env: dict[str, str] | None = None,
) -> tuple[int | None, str, str]:
    """``fastpull.run`` in this process, in ``ig``'s environment: (code, stdout, stderr)."""
    from ignitevm.cli import fastpull

    for key, value in {**ig.env, "IGNITE_ROOT": str(ig.root), **(env or {})}.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = fastpull.run(list(words))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_same_output_as_the_full_path(
    ig: Ignite,
    plain_registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("busybox", "multi"):  # an image manifest; an index (this host's entry)
        ref = f"{plain_registry.host}/test/{name}:1"
        ig("image", "pull", ref)
        full = ig("image", "pull", "--log-level", "info", ref)  # (a flag: the full path)
        assert "Image is up to date" in full.stderr
        assert _fast(ig, monkeypatch, capsys, ref) == (0, full.stdout, full.stderr)
        quiet = ig("image", "pull", "-q", "--log-level", "warning", ref)
        assert _fast(ig, monkeypatch, capsys, "-q", ref) == (0, quiet.stdout, "")
        assert ig("image", "pull", ref).stderr == full.stderr  # (the CLI takes it too)


def test_anything_else_takes_the_full_path(
    ig: Ignite,
    plain_registry: Registry,
    auth_registry: Registry,
    test_layout: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = f"{plain_registry.host}/test/busybox:1"

    def full(*words: str, **env: str) -> None:
        assert _fast(ig, monkeypatch, capsys, *words, env=env) == (None, "", "")
        monkeypatch.undo()

    full(ref)  # not pulled yet
    ig("image", "pull", ref)
    full("--name", "other", ref)
    full("--platform", "linux/arm64", ref)
    full(f"{plain_registry.host}/test/busybox@sha256:{'0' * 64}")
    full(ref, HTTPS_PROXY="http://127.0.0.1:9")
    full(ref, IGNITE_INSECURE_REGISTRIES="example.org")
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{plain_registry.host}"\ninsecure = true\n')
    full(ref, CONTAINERS_REGISTRIES_CONF=str(conf))
    conf.write_text("# only comments\n\n  # here\n")
    assert (
        _fast(ig, monkeypatch, capsys, "-q", ref, env={"CONTAINERS_REGISTRIES_CONF": str(conf)})[0]
        == 0
    )
    monkeypatch.undo()
    # A registry not known to speak plain HTTP (the full path tries TLS first).
    (ig.root / "content" / "http-registries").write_text("")
    full(ref)
    ig("image", "pull", ref)  # (it learns again)
    assert _fast(ig, monkeypatch, capsys, "-q", ref)[0] == 0
    monkeypatch.undo()
    # The tag moved: the full path pulls it (the image is replaced).
    moving = f"{plain_registry.host}/test/fastmoving:1"
    plain_registry.push(test_layout["busybox"], "test/fastmoving:1")
    ig("image", "pull", moving)
    plain_registry.push(test_layout["zstd"], "test/fastmoving:1")
    full(moving)
    assert "Downloaded newer image" in ig("image", "pull", moving).stderr
    # Credentials needed: 401 (no credentials are read or sent here).
    private = f"{auth_registry.host}/test/busybox:1"
    ig.env["DOCKER_CONFIG"] = creds_dir(tmp_path / "docker", auth_registry.host, USER, PASSWORD)
    ig("image", "pull", private)
    full(private)
    assert "Image is up to date" in ig("image", "pull", private).stderr


def test_tls_registry_takes_the_full_path(
    ig: Ignite,
    tls_registry: Registry,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A loopback registry over TLS, its CA in certs.d: only the full path reads that."""
    ref = f"{tls_registry.host}/test/busybox:1"
    certs = home / "certs.d" / tls_registry.host
    certs.mkdir()
    (certs / "ca.crt").write_bytes(Path(str(tls_registry.ca)).read_bytes())
    ig("image", "pull", ref)
    assert _fast(ig, monkeypatch, capsys, ref) == (None, "", "")
    assert "Image is up to date" in ig("image", "pull", ref).stderr
