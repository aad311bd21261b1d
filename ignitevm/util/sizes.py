"""Sizes as Ignite wrote and read them.

Binary multiples, case-insensitive units (``512MB``, ``4gb``, ``1024``), no
decimals, ``Kb``-style bit units refused. Serialised in the largest exact
unit (``512MB``, ``1500MB``, ``4GB``); shown to humans as ``%.1f <unit>``
with a strict ``>`` test (exactly 1 GiB shows as ``1024.0 MB``).
"""

from __future__ import annotations

import re

from ignitevm.errors import InvalidInput

_UNITS = [("B", 1), ("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30),
          ("TB", 1 << 40), ("PB", 1 << 50), ("EB", 1 << 60)]

_NAMES = {
    "": 1, "b": 1, "byte": 1, "bytes": 1,
    "k": 1 << 10, "kb": 1 << 10, "kilo": 1 << 10, "kilobyte": 1 << 10, "kilobytes": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20, "mega": 1 << 20, "megabyte": 1 << 20, "megabytes": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30, "giga": 1 << 30, "gigabyte": 1 << 30, "gigabytes": 1 << 30,
    "t": 1 << 40, "tb": 1 << 40, "tera": 1 << 40, "terabyte": 1 << 40, "terabytes": 1 << 40,
    "p": 1 << 50, "pb": 1 << 50, "peta": 1 << 50, "petabyte": 1 << 50, "petabytes": 1 << 50,
    "e": 1 << 60, "eb": 1 << 60, "exa": 1 << 60, "exabyte": 1 << 60, "exabytes": 1 << 60,
}

_RE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")

_HINT = "use a whole number with an optional unit: B, KB, MB, GB, TB (binary), e.g. 512MB or 4GB"


def parse_size(text: str | int, what: str = "size") -> int:
    """Parse a size such as ``512MB`` into bytes."""
    if isinstance(text, int):
        if text < 0:
            raise InvalidInput(f"invalid {what} {text}: must not be negative", hint=_HINT)
        return text
    m = _RE.match(text)
    if not m:
        raise InvalidInput(f"invalid {what} {text!r}", hint=_HINT)
    number, unit = m.groups()
    if len(unit) >= 2 and unit[-1] == "b" and unit[-2].isupper():
        raise InvalidInput(f"invalid {what} {text!r}: {unit!r} means bits, sizes are in bytes",
                           hint=_HINT)
    mult = _NAMES.get(unit.lower())
    if mult is None:
        raise InvalidInput(f"invalid {what} {text!r}: unknown unit {unit!r}", hint=_HINT)
    return int(number) * mult


def format_size(n: int) -> str:
    """The serialised form: the largest unit that divides ``n`` exactly."""
    if n == 0:
        return "0B"
    for unit, mult in reversed(_UNITS):
        if n % mult == 0:
            return f"{n // mult}{unit}"
    return f"{n}B"


def human_size(n: int) -> str:
    """The display form Ignite used: ``512.0 MB``, ``1024.0 MB``, ``4.0 GB``, ``0 B``."""
    if n == 0:
        return "0 B"
    for unit, mult in reversed(_UNITS[1:]):
        if n > mult:
            return f"{n / mult:.1f} {unit}"
    return f"{n} B"
