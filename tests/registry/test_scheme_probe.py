"""First contact with a registry that may use plain HTTP (loopback): one TLS hello tells
whether it speaks TLS, so a plain one costs no verified TLS context."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.helpers.registry import Registry

pytestmark = pytest.mark.registry


def _client(host: str):  # type: ignore[no-untyped-def]
    from ignitevm.api.refs import parse
    from ignitevm.images.registry.client import Client

    return Client(parse(f"{host}/test/busybox:1"))


def test_probe(
    plain_registry: Registry, tls_registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    assert _client(plain_registry.host)._speaks_tls() is False
    assert _client(tls_registry.host)._speaks_tls() is True  # (its CA is not trusted here)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _client(f"127.0.0.1:{port}")._speaks_tls() is None  # nothing listening


def test_plain_loopback_registry_pulls_over_http(plain_registry: Registry, tmp_path: Path) -> None:
    """The probe's answer is only a shortcut: the pull then goes over HTTP, and the
    scheme is remembered as before."""
    from ignitevm.api.refs import parse
    from ignitevm.images.registry import manifests
    from ignitevm.images.registry.client import Client

    schemes = tmp_path / "http-registries"
    with Client(parse(f"{plain_registry.host}/test/busybox:1"), schemes=schemes) as client:
        manifests.fetch(client, "1")
        assert client.base == f"http://{plain_registry.host}"
    assert schemes.read_text().split() == [plain_registry.host]


def test_remembered_http_registry_now_on_https(tls_registry: Registry, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A loopback registry remembered as plain HTTP that now speaks HTTPS: its 400 to
    the first request (the manifest's, no ``GET /v2/`` first) sends the client to TLS,
    verified as ever, and the scheme is forgotten."""
    from ignitevm.api.refs import parse
    from ignitevm.images.registry import manifests
    from ignitevm.images.registry.client import Client

    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    certs = tmp_path / "certs.d"
    (certs / tls_registry.host).mkdir(parents=True)
    (certs / tls_registry.host / "ca.crt").write_bytes(Path(str(tls_registry.ca)).read_bytes())
    monkeypatch.setenv("IGNITE_CERTS_DIRS", str(certs))
    schemes = tmp_path / "http-registries"
    schemes.write_text(f"{tls_registry.host}\n")
    with Client(parse(f"{tls_registry.host}/test/busybox:1"), schemes=schemes) as client:
        manifests.fetch(client, "1")
        assert client.base == f"https://{tls_registry.host}"
    assert schemes.read_text().split() == []
