"""Small file-system helpers: atomic writes, locks, sparse copies."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write a file so that readers see the old or the new content, never a mix."""
    if isinstance(data, str):
        data = data.encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@contextlib.contextmanager
def flock(path: Path, *, shared: bool = False, blocking: bool = True,
          deadline: float | None = None) -> Iterator[int]:
    """Hold an advisory lock on ``path`` (created if missing) for the block.
    Not ``blocking``: BlockingIOError if it is taken; with a ``deadline``
    (time.monotonic()): wait for it until then, then BlockingIOError."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if not blocking or deadline is not None:
            op |= fcntl.LOCK_NB
        while True:
            try:
                fcntl.flock(fd, op)
                break
            except BlockingIOError:
                if deadline is None or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield fd
    finally:
        os.close(fd)


def is_locked(path: Path) -> bool:
    """True if another process holds a lock on ``path``."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def dir_size(path: Path) -> int:
    """Bytes allocated on disk under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total
