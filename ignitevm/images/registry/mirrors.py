"""Mirrors from containers' ``registries.conf`` (version 2): mirrors first, then upstream.

Read from ``$CONTAINERS_REGISTRIES_CONF`` or ``/etc/containers/registries.conf``.
For a reference, the ``[[registry]]`` table with the longest ``prefix`` that
matches it (whole path components; the prefix defaults to ``location``) gives
the places to try: its ``[[registry.mirror]]`` entries in order, then its
``location``, each with its own ``insecure`` flag. ``blocked = true`` refuses
the reference. ``pull-from-mirror = "digest-only"`` (or ``"tag-only"``) limits
which references the mirrors serve.
"""

from __future__ import annotations

import os
from collections import namedtuple

from ignitevm.api.refs import Reference, parse
from ignitevm.errors import InvalidInput

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

DEFAULT_CONF = "/etc/containers/registries.conf"


class Endpoint(namedtuple("Endpoint", "ref insecure mirror")):
    __slots__ = ()
    ref: Reference  # the reference rewritten for this place
    insecure: bool
    mirror: bool


def conf_file() -> str:
    return os.environ.get("CONTAINERS_REGISTRIES_CONF") or DEFAULT_CONF


def conf_path() -> Path:
    from pathlib import Path

    return Path(conf_file())


def _load(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
        # (comments only, as Debian ships it: nothing to parse, and tomllib's import,
        # ~2 ms of every pull, is left out)
        if all(not line.strip() or line.lstrip().startswith("#")
               for line in text.splitlines()):
            return []
        import tomllib

        data = tomllib.loads(text)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}",
                           hint="fix it (version 2 format) or remove it") from None
    tables = data.get("registry") or []
    if not isinstance(tables, list):
        raise InvalidInput(f"{path}: [[registry]] must be a list of tables")
    return [t for t in tables if isinstance(t, dict)]


def _matches(prefix: str, name: str) -> bool:
    return name == prefix or name.startswith(prefix.rstrip("/") + "/")


def _rewrite(ref: Reference, prefix: str, location: str, path: Path) -> Reference:
    name = ref.repository
    new = location + name[len(prefix):]
    text = new + (f":{ref.tag}" if ref.tag else "") + (f"@{ref.digest}" if ref.digest else "")
    try:
        return parse(text)
    except InvalidInput:
        raise InvalidInput(f"{path}: location {location!r} does not make a valid reference "
                           f"of {ref}") from None


def endpoints(ref: Reference, path: Path | None = None) -> list[Endpoint]:
    """Where to pull ``ref`` from, in order (just ``ref`` itself without a config)."""
    path = path or conf_path()
    best: dict[str, Any] | None = None
    best_prefix = ""
    for table in _load(path):
        location = str(table.get("location") or "")
        prefix = str(table.get("prefix") or location)
        if prefix.startswith("*."):
            host = ref.domain
            if not host.endswith(prefix[1:]):
                continue
            prefix = host
        if prefix and _matches(prefix, ref.repository) and len(prefix) > len(best_prefix):
            best, best_prefix = table, prefix
    if best is None:
        return [Endpoint(ref, False, False)]
    if best.get("blocked"):
        raise InvalidInput(f"{ref.repository} is blocked by {path}",
                           hint="remove 'blocked = true' there to pull it")
    location = str(best.get("location") or best_prefix)
    upstream = Endpoint(_rewrite(ref, best_prefix, location, path), bool(best.get("insecure")),
                        False)
    which = best.get("pull-from-mirror") or "all"
    use_mirrors = which == "all" or (which == "digest-only" and ref.digest) or (
        which == "tag-only" and not ref.digest)
    found = []
    for m in (best.get("mirror") or []) if use_mirrors else []:
        if isinstance(m, dict) and m.get("location"):
            found.append(Endpoint(_rewrite(ref, best_prefix, str(m["location"]), path),
                                  bool(m.get("insecure")), True))
    return [*found, upstream]
