"""Blob bodies read straight from the socket (registry/client.body), against real registries.

The direct read starts only past ``DIRECT_MIN`` bytes and after h11's first
piece; the test images' layers are small, so both limits are lowered here and
httpcore reads 4 KiB at a time: every layer then goes through the direct read,
and every check (size, sha256, resume, TLS) is exercised on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ignitevm.errors import IgniteError
from ignitevm.images.blobs import ContentStore
from ignitevm.images.registry import client as client_mod
from ignitevm.images.registry.options import PullOptions
from ignitevm.images.registry.pull import pull_into
from tests.helpers.faultproxy import FaultProxy, Faults
from tests.helpers.registry import Registry

pytestmark = pytest.mark.registry
QUIET = PullOptions(show="quiet")


@pytest.fixture
def direct(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Small limits; yields the sockets the direct read took (one per layer read so)."""
    from httpcore._sync.http11 import HTTP11Connection

    monkeypatch.setattr(HTTP11Connection, "READ_NUM_BYTES", 4096)
    monkeypatch.setattr(client_mod, "READ_SIZE", 4096)
    monkeypatch.setattr(client_mod, "DIRECT_MIN", 4096)
    monkeypatch.setenv("IGNITE_INSECURE_REGISTRIES", "")
    taken: list[Any] = []
    own = client_mod._own_socket

    def spy(resp: Any) -> Any:
        sock = own(resp)
        if sock is not None:
            taken.append(sock)
        return sock

    monkeypatch.setattr(client_mod, "_own_socket", spy)
    yield taken


def _pull(root: Path, ref: str) -> ContentStore:
    store = ContentStore(root / "content")
    pull_into(store, ref, QUIET, lambda identity: False)
    return store


def _blobs(store: ContentStore) -> list[Path]:
    return sorted((store.path / "blobs" / "sha256").iterdir())


def test_direct_read_plain(direct: list[Any], plain_registry: Registry, tmp_path: Path) -> None:
    store = _pull(tmp_path, f"{plain_registry.host}/test/busybox:1")
    assert direct  # (the layers went through the direct read)
    for blob in _blobs(store):  # every blob stored is the one its name says
        import hashlib

        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    assert not list((store.path / "ingest").glob("*[0-9a-f]"))


def test_direct_read_resumes(direct: list[Any], plain_registry: Registry,
                             tmp_path: Path) -> None:
    with FaultProxy(plain_registry.host, Faults(cut_blobs=2)) as proxy:
        store = _pull(tmp_path, f"{proxy.host}/test/busybox:1")
        ranges = [s["range"] for s in proxy.faults.seen if s["range"]]
    assert direct and ranges and all(r.startswith("bytes=") for r in ranges)
    assert len(_blobs(store)) >= 3  # manifest, config, layer(s)


def test_direct_read_corrupt(direct: list[Any], plain_registry: Registry,
                             tmp_path: Path) -> None:
    with FaultProxy(plain_registry.host, Faults(corrupt_blobs=True)) as proxy, \
            pytest.raises(IgniteError, match="does not match its digest"):
        _pull(tmp_path, f"{proxy.host}/test/busybox:1")
    content = tmp_path / "content"
    assert not list((content / "ingest").glob("*[0-9a-f]"))
    assert len(list((content / "blobs" / "sha256").iterdir())) == 1  # the manifest only


def test_direct_read_tls(direct: list[Any], tls_registry: Registry, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    certs = tmp_path / "certs.d"
    (certs / tls_registry.host).mkdir(parents=True)
    (certs / tls_registry.host / "ca.crt").write_bytes(Path(str(tls_registry.ca)).read_bytes())
    monkeypatch.setenv("IGNITE_CERTS_DIRS", str(certs))
    _pull(tmp_path, f"{tls_registry.host}/test/busybox:1")
    assert direct and all(isinstance(s, ssl.SSLSocket) for s in direct)
