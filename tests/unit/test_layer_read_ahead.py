"""A layer is read, decompressed and hashed in a thread of its own, ahead of the
unpacker: the unpacker gets the same bytes in the same order, no more than it asks
for at a time, the reading thread's errors, and a block that fails does not wait for
(nor is held up by) a reader with more to give."""

from __future__ import annotations

import threading

import pytest

from ignitevm.errors import InvalidInput
from ignitevm.images import layers


def pieces(*chunks: bytes) -> layers.Fill:
    it = iter(chunks)
    return lambda n: next(it, b"")


def test_same_bytes_in_order_and_no_more_than_asked() -> None:
    data = [bytes([i]) * (1000 + i) for i in range(20)]
    got = []
    with layers._read_ahead(pieces(*data)) as fill:
        while chunk := fill(700):
            assert len(chunk) <= 700
            got.append(chunk)
        assert fill(700) == b""
    assert b"".join(got) == b"".join(data)


def test_the_reading_threads_error_is_raised_to_the_unpacker() -> None:
    def fill(n: int) -> bytes:
        if calls.append(n) or len(calls) > 2:
            raise InvalidInput("layer x is not valid gzip data")
        return b"tar"

    calls: list[int] = []
    with layers._read_ahead(fill) as ahead:
        assert ahead(10) == b"tar" and ahead(10) == b"tar"
        for _ in range(2):  # (and again if asked again)
            with pytest.raises(InvalidInput, match="not valid gzip"):
                ahead(10)


def test_a_failing_unpacker_is_not_held_up_by_its_reader() -> None:
    """The reader has endless data and a full queue: the block's error ends it."""
    count = 0

    def endless(n: int) -> bytes:
        nonlocal count
        count += 1
        return b"x" * 10

    with pytest.raises(InvalidInput, match="refused"), layers._read_ahead(endless) as fill:
        fill(10)
        raise InvalidInput("an entry was refused")
    readers = [t for t in threading.enumerate() if t.name == "layer-read"]
    for t in readers:
        t.join(30)  # (it stops at its next chunk: a liveness bound, not a timing limit)
    assert not any(t.is_alive() for t in readers)
    assert count <= layers.AHEAD + 3
