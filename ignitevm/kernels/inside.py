"""Paths inside an unpacked kernel image, with its links followed as if it were ``/``."""

from __future__ import annotations

import os
import stat

from ignitevm.errors import InvalidInput

_MAX_LINKS = 40


def resolve_inside(root: str, rel: str) -> str | None:
    """Path of ``rel`` under ``root``, following links as if ``root`` were ``/``.

    ``root`` must be a real path (no links in it). Returns None when some part
    of ``rel`` does not exist (or a part that should be a directory is not).
    The result is made of real directories under ``root`` only; it may name a
    file, a directory or anything else but a symbolic link.
    """
    parts = [p for p in reversed(rel.split("/")) if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop()
        if part == "..":
            if done:
                done.pop()
            continue
        path = os.path.join(root, *done, part)
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(mode):
            links += 1
            if links > _MAX_LINKS:
                raise InvalidInput(f"{rel} in the kernel image is a loop of symbolic links")
            target = os.readlink(path)
            if target.startswith("/"):
                done = []
            parts.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
            continue
        if parts and not stat.S_ISDIR(mode):
            return None
        done.append(part)
    return os.path.join(root, *done)
