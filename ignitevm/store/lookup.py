"""Finding a stored object by name or ID, and the few fields that do it.

``pick`` holds the rules (an exact name or UID first, then a unique prefix)
for :meth:`Store.resolve` and for ``ignite exec``'s fast path, which reads
only each record's header (UID, name, paused) with :func:`read_header`
instead of decoding whole objects (msgspec and the API types cost exec's
start-up ~15 ms), with json's own scanner but not the ``json`` package
(util/jsonlite.py). The header is read from the same ``metadata.json`` the
store writes; where it cannot say for sure (a field of another type than the
store writes), it says None and the caller takes the full path.
"""

from __future__ import annotations

import os

from ignitevm.store.layout import METADATA

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:
    from collections.abc import Sequence

_HINTS = {"vm": "list VMs with: ignite ps -a",
          "image": "list images with 'ignite image ls'; import one with "
                   "'ignite image import ./app.tar'",
          "kernel": "list kernels with 'ignite kernel ls'; import Debian's with "
                    "'ignite kernel import debian'",
          "snapshot": "list snapshots with 'ignite snapshot ls'"}


class Header(tuple):  # type: ignore[type-arg]
    """(uid, name, paused): a named tuple written out (see agent/protocol.py Frame)."""

    __slots__ = ()

    def __new__(cls, uid: str, name: str, paused: bool = False) -> Header:
        return tuple.__new__(cls, (uid, name, paused))

    uid: str = property(lambda self: self[0])  # type: ignore[assignment]
    name: str = property(lambda self: self[1])  # type: ignore[assignment]
    paused: bool = property(lambda self: self[2])  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Header(uid={self[0]!r}, name={self[1]!r}, paused={self[2]!r})"

    def __getnewargs__(self) -> tuple[str, str, bool]:
        return tuple(self)  # type: ignore[return-value]


def read_header(raw: bytes) -> Header | None:
    """``metadata.uid``, ``metadata.name`` and ``status.paused`` of a stored
    object (their defaults when absent, as the API types have them), or None
    when the record is not JSON or holds them as other types."""
    from ignitevm.util import jsonlite

    try:
        data = jsonlite.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    meta, status = data.get("metadata", {}), data.get("status", {})
    if not isinstance(meta, dict) or not isinstance(status, dict):
        return None
    uid, name, paused = meta.get("uid", ""), meta.get("name", ""), status.get("paused", False)
    if not (isinstance(uid, str) and isinstance(name, str) and isinstance(paused, bool)):
        return None
    return Header(uid, name, paused)


def read_headers(kind_dir: str) -> list[Header] | None:
    """The headers of every object in a kind's folder, in the order the store
    lists them; a record that cannot be read at all is left out, as the store
    leaves it out. None if some record's header cannot be told for sure."""
    try:
        names = sorted(os.listdir(kind_dir))
    except FileNotFoundError:
        return []
    except OSError:
        return None  # (unreadable: the full path says what it says of it)
    out = []
    for uid in names:
        try:
            with open(os.path.join(kind_dir, uid, METADATA), "rb") as f:
                raw = f.read()
        except OSError:
            continue
        header = read_header(raw)
        if header is None:
            return None
        out.append(header)
    return out


def pick(entries: Sequence[tuple[str, str]], query: str, what: str) -> int:
    """The index in ``entries`` (``(uid, name)`` pairs) that ``query`` names:
    an exact name or UID, else the one UID or name it begins. NotFound or
    Conflict (ambiguous) otherwise."""
    from ignitevm.errors import Conflict, NotFound

    exact = [i for i, (uid, name) in enumerate(entries) if query in (name, uid)]
    if len(exact) == 1:
        return exact[0]
    matches = exact or [i for i, (uid, name) in enumerate(entries)
                        if query and (uid.startswith(query) or name.startswith(query))]
    if not matches:
        raise NotFound(f"can't find {what}: no ID/name matches for {query!r}",
                       hint=_HINTS[what])
    if len(matches) > 1:
        ids = ", ".join(f"{entries[i][1]} ({entries[i][0]})" for i in matches[:5])
        raise Conflict(f"ambiguous {what} query {query!r}: matched {ids}",
                       hint="give more characters of the ID, or the full name")
    return matches[0]
