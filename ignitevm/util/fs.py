"""Small file-system helpers: atomic writes, locks, sparse copies."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (os.write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Write a file so that readers see the old or the new content, never a mix
    (nor a short file: a failed write removes the temporary and raises)."""
    if isinstance(data, str):
        data = data.encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


@contextlib.contextmanager
def no_space_errors(where: Path) -> Iterator[None]:
    """Turn a full disk or quota (ENOSPC, EDQUOT) in the block into one error a
    user can act on, instead of a traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        from ignitevm.errors import IgniteError

        what = "no space left" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        raise IgniteError(f"{what} on the file system of {where}"
                          + (f" (writing {exc.filename})" if exc.filename else ""),
                          hint="free space there (ignite image rm / rm unused VMs), or move "
                          "the state root with --root / IGNITE_ROOT") from None


@contextlib.contextmanager
def flock(path: Path, *, shared: bool = False, blocking: bool = True,
          deadline: float | None = None) -> Iterator[int]:
    """Hold an advisory lock on ``path`` (created if missing) for the block.
    Not ``blocking``: BlockingIOError if it is taken; with a ``deadline``
    (time.monotonic()): wait for it until then, then BlockingIOError."""
    op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    if not blocking or deadline is not None:
        op |= fcntl.LOCK_NB
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            wait_lock(fd, op, deadline)
            # A lock file removed (by a sweeper holding it) while we waited is
            # no lock: take the one now at ``path``.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield fd
    finally:
        os.close(fd)


def wait_lock(fd: int, op: int, deadline: float | None, step: float = 0.02) -> None:
    """``flock(fd, op)``; with ``LOCK_NB`` in ``op`` and a ``deadline``
    (time.monotonic()), try again every ``step`` seconds until then, then
    BlockingIOError."""
    while True:
        try:
            fcntl.flock(fd, op)
            return
        except BlockingIOError:
            if deadline is None or time.monotonic() > deadline:
                raise
            time.sleep(step)


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
