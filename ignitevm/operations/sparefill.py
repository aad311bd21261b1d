"""Filling a snapshot's pool of spares (operations/spares.py): how many it
asks for, and the process that makes them.

One process fills a snapshot's pool at a time (FILL_LOCK, in the snapshot's
folder): ``snapshot spares`` itself, and after a `run` (it took a spare, or
found the pool short) a process of its own, which waits DELAY seconds first
so as not to slow the new clone's first commands, and whose messages go to
FILL_LOG; when it fails, no other is started by a run for RETRY_AFTER
seconds. A fill looks again after it lets the lock go, so a spare taken
meanwhile is made again.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.api.types import Snapshot
from ignitevm.errors import IgniteError, NotFound
from ignitevm.log import log
from ignitevm.operations.spares import count_text, make, prune, ready
from ignitevm.util.fs import lock

if TYPE_CHECKING:
    from ignitevm.operations.context import Context

FILL_LOCK = ".fill"       # in the snapshot's folder: held by the process filling the pool
FILL_LOG = "spares.log"   # in the snapshot's folder: what a background fill said
FAILED = ".fill-failed"   # in the snapshot's folder: a background fill's last failure
RETRY_AFTER = 60.0        # seconds after a failed background fill before a run starts another
LOG_MAX = 1 << 20         # bytes: the log starts again past this
DELAY = 1.0               # seconds a fill started by a `run` waits before it begins
MAX = 64                  # spares a snapshot may ask for


def fill(ctx: Context, snap_uid: str, *, delay: float = 0.0, wait: bool = False) -> int:
    """Make spares until the snapshot's pool holds what it asks for (and
    remove the others); the number ready. When another process fills it,
    returns at once (that one looks again before it ends), or with ``wait``
    waits for it and then looks again itself."""
    path = ctx.store.kind_dir(Snapshot) / snap_uid / FILL_LOCK
    while True:
        try:
            fd = lock(path, blocking=wait)
        except BlockingIOError:
            fd = -1
        except (FileNotFoundError, NotADirectoryError):
            return 0  # (the snapshot is gone)
        if fd >= 0:
            _fill_locked(ctx, snap_uid, fd, delay)
            delay = 0.0
        snap = _snapshot(ctx, snap_uid)
        if snap is None:
            return 0
        n = len(ready(ctx, snap))
        if fd < 0 or n >= snap.spec.spares:
            return n


def _fill_locked(ctx: Context, snap_uid: str, fd: int, delay: float) -> None:
    """fill's work while it holds the lock ``fd`` (closed here)."""
    try:
        time.sleep(delay)
        snap = _snapshot(ctx, snap_uid)
        if snap is None:
            return
        prune(ctx, snap, keep=snap.spec.spares)
        while len(ready(ctx, snap)) < snap.spec.spares:
            try:
                make(ctx, snap)
            except NotFound:
                if _snapshot(ctx, snap_uid) is None:
                    return  # (removed meanwhile)
                raise
            snap = _snapshot(ctx, snap_uid)  # (the count may have changed)
            if snap is None:
                return
    finally:
        os.close(fd)


def _snapshot(ctx: Context, uid: str) -> Snapshot | None:
    try:
        return ctx.store.get(Snapshot, uid)
    except NotFound:
        return None


def check_count(count: int) -> None:
    from ignitevm.errors import InvalidInput

    if not 0 <= count <= MAX:
        raise InvalidInput(f"invalid number of spares {count}: want 0 to {MAX}",
                           hint="each spare is a paused VM holding its memory")


def set_count(ctx: Context, snap: Snapshot, count: int, mode: str = "") -> Snapshot:
    """Ask the snapshot to keep ``count`` spares, confined as ``mode`` (else
    ``ctx.sandbox``) says (its record; the caller fills)."""
    from ignitevm.operations.snapshots import folder
    from ignitevm.util.fs import flock

    check_count(count)
    with flock(folder(ctx, snap) / ".lock"):
        snap = ctx.store.get(Snapshot, snap.metadata.uid)
        mode = mode or ctx.sandbox
        if (snap.spec.spares, snap.spec.spares_sandbox) != (count, mode):
            snap.spec.spares, snap.spec.spares_sandbox = count, mode
            ctx.store.save(snap)
    (folder(ctx, snap) / FAILED).unlink(missing_ok=True)
    return snap


def fill_later(ctx: Context, snap: Snapshot, *, delay: float = DELAY) -> None:
    """Start a process that fills the snapshot's pool after ``delay`` seconds
    (nothing if the pool is full, or a fill failed within RETRY_AFTER). Its
    messages go to FILL_LOG."""
    from ignitevm.operations.snapshots import folder

    if snap.spec.spares <= 0 or len(ready(ctx, snap)) >= snap.spec.spares:
        return
    d = folder(ctx, snap)
    try:  # (one fills it now: it looks again before it ends)
        os.close(lock(d / FILL_LOCK, blocking=False))
    except BlockingIOError:
        return
    except OSError:
        return  # (the snapshot was removed meanwhile)
    with contextlib.suppress(FileNotFoundError):
        if time.time() - (d / FAILED).stat().st_mtime < RETRY_AFTER:
            return
    import subprocess
    import sys

    logfile = d / FILL_LOG
    with contextlib.suppress(FileNotFoundError):
        if logfile.stat().st_size > LOG_MAX:
            logfile.unlink()
    try:
        out = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
                      | os.O_NOFOLLOW, 0o600)
    except FileNotFoundError:
        return  # (the snapshot was removed meanwhile)
    except OSError as exc:
        log.warning("cannot start making snapshot %r's spares: %s", snap.metadata.name,
                    exc.strerror)
        return
    try:  # (-P and / as its folder: no module is looked for where the user stands)
        subprocess.Popen([sys.executable, "-P", "-m", "ignitevm.operations.sparefill",
                          os.path.abspath(ctx.root), snap.metadata.uid, str(delay)],
                         stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd="/",
                         start_new_session=True)
    except OSError as exc:
        log.warning("cannot start making snapshot %r's spares: %s", snap.metadata.name,
                    exc.strerror)
    finally:
        os.close(out)


def _main(argv: list[str]) -> int:
    """``python -m ignitevm.operations.sparefill ROOT SNAPSHOT_UID DELAY``: a
    fill in the background (fill_later)."""
    from ignitevm import log as logmod
    from ignitevm.operations.context import Context

    logmod.setup("info")
    root, snap_uid, delay = argv
    ctx = Context(Path(root))
    snap = _snapshot(ctx, snap_uid)
    if snap is None:
        return 0
    ctx.sandbox = snap.spec.spares_sandbox or "jail"
    ctx.accel = snap.spec.accel
    failed = ctx.store.kind_dir(Snapshot) / snap_uid / FAILED
    try:
        n = fill(ctx, snap_uid, delay=float(delay))
    except Exception as exc:  # (one line, and no other fill for a while)
        log.error("%s: making the spares of snapshot %s: %s", time.strftime("%F %T"),
                  snap_uid, exc.brief if isinstance(exc, IgniteError) else repr(exc))
        log.debug("", exc_info=True)
        with contextlib.suppress(OSError):
            failed.touch()
        return 1
    failed.unlink(missing_ok=True)
    log.debug("%s of snapshot %s ready", count_text(n), snap_uid)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
