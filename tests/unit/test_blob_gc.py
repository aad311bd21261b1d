"""Collecting the shared content store (images/gc.py) on a hand-made store."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from ignitevm.errors import IgniteError
from ignitevm.images import gc
from ignitevm.images.blobs import ContentStore


def _put(store: ContentStore, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = store.path / store.blob_name(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def _desc(digest: str) -> dict[str, object]:
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest,
            "size": 1}


def _stored(store: ContentStore) -> set[str]:
    return {"sha256:" + p.name for p in (store.path / "blobs" / "sha256").iterdir()}


def test_keeps_what_the_roots_reach(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    config, layer, shared = _put(store, b'{"config": {}}'), _put(store, b"layer"), \
        _put(store, b"shared")
    manifest = _put(store, json.dumps({"config": _desc(config),
                                       "layers": [_desc(layer), _desc(shared)]}).encode())
    index = _put(store, json.dumps({"manifests": [_desc(manifest)]}).encode())
    other = _put(store, json.dumps({"config": _desc(_put(store, b"{}")),
                                    "layers": [_desc(shared)]}).encode())
    orphan = _put(store, b"orphan")
    missing = "sha256:" + "f" * 64  # (a root whose manifest is not stored)
    garbage = {other, orphan, "sha256:" + hashlib.sha256(b"{}").hexdigest()}
    sizes = {d: (store.path / store.blob_name(d)).stat().st_size for d in garbage}
    removed = gc.collect(store, lambda: [index, missing])
    assert _stored(store) == {index, manifest, config, layer, shared}
    assert {r.digest: r.size for r in removed} == sizes


def test_an_unreadable_root_removes_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    bad = _put(store, b"{not json")
    orphan = _put(store, b"orphan")
    with pytest.raises(IgniteError, match="cannot be read; no blob was removed"):
        gc.collect(store, lambda: [bad])
    assert _stored(store) == {bad, orphan}


def test_waits_for_pulls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ContentStore(tmp_path / "content")
    orphan = _put(store, b"orphan")
    waiting, done = threading.Event(), threading.Event()
    monkeypatch.setattr(gc.log, "info", lambda *a: waiting.set())
    with store.in_use():   # as a pull holds it
        worker = threading.Thread(target=lambda: (gc.collect(store, list), done.set()))
        worker.start()
        assert waiting.wait(60)
        assert orphan in _stored(store) and not done.is_set()
    worker.join(60)
    assert done.is_set() and not _stored(store)
