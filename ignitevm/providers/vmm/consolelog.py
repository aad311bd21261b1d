"""A VM's console log, kept bounded although the guest writes it at will.

The VMM writes what the guest prints into a pipe, and the console writer (a
small C loop beside QEMU; ``ignite-jail -c``: as confined as QEMU when
jailed, ``ignite-jail -n -c`` as the caller with ``--sandbox=none``) appends
it to ``console.log`` and keeps the files below within bounds at every
write, under the lock ``console.log.lock``; QEMU never sees the file. The
trim here is the same, for a look at a VM launched by an older version
(whose unconfined QEMU appended to the log itself): every liveness check of
a running VM trims its log once it is over the limit. Either way:

- ``console.log.0``: the first 64 KiB, kept once (the boot log);
- ``console.log.1``: the last ``limit`` bytes before the latest trim;
- ``console.log``: emptied at the trim; the writer goes on appending to it.

So the files take at most ``2 * limit + 64 KiB``.
The limit is 4 MiB, or ``IGNITE_CONSOLE_LOG_MAX`` bytes (read when the VM
starts, for the console writer). An empty ``console.log.0`` (made by the
console writer) means nothing was dropped yet.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from ignitevm.util.fs import atomic_write, flock

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:
    from typing import BinaryIO

DEFAULT_MAX = 4 << 20
HEAD = 64 << 10
FOLLOW_EVERY = 0.2  # seconds between looks while following


def limit() -> int:
    try:
        return max(int(os.environ.get("IGNITE_CONSOLE_LOG_MAX", "")), 4096)
    except ValueError:
        return DEFAULT_MAX


def head_path(log: Path) -> Path:
    return log.with_name(log.name + ".0")


def older_path(log: Path) -> Path:
    return log.with_name(log.name + ".1")


def trim(log: Path, max_bytes: int | None = None) -> bool:
    """Trim ``log`` if it is over the limit; True if this call trimmed it. One
    stat when it is not; another process trimming it meanwhile is left to it."""
    max_bytes = max_bytes or limit()
    try:
        if os.stat(log).st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    try:
        with flock(log.with_name(log.name + ".lock"), blocking=False):
            return _trim(log, max_bytes)
    except (BlockingIOError, FileNotFoundError):
        return False


def _trim(log: Path, max_bytes: int) -> bool:
    fd = os.open(log, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        if size <= max_bytes:
            return False  # trimmed by another process just before us
        head = head_path(log)
        if not head.exists() or head.stat().st_size == 0:
            atomic_write(head, os.pread(fd, HEAD, 0))
        tail = os.pread(fd, max_bytes, size - max_bytes)
        os.ftruncate(fd, 0)  # the VMM appends (O_APPEND): its next write lands at 0
    finally:
        os.close(fd)
    newline = tail.find(b"\n", 0, 4096)
    atomic_write(older_path(log), tail[newline + 1:] if newline >= 0 else tail)
    return True


def tail(log: Path, n: int = 64 << 10) -> bytes:
    """The last ``n`` bytes the guest printed (never the whole log in memory)."""
    with contextlib.suppress(FileNotFoundError), open(log, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size >= n:
            return os.pread(f.fileno(), n, size - n)
        before = b""
        with contextlib.suppress(FileNotFoundError), open(older_path(log), "rb") as g:
            older = os.fstat(g.fileno()).st_size
            before = os.pread(g.fileno(), n - size, max(older - (n - size), 0))
        return before + os.pread(f.fileno(), size, 0)
    return b""


def copy(log: Path, out: BinaryIO, *, follow: bool = False,
         alive: Callable[[], bool] = lambda: False) -> None:
    """Write the whole kept log to ``out``: the boot log, a mark where output
    was dropped, the older part, then the current file; with ``follow``, keep
    writing what comes until ``alive()`` turns false (it also trims the log)."""
    head, older = head_path(log), older_path(log)
    if head.exists() and head.stat().st_size:
        out.write(head.read_bytes())
        out.write(b"\n--- ignite: console output dropped here (the log is capped; "
                  b"IGNITE_CONSOLE_LOG_MAX) ---\n")
    with contextlib.suppress(FileNotFoundError):
        out.write(older.read_bytes())
    with open(log, "rb") as f:
        while True:
            chunk = f.read(1 << 16)
            if chunk:
                out.write(chunk)
                continue
            out.flush()
            if not follow:
                break
            trim(log)  # at its end: nothing unread goes to the older part
            if not alive():
                break
            if os.fstat(f.fileno()).st_size < f.tell():
                f.seek(0)  # trimmed since we read to its end: go on from its start
                continue
            time.sleep(FOLLOW_EVERY)
