"""A layer opened while it downloads is read as it arrives: a reader gets the bytes on
disk (waiting for more, as a file would give them), and the end of the blob only once
its download has checked it; a failed check, or a download that starts again from 0
under the reader, is an error of the read, not a short blob."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.images.blobs import ContentStore
from ignitevm.images.registry import pull

WAIT = 30.0  # (a liveness bound for the test's own threads, not a timing limit)


class Feed:
    """A download (in place of pull.download) whose pieces the test releases one by one."""

    def __init__(self, pieces: list[bytes], restart_after: int | None = None):
        self.pieces = pieces
        self.restart_after = restart_after
        self.gates = [threading.Event() for _ in pieces]
        self.written = [threading.Event() for _ in pieces]

    def __call__(self, client: Any, store: ContentStore, digest: str, size: int,
                 diff_id: str | None, what: str, progress: Callable[[str, int, int], None],
                 *args: Any) -> None:
        with store.ingest(digest, size) as ing:
            if ing is None:
                progress(digest, -1, size)
                return
            progress(digest, ing.offset, size)
            for n, piece in enumerate(self.pieces):
                assert self.gates[n].wait(WAIT)
                if self.restart_after == n:
                    ing.reset()
                    progress(digest, ing.offset, size)
                ing.write(piece)
                progress(digest, ing.offset, size)
                self.written[n].set()


def downloads(store: ContentStore, digest: str, size: int, feed: Feed,
              monkeypatch: pytest.MonkeyPatch) -> pull._Downloads:
    monkeypatch.setattr(pull, "download", feed)
    client: Any = SimpleNamespace(close=lambda: None)  # (closed when the block fails)
    return pull._Downloads(client, store, {digest: (size, None)}, None, "test")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_layer_is_read_while_it_downloads(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    half = len(data) // 2
    feed = Feed([data[:half], data[half:]])
    store = ContentStore(tmp_path / "content")
    with downloads(store, sha(data), len(data), feed, monkeypatch) as dl:
        feed.gates[0].set()
        with dl.opener(sha(data))() as blob:
            assert blob.read(10) == data[:10]  # (the second half is not written yet)
            assert blob.read(half - 10) == data[10:half]
            assert not feed.written[1].is_set()
            feed.gates[1].set()
            assert blob.read(1 << 30) == data[half:]  # all that is left, whole
            assert blob.read(1) == b""  # (once the download has checked it)
        dl.wait()
    assert store.has(sha(data), len(data))
    # opened once the download is over: read from the store
    with downloads(store, sha(data), len(data), Feed([]), monkeypatch) as dl:
        with dl.opener(sha(data))() as blob:
            assert blob.read(-1) == data
            assert blob.read(-1) == b""
        dl.wait()


def test_the_end_of_a_blob_that_fails_its_check_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"x" * 1000
    wrong = sha(b"other content of the same size".ljust(1000))
    feed = Feed([data])
    store = ContentStore(tmp_path / "content")
    feed.gates[0].set()
    with pytest.raises(InvalidInput, match="does not match its digest"), \
            downloads(store, wrong, len(data), feed, monkeypatch) as dl, \
            dl.opener(wrong)() as blob:
        assert blob.read(1000) == data  # the bytes are read...
        blob.read(1)  # ...but not the end: the download's check failed
    assert not store.has(wrong)


def test_a_download_that_starts_again_under_its_reader_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"a" * 600 + b"b" * 400
    feed = Feed([data[:600], data], restart_after=1)  # (a registry that ignored Range)
    store = ContentStore(tmp_path / "content")
    feed.gates[0].set()
    with pytest.raises(IgniteError, match="started downloading again"), \
            downloads(store, sha(data), len(data), feed, monkeypatch) as dl, \
            dl.opener(sha(data))() as blob:
        assert blob.read(600) == data[:600]
        feed.gates[1].set()
        blob.read(400)
    assert store.has(sha(data), len(data))  # (the download itself went on and completed)
