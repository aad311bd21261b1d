"""The protobuf messages spoken to containerd, and the checks on what it streams back.

containerd itself is exercised in tests/containerd; here are the cases a real daemon
does not produce on demand (malformed answers, pieces out of order, a blob longer than
its size), with a stand-in for a gRPC stream (a plain iterator of encoded messages).
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from ignitevm.errors import InvalidInput
from ignitevm.images.containerd import wire
from ignitevm.images.containerd.client import Client, _Blob


def test_round_trip() -> None:
    msg = (wire.string(1, "docker.io/library/alpine:3.19") + wire.integer(3, 1 << 40)
           + wire.string_map(5, {"b": "2", "a": "1"}) + wire.message(7, wire.string(1, "x"))
           + wire.integer(9, True))
    got = wire.fields(msg)
    assert wire.get_str(got, 1) == "docker.io/library/alpine:3.19"
    assert wire.get_int(got, 3) == 1 << 40
    assert wire.get_map(got, 5) == {"a": "1", "b": "2"}
    assert [wire.get_str(m, 1) for m in wire.get_messages(got, 7)] == ["x"]
    assert wire.get_int(got, 9) == 1
    assert wire.get_str(got, 2) == "" and wire.get_int(got, 4) == 0  # proto3 defaults
    # Proto3 leaves zero values out; fixed-size fields of newer messages are skipped.
    assert wire.string(1, "") == b"" and wire.integer(2, 0) == b""
    assert wire.fields(b"\x0d\x01\x02\x03\x04\x11" + bytes(8)) == {}


@pytest.mark.parametrize("data", [
    b"\x0a\x05abc",  # a length past the end
    b"\x08",  # a varint cut short
    b"\x08" + b"\xff" * 11,  # a varint too long
    b"\x0b",  # wire type 3 (groups)
    b"\x00\x01",  # field number 0
    b"\x0d\x01",  # a fixed32 cut short
])
def test_malformed(data: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.fields(data)


def test_wrong_kinds() -> None:
    msg = wire.fields(wire.integer(1, 5) + wire.string(2, "x") + b"\x1a\x01\xff"
                      + wire.integer(4, -1))
    with pytest.raises(wire.WireError):
        wire.get_str(msg, 1)  # a number where text was expected
    with pytest.raises(wire.WireError):
        wire.get_int(msg, 2)
    with pytest.raises(wire.WireError):
        wire.get_str(msg, 3)  # not UTF-8
    with pytest.raises(wire.WireError):
        wire.get_int(msg, 4)  # a negative size


def _read(pieces: list[bytes], size: int) -> bytes:
    client = Client("/nowhere.sock", "default")
    answers: Any = iter(pieces)
    with io.BufferedReader(_Blob(client, answers, size, "sha256:ab of x")) as f:
        return f.read()


def _piece(offset: int, data: bytes) -> bytes:
    return wire.integer(1, offset) + wire.message(2, data)


def test_blob_stream() -> None:
    assert _read([_piece(0, b"hello "), _piece(6, b"world")], 11) == b"hello world"
    with pytest.raises(InvalidInput, match=r"is truncated \(6 of 11 bytes\)"):
        _read([_piece(0, b"hello ")], 11)
    with pytest.raises(InvalidInput, match="longer than its 5 bytes"):
        _read([_piece(0, b"hello "), _piece(6, b"world")], 5)
    with pytest.raises(InvalidInput, match="out of order"):
        _read([_piece(0, b"hello "), _piece(0, b"world")], 11)
    with pytest.raises(InvalidInput, match="malformed answer"):
        _read([b"\x0a\x09"], 11)
