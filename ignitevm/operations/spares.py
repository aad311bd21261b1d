"""Spares: clones of a snapshot started ahead of need, paused, and taken by
the next ``run --from-snapshot`` that fits them.

A clone's start is mostly work no request has to wait for: Python's and
QEMU's start, the clone's folder, disk layer and jail, the state's load, the
guest's first RESTORE and the code its first commands run (under TCG, QEMU
translates it anew in every process). A snapshot asked to keep N spares
(``snapshot spares SNAP N``, ``snapshot create --spares N``: ``spec.spares``
and the sandbox mode they are made with, ``spec.sparesSandbox``) has that
done for N clones beforehand: each is a whole clone with its own uid,
hostname, MAC, address (and lease), host key, jail id and cgroups, made by
the usual path (operations/clones.py), left to settle SETTLE seconds, made to
run the image's ``true`` once, and paused. Taking one is: resume its CPUs,
send RESTORE again with fresh RNG bytes and the host's clock (the rest of its
identity is its own already; the restore hooks run again), and name it.

On disk a spare is a VM folder (``vm/<uid>``) whose record is SPARE instead
of ``metadata.json``: no listing sees it (ps, ls, names, the daemon), while
the sandbox ids of its siblings do. A ready spare also has an entry named by
its uid in its snapshot's POOL folder, holding the sandbox mode it was made
with. Whoever acts on a spare holds its VM lock (``vm/<uid>/.lock``): the
maker from its clone's start until its pool entry is written, a taker from
before it removes the entry (one ``unlink``: of two runs, one gets it) until
``metadata.json`` is written under the store's lock with the name checked,
a remover while it removes it. A process killed at any point leaves a pool
entry (still ready), a spare folder with no entry whose lock nobody holds
(an orphan, removed by the next fill), or a VM that is whole.

Filling a snapshot's pool: operations/sparefill.py. A fill removes dead
spares (the host restarted, a QEMU killed), orphans and those past the count
(prune, here). Spares go with their snapshot (``snapshot rm``, ``image rm
-f``, ``kernel rm -f``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.api.types import VM, Snapshot
from ignitevm.errors import IgniteError, NotFound
from ignitevm.log import log
from ignitevm.store.layout import METADATA, SPARE
from ignitevm.util.fs import lock

if TYPE_CHECKING:
    from ignitevm.operations.context import Context

POOL = "spares"         # in the snapshot's folder: one entry per ready spare
SETTLE = 1.5            # seconds a new spare runs (its first RESTORE's aftermath) before its pause
WARM_TIMEOUT = 30.0     # seconds a new spare's warm-up command may take, in all
LOCK_WAIT = 180.0       # seconds a removal waits for a spare being made (settle + warm-up)


class _Gone(Exception):
    """The spare's QEMU is gone, or no longer paused or running."""


def pool(ctx: Context, snap: Snapshot) -> Path:
    return _pool_of(ctx, snap.metadata.uid)


def _pool_of(ctx: Context, snap_uid: str) -> Path:
    return ctx.store.kind_dir(Snapshot) / snap_uid / POOL


def _vmdir(ctx: Context, uid: str) -> Path:
    return ctx.store.kind_dir(VM) / uid


def _entries(ctx: Context, snap: Snapshot) -> list[str]:
    try:
        return sorted(n for n in os.listdir(pool(ctx, snap)) if not n.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def ready(ctx: Context, snap: Snapshot) -> list[str]:
    """The uids of the spares ready to be taken: in the pool, made with the
    sandbox mode the snapshot asks for, their QEMU running."""
    base = pool(ctx, snap)
    out = []
    for uid in _entries(ctx, snap):
        with contextlib.suppress(OSError):
            if (base / uid).read_text() == snap.spec.spares_sandbox and \
                    ctx.vmm.pid(_vmdir(ctx, uid)) is not None:
                out.append(uid)
    return out


def count_text(n: int) -> str:
    return {0: "no spares", 1: "1 spare"}.get(n, f"{n} spares")


# --- taking a spare -------------------------------------------------------


def claim(ctx: Context, snap: Snapshot, *, name: str, labels: dict[str, str] | None
          ) -> VM | None:
    """A ready spare, now the VM ``name`` (a generated name if empty); None
    when none fits (another sandbox mode) or is ready. Dead spares are passed
    over (a fill removes them); a guest that fails its RESTORE fails the run,
    as a clone's would (the spare is removed). The caller holds the snapshot."""
    if ctx.sandbox != snap.spec.spares_sandbox:
        return None
    if name:  # (before a spare is woken; checked again as it is named)
        from ignitevm.api.types import ObjectMeta

        ctx.store.check_name(VM(metadata=ObjectMeta(name=name)))
    for uid in _entries(ctx, snap):
        vm = _take(ctx, snap, uid, name, labels)
        if vm is not None:
            log.info("Started VM %r (%s) from a spare of snapshot %r", vm.metadata.name,
                     vm.metadata.uid, snap.metadata.name)
            return vm
    return None


def _take(ctx: Context, snap: Snapshot, uid: str, name: str,
          labels: dict[str, str] | None) -> VM | None:
    d, entry = _vmdir(ctx, uid), pool(ctx, snap) / uid
    try:
        if entry.read_text() != ctx.sandbox:
            return None
        fd = lock(d / ".lock", blocking=False)
    except (BlockingIOError, FileNotFoundError, NotADirectoryError):
        return None  # (being made, taken or removed by another process)
    try:
        if ctx.vmm.pid(d) is None or (d / METADATA).exists():
            return None
        try:
            os.unlink(entry)  # (this run's now)
            spare = ctx.store.get(VM, uid, record=SPARE)
        except (FileNotFoundError, NotFound):
            return None
        try:
            return _wake(ctx, spare, d, name, labels)
        except _Gone as exc:  # (not woken: an orphan now, which the fill removes)
            log.debug("spare %s passed over: %s", uid, exc)
            return None
        except BaseException:
            _remove_locked(ctx, spare)
            raise
    finally:
        os.close(fd)


def _wake(ctx: Context, vm: VM, d: Path, name: str, labels: dict[str, str] | None) -> VM:
    from ignitevm.api.defaults import now
    from ignitevm.operations import clones

    try:
        state = ctx.vmm.resume(d)
    except Exception as exc:  # (QMP unreachable or refusing: QEMU is not well)
        raise _Gone(f"QMP: {exc}") from None
    if state not in ("paused", "running"):
        raise _Gone(f"QEMU reports it {state!r}")
    clones.renew_identity(ctx, vm, d, None, clock_only=True)
    vm.metadata.name = name
    vm.metadata.labels = labels or None
    vm.metadata.created = vm.status.start_time = now()
    vm.status.paused = False
    with ctx.store.locked():
        ctx.store.take_name(vm, rename=not name)
        ctx.store.save(vm)
    (d / SPARE).unlink(missing_ok=True)
    return vm


# --- making spares --------------------------------------------------------


def make(ctx: Context, snap: Snapshot) -> str:
    """Make one spare of ``snap`` and put it in the pool; its uid."""
    from ignitevm.operations import clones, snapshots

    with snapshots.held(ctx, snap):  # (its removal waits for the clone, then its lock)
        vm = clones._clone(ctx, snap, spare=True)
        d = _vmdir(ctx, vm.metadata.uid)
        try:
            fd = lock(d / ".lock")
        except (FileNotFoundError, NotADirectoryError):  # (image rm -f took it meanwhile)
            raise IgniteError(f"a new spare of snapshot {snap.metadata.name!r} was removed "
                              "while it was made") from None
    try:
        _settle(ctx, snap, vm, d)
    finally:
        os.close(fd)
    log.debug("spare %s of snapshot %r ready", vm.metadata.uid, snap.metadata.name)
    return vm.metadata.uid


def _settle(ctx: Context, snap: Snapshot, vm: VM, d: Path) -> None:
    """Let a new spare run SETTLE seconds, warm it, pause it, put it in the
    pool (its lock held); removed if any of that fails."""
    from ignitevm.util.fs import atomic_write, no_space_errors

    try:
        time.sleep(SETTLE)
        _warm(ctx, vm, d)
        try:
            state = ctx.vmm.pause(d)
        except Exception as exc:  # (QEMU gone: the guest powered off, or was killed)
            state = f"unreachable: {exc}"
        if state not in ("running", "paused"):
            raise IgniteError(f"a new spare of snapshot {snap.metadata.name!r} stopped: QEMU "
                              f"reports it {state!r}", hint=f"see {d / 'console.log'}")
        vm = ctx.store.get(VM, vm.metadata.uid, record=SPARE)  # (as its start left it)
        vm.status.paused = True
        with no_space_errors(ctx.root):
            ctx.store.save(vm, record=SPARE)
            with contextlib.suppress(FileExistsError):
                pool(ctx, snap).mkdir(0o700)
            atomic_write(pool(ctx, snap) / vm.metadata.uid, ctx.sandbox)
    except BaseException:
        _remove_locked(ctx, vm)
        raise


def _warm(ctx: Context, vm: VM, d: Path) -> None:
    """Run the image's ``true`` once, if it has one (its status is not
    looked at), within WARM_TIMEOUT in all: what every command runs first
    (the dynamic loader, the C library's start, a multi-call binary's own)
    is then translated in this spare's QEMU under TCG, as a booted VM's init
    has it (~30-100 ms of a clone's first command otherwise). Its output is
    not read (no window is granted) and no signal is forwarded."""
    from ignitevm.agent import protocol as p
    from ignitevm.agent.client import Channel
    from ignitevm.operations.vms import AgentPorts

    deadline = time.monotonic() + WARM_TIMEOUT
    try:
        with Channel.connect(AgentPorts(ctx, d), WARM_TIMEOUT, f"spare {vm.metadata.uid}") as ch:
            sid = ch.new_session()
            ch.send(p.Frame(p.EXEC, sid, p.request(["true"], [], "", "", None, False)))
            while (frame := ch.recv(deadline)) is not None:
                if frame.session == sid and frame.type in (p.EXIT, p.ERROR):
                    return
            log.debug("spare %s: the warm-up did not end within %.0f s", vm.metadata.uid,
                      WARM_TIMEOUT)
    except IgniteError as exc:  # (a spare that cannot run it is a spare all the same)
        log.debug("spare %s: warming up: %s", vm.metadata.uid, exc.brief)


# --- finding and removing spares ------------------------------------------


def spares_of(ctx: Context, snap: Snapshot | None) -> list[VM]:
    """The spares of ``snap`` (of any snapshot: None) on disk: ready, being
    made or taken, or left by a killed process."""
    from ignitevm.operations.snapshots import ANNOTATION

    base = ctx.store.kind_dir(VM)
    out = []
    for uid in ctx.store.uids(VM):
        if not os.path.exists(base / uid / SPARE) or os.path.exists(base / uid / METADATA):
            continue
        try:
            vm = ctx.store.get(VM, uid, record=SPARE)
        except NotFound:  # (a record that cannot be read: nobody's, removed by any prune)
            from ignitevm.api.types import ObjectMeta

            out.append(VM(metadata=ObjectMeta(uid=uid)))
            continue
        if snap is None or (vm.metadata.annotations or {}).get(ANNOTATION) == snap.metadata.uid:
            out.append(vm)
    return out


def _remove_locked(ctx: Context, vm: VM) -> None:
    """Remove a spare whose lock this process holds: its pool entry, QEMU,
    network, cgroups and folder."""
    from ignitevm.operations import vms

    with contextlib.suppress(FileNotFoundError):
        os.unlink(_entry_of(ctx, vm))
    vms.remove(ctx, vm, force=True, say=False, locked=True)


def _entry_of(ctx: Context, vm: VM) -> Path:
    from ignitevm.operations.snapshots import ANNOTATION

    return _pool_of(ctx, (vm.metadata.annotations or {}).get(ANNOTATION, "")) / vm.metadata.uid


@contextlib.contextmanager
def _holding(ctx: Context, vm: VM, deadline: float | None) -> Iterator[bool]:
    """Hold the spare's lock (None: only if free) and say whether it is one
    still (not taken, not gone); a taker killed after naming it may have
    left SPARE beside the VM's record, which goes now."""
    d = _vmdir(ctx, vm.metadata.uid)
    try:
        fd = lock(d / ".lock", blocking=deadline is not None, deadline=deadline)
    except (BlockingIOError, FileNotFoundError, NotADirectoryError):
        if deadline is not None and d.is_dir():
            raise IgniteError(f"spare {vm.metadata.uid} is still being made after "
                              f"{LOCK_WAIT:.0f} s", hint="try again later") from None
        yield False
        return
    try:
        if (d / METADATA).exists():
            (d / SPARE).unlink(missing_ok=True)
            yield False
        else:
            yield (d / SPARE).exists()
    finally:
        os.close(fd)


def prune(ctx: Context, snap: Snapshot, *, keep: int) -> None:
    """Remove the snapshot's dead spares, orphans (no pool entry, lock free),
    those made with another sandbox mode than it asks for, those whose
    record cannot be read, and the ready ones past ``keep``; spares being
    made or taken (their lock held) stay."""
    kept = 0
    for vm in spares_of(ctx, snap):
        with _holding(ctx, vm, None) as spare:
            if not spare:
                continue
            try:
                mode = _entry_of(ctx, vm).read_text()
            except FileNotFoundError:
                mode = ""
            if mode and mode == snap.spec.spares_sandbox and kept < keep and \
                    ctx.vmm.pid(_vmdir(ctx, vm.metadata.uid)) is not None:
                kept += 1
                continue
            log.debug("removing spare %s of snapshot %r", vm.metadata.uid, snap.metadata.name)
            _remove_locked(ctx, vm)
    base = pool(ctx, snap)
    try:
        names = os.listdir(base)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:  # (entries whose spare is gone, files of killed writes)
        path = base / name
        with contextlib.suppress(FileNotFoundError):
            if name.startswith(".") and time.time() - path.stat().st_mtime < 60:
                continue
            if name.startswith(".") or not (_vmdir(ctx, name) / SPARE).exists():
                path.unlink()


def prune_all(ctx: Context) -> None:
    """prune every snapshot's spares (dead ones hold leases a network's
    removal would otherwise see)."""
    for snap in ctx.store.list(Snapshot):
        prune(ctx, snap, keep=snap.spec.spares)


def remove_all(ctx: Context, snap: Snapshot) -> None:
    """Remove every spare of ``snap`` (for its removal, which holds it
    exclusively: none is being taken; one being made is waited for)."""
    for vm in spares_of(ctx, snap):
        with _holding(ctx, vm, time.monotonic() + LOCK_WAIT) as spare:
            if spare:
                _remove_locked(ctx, vm)
