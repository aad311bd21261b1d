"""The protobuf wire format, for the handful of containerd messages used here.

Messages are built from fields (:func:`string`, :func:`integer`,
:func:`message`, :func:`string_map`) and read back with :func:`fields`, a map
of field number to the values it carries. The daemon's answers are untrusted:
a malformed one raises :class:`WireError`, never anything else.
"""

from __future__ import annotations

from collections.abc import Mapping

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_MAX_INT64 = (1 << 63) - 1


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s are sent as ten bytes of two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def string(number: int, value: str) -> bytes:
    """A string field (left out when empty, as proto3 does)."""
    return message(number, value.encode()) if value else b""


def message(number: int, data: bytes) -> bytes:
    """A length-delimited field: an embedded message or bytes."""
    return _tag(number, _LEN) + _varint(len(data)) + data


def integer(number: int, value: int | bool) -> bytes:
    """An int64 or bool field (left out when zero)."""
    return _tag(number, _VARINT) + _varint(int(value)) if value else b""


def string_map(number: int, entries: Mapping[str, str]) -> bytes:
    """A ``map<string, string>`` field: one entry message per key."""
    return b"".join(message(number, string(1, k) + string(2, v))
                    for k, v in sorted(entries.items()))


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("a varint is cut short or too long")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def fields(data: bytes) -> dict[int, list[int | bytes]]:
    """Every field of a message: numbers to values (ints, or bytes of length-delimited
    fields, which may be strings or embedded messages: the reader knows which)."""
    out: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        value: int | bytes
        if wire_type == _VARINT:
            value, pos = _read_varint(data, pos)
        elif wire_type == _LEN:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise WireError("a length-delimited field runs past the message")
            value, pos = data[pos:pos + length], pos + length
        elif wire_type in (_I64, _I32):
            pos += 8 if wire_type == _I64 else 4
            if pos > len(data):
                raise WireError("a fixed-size field runs past the message")
            continue  # (none of the fields read here is fixed-size)
        else:
            raise WireError(f"unsupported wire type {wire_type}")
        out.setdefault(number, []).append(value)
    return out


def get_bytes(msg: Mapping[int, list[int | bytes]], number: int) -> bytes:
    """The last value of a length-delimited field (b"" when absent)."""
    values = msg.get(number)
    if not values:
        return b""
    value = values[-1]
    if not isinstance(value, bytes):
        raise WireError(f"field {number} is a number, not bytes")
    return value


def get_str(msg: Mapping[int, list[int | bytes]], number: int) -> str:
    try:
        return get_bytes(msg, number).decode()
    except UnicodeDecodeError:
        raise WireError(f"field {number} is not UTF-8 text") from None


def get_int(msg: Mapping[int, list[int | bytes]], number: int) -> int:
    """The last value of an int64 field (0 when absent); negative values are refused."""
    values = msg.get(number)
    if not values:
        return 0
    value = values[-1]
    if not isinstance(value, int):
        raise WireError(f"field {number} is bytes, not a number")
    if value > _MAX_INT64:
        raise WireError(f"field {number} is negative")
    return value


def get_messages(msg: Mapping[int, list[int | bytes]], number: int
                 ) -> list[dict[int, list[int | bytes]]]:
    """The embedded messages of a repeated field."""
    out = []
    for value in msg.get(number, []):
        if not isinstance(value, bytes):
            raise WireError(f"field {number} is a number, not a message")
        out.append(fields(value))
    return out


def get_map(msg: Mapping[int, list[int | bytes]], number: int) -> dict[str, str]:
    """A ``map<string, string>`` field."""
    return {get_str(e, 1): get_str(e, 2) for e in get_messages(msg, number)}
