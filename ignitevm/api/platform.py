"""Platforms (``os/arch[/variant]``, lowercase words of at most 32 characters), as an
image config says them and as Image and Kernel records keep them. Both are untrusted:
what is not one reads as unknown (""). Plain string checks: records are read on the
CLI's fast paths."""

from __future__ import annotations

_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_REST = _FIRST | frozenset("_.-")


def is_part(word: object) -> bool:
    """Whether ``word`` is one word of a platform (``linux``, ``amd64``, ``v8``)."""
    return (isinstance(word, str) and 0 < len(word) <= 32 and word[0] in _FIRST
            and all(c in _REST for c in word))


def checked_platform(text: object) -> str:
    """``text`` if it is a platform (``os/arch[/variant]``), else ""."""
    if not isinstance(text, str):
        return ""
    parts = text.split("/")
    return text if 2 <= len(parts) <= 3 and all(is_part(p) for p in parts) else ""


def config_platform(config: object) -> str:
    """The platform a document says (an image config, or an index entry's ``platform``),
    or "" if it says none (or something that is not one)."""
    if not isinstance(config, dict):
        return ""
    keys = ("os", "architecture", "variant") if config.get("variant") else ("os",
                                                                           "architecture")
    parts = [config.get(key) for key in keys]
    words = [p for p in parts if is_part(p)]
    return "/".join(words) if len(words) == len(parts) else ""
