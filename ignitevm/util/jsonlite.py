"""``json.loads`` and ``json.dumps(indent=2, ensure_ascii=False)`` without the
``json`` package (which imports ``re``: ~4 ms of a fast path's start-up with
``enum``), for the fast paths of ``exec`` and ``pause``/``resume``.

Not a parser of its own: :func:`loads` runs the very C scanner ``json.loads``
runs (``_json.make_scanner``, with ``json.decoder``'s default settings), on the
text ``json.loads`` would decode, and skips the whitespace it skips. Anything
else (a byte order mark or UTF-16/32, text that is not UTF-8, malformed JSON,
extra data, no ``_json``) is handed to ``json.loads`` itself, which raises its
own errors: a well-formed record costs no ``json`` import, and the answer is
``json.loads``'s in every case (tests/unit/test_jsonlite.py holds them equal).

:func:`dumps` writes what ``json.dumps(obj, indent=2, ensure_ascii=False)``
writes for what :func:`loads` returns (dicts with str keys, lists, str, int,
float, bool, None), with ``_json``'s own string escaper; anything else is
``json.dumps``'s.
"""

from __future__ import annotations

_INF = float("inf")
_CONSTANTS = {"-Infinity": -_INF, "Infinity": _INF, "NaN": float("nan")}
_WHITESPACE = " \t\n\r"  # (json.decoder.WHITESPACE)
_scan: list[object] = []  # the scanner, made once


class _Settings:
    """``json.JSONDecoder()``'s settings, as the C scanner reads them."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


def _scanner() -> object | None:
    if not _scan:
        try:
            from _json import make_scanner
        except ImportError:
            return None
        _scan.append(make_scanner(_Settings()))
    return _scan[0]


def loads(raw: bytes) -> object:
    """``json.loads(raw)``."""
    scan = _scanner()
    # (json.detect_encoding: a BOM, or NULs among the first bytes, is not plain UTF-8)
    if scan is not None and raw[:1] not in (b"\xef", b"\xfe", b"\xff") \
            and b"\0" not in raw[:4]:
        try:
            text = raw.decode("utf-8", "surrogatepass")
            end, n = 0, len(text)
            while end < n and text[end] in _WHITESPACE:
                end += 1
            value, end = scan(text, end)  # type: ignore[operator]
            while end < n and text[end] in _WHITESPACE:
                end += 1
            if end == n:
                return value
        except Exception:  # (StopIteration, a SystemError for want of json.decoder...)
            pass
    import json  # what it says of anything but a well-formed UTF-8 document

    return json.loads(raw)


class _Other(Exception):
    """A value :func:`dumps` does not write itself."""


def dumps(obj: object) -> str:
    """``json.dumps(obj, indent=2, ensure_ascii=False)``."""
    try:
        from _json import encode_basestring

        out: list[str] = []
        _write(obj, "\n", out, encode_basestring)
        return "".join(out)
    except (ImportError, _Other):
        import json

        return json.dumps(obj, indent=2, ensure_ascii=False)


def _write(o: object, nl: str, out: list[str], enc: object) -> None:
    # (json.encoder._make_iterencode's order of tests, and its float spelling)
    if isinstance(o, str):
        out.append(enc(o))  # type: ignore[operator]
    elif o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif type(o) is int:
        out.append(int.__repr__(o))
    elif type(o) is float:
        out.append("NaN" if o != o else "Infinity" if o == _INF else "-Infinity"
                   if o == -_INF else float.__repr__(o))
    elif type(o) is list:
        if not o:
            out.append("[]")
            return
        inner = nl + "  "
        out.append("[")
        for i, item in enumerate(o):
            out.append(inner if i == 0 else "," + inner)
            _write(item, inner, out, enc)
        out.append(nl + "]")
    elif type(o) is dict:
        if not o:
            out.append("{}")
            return
        inner = nl + "  "
        out.append("{")
        for i, (key, value) in enumerate(o.items()):
            if type(key) is not str:
                raise _Other
            out.append((inner if i == 0 else "," + inner) + enc(key) + ": ")  # type: ignore[operator]
            _write(value, inner, out, enc)
        out.append(nl + "}")
    else:
        raise _Other
