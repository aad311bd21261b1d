"""Small file-system helpers: atomic writes, locks, sparse copies."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

# (for those who import them from here)
from ignitevm.util.files import NO_SPACE as NO_SPACE
from ignitevm.util.files import atomic_write as atomic_write
from ignitevm.util.files import lock, no_space
from ignitevm.util.files import wait_lock as wait_lock
from ignitevm.util.files import write_all as write_all


@contextlib.contextmanager
def no_space_errors(where: Path) -> Iterator[None]:
    """Turn a full disk or quota (ENOSPC, EDQUOT) in the block into one error a
    user can act on, instead of a traceback."""
    try:
        yield
    except OSError as exc:
        error = no_space(where, exc)
        if error is None:
            raise
        raise error from None


@contextlib.contextmanager
def flock(path: Path, *, shared: bool = False, blocking: bool = True,
          deadline: float | None = None) -> Iterator[int]:
    """Hold an advisory lock on ``path`` (created if missing) for the block.
    Not ``blocking``: BlockingIOError if it is taken; with a ``deadline``
    (time.monotonic()): wait for it until then, then BlockingIOError."""
    fd = lock(path, shared=shared, blocking=blocking, deadline=deadline)
    try:
        yield fd
    finally:
        os.close(fd)


def unlink_if_unlocked(path: Path) -> bool:
    """Remove the lock file ``path`` if nobody holds it; it is removed while this
    process holds it, so no one can be taking it at that moment (see flock)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not os.path.samestat(os.fstat(fd), os.stat(path)):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
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
