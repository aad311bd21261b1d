"""Atomic writes and lock files with built-in modules only (util/fs.py has
them from here): the fast paths of ``exec`` and ``pause``/``resume`` use them
without ``contextlib`` or ``pathlib``, whose imports cost their start-up."""

from __future__ import annotations

import errno
import fcntl
import os
import time

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:
    from os import PathLike

    from ignitevm.errors import IgniteError

    StrPath = str | PathLike[str]

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (os.write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write(path: StrPath, data: bytes | str, mode: int = 0o600) -> None:
    """Write a file so that readers see the old or the new content, never a mix
    (nor a short file: a failed write removes the temporary and raises)."""
    if isinstance(data, str):
        data = data.encode()
    folder, name = os.path.split(os.fspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    os.close(fd)
    os.replace(tmp, path)


def no_space(where: StrPath, exc: OSError) -> IgniteError | None:
    """The error a user can act on for a full disk or quota (ENOSPC, EDQUOT);
    None for any other ``exc``."""
    if exc.errno not in NO_SPACE:
        return None
    from ignitevm.errors import IgniteError

    what = "no space left" if exc.errno == errno.ENOSPC else "disk quota exceeded"
    return IgniteError(f"{what} on the file system of {os.fspath(where)}"
                       + (f" (writing {exc.filename})" if exc.filename else ""),
                       hint="free space there (ignite image rm / rm unused VMs), or move "
                       "the state root with --root / IGNITE_ROOT")


def lock(path: StrPath, *, shared: bool = False, blocking: bool = True,
         deadline: float | None = None) -> int:
    """Take an advisory lock on ``path`` (created if missing); its descriptor,
    to close when done. Not ``blocking``: BlockingIOError if it is taken; with
    a ``deadline`` (time.monotonic()): wait for it until then, then
    BlockingIOError."""
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
            return fd
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
