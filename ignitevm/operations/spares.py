"""Spares: clones of a snapshot started ahead of need, paused, and taken by
the next ``run --from-snapshot`` that fits them.

A clone's start is mostly work no request has to wait for: Python's and
QEMU's start, the clone's folder, disk layer and jail, the state's load, the
guest's first RESTORE and the code its first minutes run (under TCG, QEMU
translates it anew in every process). A snapshot asked to keep N spares
(``snapshot create --spares N``, ``snapshot spares SNAP N``) has that done
for N clones beforehand: each is a whole clone with its own uid, hostname,
MAC, address (and lease), host key, jail id and cgroups, made by the same
path as any clone (operations/clones.py), then left to settle for SETTLE
seconds and paused. Taking one is: resume its CPUs, send RESTORE again with
fresh RNG bytes and the host's clock (the rest of its identity is its own
already; the restore hooks run again), and give it its name.

On disk a spare is a VM folder (``vm/<uid>``) whose record is SPARE instead
of ``metadata.json``: no listing sees it (ps, ls, names, the daemon), while
the sandbox ids of its siblings do. A ready spare is also an entry named by
its uid in its snapshot's POOL folder, holding the sandbox mode and network
plugin it was made with. Taking one removes that entry first (one ``unlink``:
of two `run`s, one gets it); the VM appears when its ``metadata.json`` is
written, under the store's lock, with the name checked. A process killed at
any point leaves either a pool entry (still ready), a folder with SPARE and
no entry (an orphan: removed by the next fill or prune, once its lock is
free), or a VM that is whole.

One process fills a snapshot's pool at a time (FILL_LOCK): ``snapshot
spares`` in its own process, and after a `run` took a spare (or found none) a
process of its own, started in the background, which waits DELAY seconds
first so as not to slow the new clone's first commands. Spares die with their
snapshot (``snapshot rm``), and after a host's restart are found dead and
removed.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.api.types import VM, Snapshot
from ignitevm.errors import IgniteError
from ignitevm.log import log
from ignitevm.store.layout import METADATA, SPARE

if TYPE_CHECKING:
    from ignitevm.operations.context import Context

POOL = "spares"       # in the snapshot's folder: one entry per ready spare
FILL_LOCK = ".fill"   # in the snapshot's folder: held by the process filling the pool
FILL_LOG = "spares.log"  # in the snapshot's folder: what a background fill said
LOG_MAX = 1 << 20     # bytes: the log starts again past this
SETTLE = 1.5          # seconds a new spare runs (its first RESTORE's aftermath) before its pause
DELAY = 1.0           # seconds a fill started by a `run` waits before it begins
MAX = 64              # spares a snapshot may ask for
WARM_TIMEOUT = 30.0   # seconds for a new spare's warm-up command


def pool(ctx: Context, snap: Snapshot) -> Path:
    from ignitevm.operations.snapshots import folder

    return folder(ctx, snap) / POOL


def ready(ctx: Context, snap: Snapshot) -> list[str]:
    """The uids of the spares ready to be taken."""
    try:
        return sorted(n for n in os.listdir(pool(ctx, snap)) if not n.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _mode(ctx: Context, snap: Snapshot, plugin: str) -> str:
    """What a pool entry holds: the clone's sandbox mode and network plugin."""
    return f"{ctx.sandbox} {plugin or snap.spec.network_plugin}\n"


# --- taking a spare -------------------------------------------------------


def claim(ctx: Context, snap: Snapshot, *, name: str, labels: dict[str, str] | None,
          plugin: str) -> VM | None:
    """A ready spare made with this sandbox mode and plugin, now the VM
    ``name`` (a generated name if empty); None when there is none, or each
    found was dead (then removed). The caller holds the snapshot (shared)."""
    base = pool(ctx, snap)
    try:
        entries = sorted(os.listdir(base))
    except (FileNotFoundError, NotADirectoryError):
        return None
    want = _mode(ctx, snap, plugin)
    if name:  # (before a spare is woken; checked again as it is named)
        from ignitevm.api.types import ObjectMeta

        ctx.store.check_name(VM(metadata=ObjectMeta(name=name)))
    for uid in entries:
        if uid.startswith("."):
            continue
        entry = base / uid
        try:
            if entry.read_text() != want:
                continue
            os.unlink(entry)  # (it is this process's now: another's unlink fails)
        except (FileNotFoundError, NotADirectoryError):
            continue
        vm = _take(ctx, uid, name, labels)
        if vm is not None:
            log.info("Started VM %r (%s) from a spare of snapshot %r", vm.metadata.name,
                     vm.metadata.uid, snap.metadata.name)
            return vm
    return None


def _take(ctx: Context, uid: str, name: str, labels: dict[str, str] | None) -> VM | None:
    """Wake the spare ``uid`` (its pool entry removed) as the VM ``name``."""
    from ignitevm.errors import NotFound
    from ignitevm.util.fs import flock

    d = ctx.store.kind_dir(VM) / uid
    try:
        spare = ctx.store.get(VM, uid, record=SPARE)
    except NotFound:
        return None
    failed: Exception | None = None
    with flock(d / ".lock"):  # (vms.vm_lock: no prune removes it meanwhile)
        try:
            vm = _wake(ctx, spare, d, name, labels)
        except IgniteError as exc:
            failed = exc
    if failed is not None:
        log.debug("spare %s could not be taken (%s): removed", uid, failed.brief)
        discard(ctx, spare)
        from ignitevm.errors import Conflict

        if isinstance(failed, Conflict):  # (the name, taken meanwhile)
            raise failed
        return None
    return vm


def _wake(ctx: Context, vm: VM, d: Path, name: str, labels: dict[str, str] | None) -> VM:
    from ignitevm.api.defaults import now
    from ignitevm.operations import clones
    from ignitevm.util.fs import atomic_write

    if ctx.vmm.pid(d) is None:
        raise IgniteError("its QEMU is gone")
    state = ctx.vmm.resume(d)
    if state not in ("paused", "running"):
        raise IgniteError(f"QEMU reports it {state!r}")
    clones.renew_identity(ctx, vm, d, None, clock_only=True)
    from ignitevm.api import codec
    from ignitevm.util.ids import random_name

    vm.metadata.labels = labels or None
    vm.metadata.created = vm.status.start_time = now()
    vm.status.paused = False
    store = ctx.store
    with store.locked():
        if name:
            vm.metadata.name = name
            store.check_name(vm)
        else:
            vm.metadata.name = random_name({v.metadata.name for v in store.list(VM)})
        atomic_write(d / METADATA, codec.to_json(vm) + "\n")
    os.unlink(d / SPARE)
    return vm


# --- making spares --------------------------------------------------------


def make(ctx: Context, snap: Snapshot) -> str:
    """Make one spare of ``snap`` and put it in the pool; its uid."""
    from ignitevm.operations import clones, snapshots

    with snapshots.held(ctx, snap):  # (to the end: its removal takes every spare)
        vm = clones._clone(ctx, snap, spare=True)
        _settle(ctx, snap, vm)
    log.debug("spare %s of snapshot %r ready", vm.metadata.uid, snap.metadata.name)
    return vm.metadata.uid


def _settle(ctx: Context, snap: Snapshot, vm: VM) -> None:
    """Let a new spare run SETTLE seconds, pause it, put it in the pool."""
    from ignitevm.util.fs import atomic_write

    d = ctx.store.kind_dir(VM) / vm.metadata.uid
    try:
        time.sleep(SETTLE)
        _warm(ctx, vm, d)
        state = ctx.vmm.pause(d)
        if state not in ("running", "paused"):
            raise IgniteError(f"a new spare of snapshot {snap.metadata.name!r} stopped: QEMU "
                              f"reports it {state!r}", hint=f"see {d / 'console.log'}")
        vm = ctx.store.get(VM, vm.metadata.uid, record=SPARE)  # (as its start left it)
        vm.status.paused = True
        ctx.store.save(vm, record=SPARE)
        base = pool(ctx, snap)
        with contextlib.suppress(FileExistsError):
            base.mkdir(0o700)
        atomic_write(base / vm.metadata.uid, _mode(ctx, snap, vm.status.network.plugin))
    except BaseException:
        discard(ctx, vm)
        raise


def _warm(ctx: Context, vm: VM, d: Path) -> None:
    """Run the image's ``true`` once, if it has one (its status is not
    looked at): what every command runs first (the dynamic loader, the C
    library's start, a multi-call binary's own) is then translated in this
    spare's QEMU under TCG, as a booted VM's init has it. ~30-100 ms of a
    clone's first command otherwise."""
    from ignitevm.agent.client import Channel
    from ignitevm.agent.session import ExecRequest, run_exec
    from ignitevm.operations.vms import AgentPorts

    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        with Channel.connect(AgentPorts(ctx, d), WARM_TIMEOUT, f"spare {vm.metadata.uid}") as ch:
            run_exec(ch, ExecRequest(["true"]), None, null, null, WARM_TIMEOUT)
    except IgniteError as exc:  # (a spare that cannot run it is a spare all the same)
        log.debug("spare %s: warming up: %s", vm.metadata.uid, exc.brief)
    finally:
        os.close(null)


def discard(ctx: Context, vm: VM) -> None:
    """Remove a spare: its QEMU, network, cgroups and folder."""
    from ignitevm.operations import vms

    with contextlib.suppress(FileNotFoundError):
        os.unlink(_entry_of(ctx, vm))
    vms.remove(ctx, vm, force=True, say=False)


def _entry_of(ctx: Context, vm: VM) -> Path:
    from ignitevm.operations.snapshots import ANNOTATION

    snap_uid = (vm.metadata.annotations or {}).get(ANNOTATION, "")
    return ctx.store.kind_dir(Snapshot) / snap_uid / POOL / vm.metadata.uid


def spares_of(ctx: Context, snap: Snapshot) -> list[VM]:
    """Every spare of ``snap`` on disk (ready, being made or taken, or left
    by a killed process)."""
    from ignitevm.operations.snapshots import ANNOTATION

    base = ctx.store.kind_dir(VM)
    out = []
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    for uid in names:
        if not os.path.exists(base / uid / SPARE):
            continue
        if os.path.exists(base / uid / METADATA):  # (taken: its taker died before the end)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(base / uid / SPARE)
            continue
        with contextlib.suppress(IgniteError):
            vm = ctx.store.get(VM, uid, record=SPARE)
            if (vm.metadata.annotations or {}).get(ANNOTATION) == snap.metadata.uid:
                out.append(vm)
    return out


def prune(ctx: Context, snap: Snapshot, *, keep: int | None = None) -> None:
    """Remove the snapshot's dead spares, the orphans of killed processes
    (a spare with no pool entry whose lock nobody holds), and with ``keep``
    the ready ones past that many."""
    from ignitevm.util.fs import flock

    entries = set(ready(ctx, snap))
    alive = 0
    for vm in spares_of(ctx, snap):
        uid = vm.metadata.uid
        d = ctx.store.kind_dir(VM) / uid
        if uid in entries:
            if ctx.vmm.pid(d) is not None and (keep is None or alive < keep):
                alive += 1
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pool(ctx, snap) / uid)
        else:
            try:
                with flock(d / ".lock", blocking=False):
                    pass
            except BlockingIOError:
                continue  # (being taken, or made by this very fill)
            except (FileNotFoundError, NotADirectoryError):
                continue
        log.debug("removing spare %s of snapshot %r", uid, snap.metadata.name)
        with contextlib.suppress(IgniteError):
            discard(ctx, vm)
    for uid in entries - {vm.metadata.uid for vm in spares_of(ctx, snap)}:
        with contextlib.suppress(FileNotFoundError):  # (an entry whose spare is gone)
            os.unlink(pool(ctx, snap) / uid)


def remove_all(ctx: Context, snap: Snapshot) -> None:
    """Remove every spare of ``snap`` (its removal holds it exclusively)."""
    for vm in spares_of(ctx, snap):
        discard(ctx, vm)


def fill(ctx: Context, snap_uid: str, *, delay: float = 0.0, wait: bool = False) -> int:
    """Make spares until the snapshot's pool holds what it asks for (or
    remove those past it); the number ready. When another process fills it,
    returns at once (that one looks again before it ends), or with ``wait``
    waits for it and then looks again itself."""
    from ignitevm.errors import NotFound
    from ignitevm.util.fs import flock

    lock = ctx.store.kind_dir(Snapshot) / snap_uid / FILL_LOCK
    while True:
        try:
            with flock(lock, blocking=wait):
                if delay:
                    time.sleep(delay)
                    delay = 0.0
                _fill_locked(ctx, snap_uid)
        except BlockingIOError:
            break
        except (NotFound, FileNotFoundError, NotADirectoryError):
            return 0
        if not _short(ctx, snap_uid):
            break
    try:
        return len(ready(ctx, ctx.store.get(Snapshot, snap_uid)))
    except NotFound:
        return 0


def _short(ctx: Context, snap_uid: str) -> bool:
    from ignitevm.errors import NotFound

    try:
        snap = ctx.store.get(Snapshot, snap_uid)
    except NotFound:
        return False
    return len(ready(ctx, snap)) < snap.spec.spares


def _fill_locked(ctx: Context, snap_uid: str) -> None:
    snap = ctx.store.get(Snapshot, snap_uid)
    prune(ctx, snap, keep=snap.spec.spares)
    while len(ready(ctx, snap)) < snap.spec.spares:
        make(ctx, snap)
        snap = ctx.store.get(Snapshot, snap_uid)  # (the count may have changed)


def check_count(count: int) -> None:
    from ignitevm.errors import InvalidInput

    if not 0 <= count <= MAX:
        raise InvalidInput(f"invalid number of spares {count}: want 0 to {MAX}",
                           hint="each spare is a paused VM holding its memory")


def set_count(ctx: Context, snap: Snapshot, count: int) -> Snapshot:
    """Ask the snapshot to keep ``count`` spares (its record; the caller fills)."""
    from ignitevm.operations.snapshots import folder
    from ignitevm.util.fs import flock

    check_count(count)
    with flock(folder(ctx, snap) / ".lock"):
        snap = ctx.store.get(Snapshot, snap.metadata.uid)
        if snap.spec.spares != count:
            snap.spec.spares = count
            ctx.store.save(snap)
    return snap


# --- the fill in the background -------------------------------------------


def fill_later(ctx: Context, snap: Snapshot, *, delay: float = DELAY) -> None:
    """Start a process that fills the snapshot's pool after ``delay`` seconds
    (nothing if the pool is full). Its messages go to FILL_LOG."""
    if len(ready(ctx, snap)) >= snap.spec.spares:
        return
    import subprocess
    import sys

    from ignitevm.operations.snapshots import folder

    logfile = folder(ctx, snap) / FILL_LOG
    try:
        if logfile.stat().st_size > LOG_MAX:
            logfile.unlink()
    except FileNotFoundError:
        pass
    try:
        out = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
                      | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        log.warning("cannot start filling snapshot %r's spares: %s", snap.metadata.name,
                    exc.strerror)
        return
    try:
        subprocess.Popen(
            [sys.executable, "-m", "ignitevm.operations.spares", str(ctx.root),
             snap.metadata.uid, ctx.sandbox, str(delay)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    except OSError as exc:
        log.warning("cannot start filling snapshot %r's spares: %s", snap.metadata.name,
                    exc.strerror)
    finally:
        os.close(out)


def _main(argv: list[str]) -> int:
    """``python -m ignitevm.operations.spares ROOT SNAPSHOT_UID SANDBOX DELAY``."""
    from ignitevm import log as logmod
    from ignitevm.operations.context import Context

    logmod.setup(os.environ.get("IGNITE_LOG_LEVEL") or "info")
    root, snap_uid, sandbox, delay = argv
    ctx = Context(Path(root), sandbox=sandbox)
    try:
        ctx.accel = ctx.store.get(Snapshot, snap_uid).spec.accel
        n = fill(ctx, snap_uid, delay=float(delay))
    except IgniteError as exc:
        log.error("%s: filling the spares of snapshot %s: %s", time.strftime("%F %T"),
                  snap_uid, exc.brief)
        return 1
    log.debug("%d spares of snapshot %s ready", n, snap_uid)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
