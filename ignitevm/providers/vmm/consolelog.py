"""A VM's console log, kept bounded although the guest writes it at will.

The VMM writes what the guest prints into a pipe, and the console writer (a
small C loop beside QEMU; ``ignite-jail -c``: as confined as QEMU when
jailed, ``ignite-jail -n -c`` as the caller with ``--sandbox=none``) appends
it to ``console.log`` and keeps the files below within bounds at every
write, under the lock ``console.log.lock``; QEMU never sees the file. The
writer holds a lock on ``console.log.writer`` for as long as it runs, so
that a command can wait for the last lines it drains after QEMU exits. The
trim here is the same, only for a VM launched by an older version whose
unconfined QEMU appends to the log itself (its command line says so): every
liveness check of such a VM trims its log once it is over the limit. A log
with a writer is never trimmed here: the writer keeps ``console.log.1`` and
``.0`` open, and a file swapped under it would take what it writes next.
Either way:

- ``console.log.0``: the first 64 KiB, kept once (the boot log);
- ``console.log.1``: the last ``limit`` bytes before the latest trim;
- ``console.log``: emptied at the trim; the writer goes on appending to it.

So the files take at most ``2 * limit + 64 KiB``.
The limit is 4 MiB, or ``IGNITE_CONSOLE_LOG_MAX`` bytes, from 4096 to 1 TiB
(read when the VM starts, for its console writer; a bad value is refused
then). An empty ``console.log.0`` (made by the console writer) means nothing
was dropped yet.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from ignitevm.errors import InvalidInput
from ignitevm.util.fs import atomic_write, flock

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:
    from typing import BinaryIO

DEFAULT_MAX = 4 << 20
HEAD = 64 << 10
FOLLOW_EVERY = 0.2  # seconds between looks while following


MIN_LIMIT, MAX_LIMIT = 4096, 1 << 40
WRITER_WAIT = 2.0  # seconds a command waits for the writer to drain once QEMU is gone


def limit() -> int:
    """``IGNITE_CONSOLE_LOG_MAX`` (bytes), else 4 MiB; InvalidInput when it is not
    a whole number from 4096 to 1 TiB (as the console writer takes it)."""
    text = os.environ.get("IGNITE_CONSOLE_LOG_MAX", "").strip()
    if not text:
        return DEFAULT_MAX
    value = int(text) if text.isascii() and text.isdigit() and len(text) < 20 else -1
    if not MIN_LIMIT <= value <= MAX_LIMIT:
        from ignitevm.api.validation import printable

        shown = printable(text[:40])
        raise InvalidInput(f"invalid IGNITE_CONSOLE_LOG_MAX '{shown}': the console log's "
                           f"limit is a number of bytes from {MIN_LIMIT} to {MAX_LIMIT} (1 TiB)",
                           hint="unset it for the default, 4 MiB (4194304)")
    return value


def _limit_or_default() -> int:
    """For a look at a VM, not a launch: a bad value is said when a VM starts."""
    try:
        return limit()
    except InvalidInput:
        return DEFAULT_MAX


def over_limit(log: Path) -> bool:
    """Is ``log`` over the limit? (One stat.)"""
    try:
        return os.stat(log).st_size > _limit_or_default()
    except OSError:
        return False


def writer_path(log: Path) -> Path:
    """Locked by the console writer for as long as it runs (ignite-jail -c)."""
    return log.with_name(log.name + ".writer")


def wait_writer(log: Path, timeout: float | None = None) -> bool:
    """Once the VMM is gone, wait (at most ``timeout``) for its console writer
    to drain the pipe and exit, so that a look at the log finds the last
    lines; True if no writer runs now. (None for a VM launched before the
    writer made this file: nothing to wait for.)"""
    import fcntl

    from ignitevm.util.fs import wait_lock

    try:
        fd = os.open(writer_path(log), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC)
    except OSError:
        return True
    deadline = time.monotonic() + (WRITER_WAIT if timeout is None else timeout)
    try:  # (not util.fs.flock: that creates the file, and follows a link)
        wait_lock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, deadline, step=0.01)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def head_path(log: Path) -> Path:
    return log.with_name(log.name + ".0")


def older_path(log: Path) -> Path:
    return log.with_name(log.name + ".1")


def trim(log: Path, max_bytes: int | None = None) -> bool:
    """Trim ``log`` if it is over the limit; True if this call trimmed it. One
    stat when it is not; another process trimming it meanwhile is left to it."""
    max_bytes = max_bytes or _limit_or_default()
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
    writing what comes until ``alive()`` turns false. Once the VMM is gone,
    what its console writer still drains is waited for (a little while).
    (The log is never trimmed here: its writer does, or for a VM launched by
    an older version, the liveness check, machine.QemuVMM.pid.)"""
    if not follow and not alive():
        wait_writer(log)  # the VMM is gone: its writer may still drain the pipe
    head, older = head_path(log), older_path(log)
    if head.exists() and head.stat().st_size:
        out.write(head.read_bytes())
        out.write(b"\n--- ignite: console output dropped here (the log is capped; "
                  b"IGNITE_CONSOLE_LOG_MAX) ---\n")
    with contextlib.suppress(FileNotFoundError):
        out.write(older.read_bytes())
    running = follow
    with open(log, "rb") as f:
        while True:
            chunk = f.read(1 << 16)
            if chunk:
                out.write(chunk)
                continue
            out.flush()
            if not running:
                break
            running = alive()  # (a liveness check trims the log of an older VM)
            if not running:
                wait_writer(log)  # then one more read, to the end of what it wrote
            if os.fstat(f.fileno()).st_size < f.tell():
                f.seek(0)  # trimmed since we read to its end: go on from its start
                continue
            if running:
                time.sleep(FOLLOW_EVERY)
