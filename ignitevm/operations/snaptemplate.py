"""Turn a saved VM state into a shared-RAM template.

The source VM runs with ordinary (anonymous) RAM, so its saved state holds
RAM and devices together. A short-lived QEMU with the same machine and
devices loads that state with its RAM mapped *shared* from a new file,
never runs the guest, and saves again with ``x-ignore-shared``: the new
state holds the devices only, and ``memory`` holds the RAM. Clones map
``memory`` privately (``operations/sharedram.py``). The template QEMU is confined like any VM:
the state it reads was written by the source's QEMU, which a guest may
have taken over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.errors import IgniteError
from ignitevm.log import log

STATE, STATE_SHARED, MEMORY = "state", "state.shared", "memory"

if TYPE_CHECKING:
    from ignitevm.api.types import VM, Snapshot
    from ignitevm.operations.context import Context

TIMEOUT = 120.0


def eligible(vm: VM, nics: int) -> str:
    """Why this VM's RAM cannot be shared by its clones ("" if it can)."""
    if nics > 1:
        return "it has more than one network interface"
    if vm.spec.storage.volumes:
        return "it has volumes"
    if os.geteuid() != 0:
        return "sharing RAM between clones needs root"
    return ""


def build(ctx: Context, snap: Snapshot, vm: VM, kernel: Path, initrd: Path | None,
          stage: Path, full: int) -> str:
    """Make ``stage/memory`` (the RAM) and ``stage/state.shared`` (the devices)
    from the state with RAM inside open as ``full`` (kept for jailed clones);
    the memory's digest."""
    from ignitevm.providers.network.base import NetPlan
    from ignitevm.providers.vmm.base import Disk, LaunchSpec
    from ignitevm.providers.vmm.qemu import migration
    from ignitevm.providers.vmm.qemu.machine import wait_gone

    spec = snap.spec
    work = stage / snap.metadata.uid  # (its name seeds the jail's uid)
    work.mkdir(0o700)
    # In RAM while the template QEMU fills it (a file on disk mapped shared
    # costs a page-cache fault per page: 1.5 s against 0.1 s here).
    ram = Path(SHM_DIR) / f"ignite-{_root_key(ctx)}-{snap.metadata.uid}.ram"
    fd = os.open(ram, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    with contextlib.ExitStack() as undo:
        undo.callback(ram.unlink, missing_ok=True)
        # Stand-ins for the disks (never read: the guest never runs here).
        disks = []
        for i, serial in enumerate(("ignite-root", "ignite-cfg")):
            path = work / f"disk{i}.img"
            with open(path, "wb") as f:
                f.truncate(1 << 20)
            disks.append(Disk(path, serial, "raw", readonly=True))
        net = (NetPlan(plugin="user", mac="02:00:00:00:00:01", guest_ip="", gateway="",
                       dns="") if spec.nics == 1 else None)
        if net is not None and spec.network_plugin == "cni":
            # A tap (with its offloads, which the saved device state names),
            # in a namespace of its own that goes with the template.
            net = net._replace(plugin="cni", tap_fd=_tap(undo, snap.metadata.uid))
        elif net is not None and spec.network_plugin == "passt":
            # (a stream backend, as passt's: a socket pair no one serves)
            import socket

            ours, theirs = socket.socketpair()
            undo.callback(ours.close)
            undo.callback(theirs.close)
            net = net._replace(plugin="passt", tap_fd=theirs.fileno())
        launch = LaunchSpec(uid=f"tpl-{snap.metadata.uid}", workdir=work, kernel=kernel,
                            initrd=initrd, cmdline="", cpus=vm.spec.cpus,
                            memory_mib=vm.spec.memory.mib, disks=tuple(disks),
                            accel=spec.accel, net=net, sandbox=ctx.sandbox, cache=ctx.cache,
                            incoming=True, memory_file=ram, memory_shared=True,
                            agent_channels=spec.agent_channels)
        if net is not None:
            launch = launch._replace(pass_fds=(net.tap_fd,)) if net.tap_fd >= 0 else launch
        vmm = ctx.vmm
        undo.callback(vmm.cleanup, work)
        undo.callback(vmm.kill, work)
        t0 = time.monotonic()
        vmm.launch(launch)
        t1 = time.monotonic()
        dev = os.open(stage / STATE_SHARED, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                      0o600)
        undo.callback(os.close, dev)
        with vmm.monitor(work) as mon:  # type: ignore[attr-defined]
            migration.load(mon, full, ignore_shared=False, timeout=TIMEOUT)
            migration.save(mon, dev, ignore_shared=True, timeout=TIMEOUT)
            with contextlib.suppress(Exception):
                mon.cmd("quit")
        if not wait_gone(vmm, work, 10.0):  # type: ignore[arg-type]
            raise IgniteError("the template QEMU did not exit")
        t2 = time.monotonic()
        digest = _copy_sparse(ram, stage / MEMORY)
        log.debug("template: launch %.2fs, load+save %.2fs, copy %.2fs", t1 - t0, t2 - t1,
                  time.monotonic() - t2)
    shutil.rmtree(work, ignore_errors=True)
    log.debug("snapshot %s: RAM template made", snap.metadata.name)
    return digest


SHM_DIR = "/dev/shm"


def _tap(undo: contextlib.ExitStack, uid: str) -> int:
    from ignitevm.providers.network.cni import netns, tap

    name = f"ignite-tpl-{uid}"
    netns.create(name)
    undo.callback(netns.delete, name)
    with netns.entered(name):
        fd = tap._open_tun("tap0")
    undo.callback(os.close, fd)
    return fd


def _root_key(ctx: Context) -> str:
    import hashlib

    return hashlib.sha256(str(ctx.root.resolve()).encode()).hexdigest()[:12]


def sweep(ctx: Context) -> None:
    """Remove the RAM files of template builds of this root whose creator died
    (their staging folder is gone or no longer locked)."""
    from ignitevm.providers.vmm.qemu import args
    from ignitevm.util.fs import is_locked

    # A template QEMU whose creator died: killed before the sweeper removes its
    # staging folder (it would wait for its state for ever).
    tmp = ctx.root / "tmp"
    with contextlib.suppress(OSError):
        for stage in tmp.iterdir():
            if not stage.is_dir() or is_locked(tmp / f"{stage.name}.lock"):
                continue
            for work in stage.iterdir():
                if (work / args.PIDSTART).exists():
                    ctx.vmm.kill(work)
                    ctx.vmm.cleanup(work)
    prefix = f"ignite-{_root_key(ctx)}-"
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix) and name.endswith(".ram"):
            uid = name[len(prefix):-4]
            if not any(is_locked(tmp / f"{uid}{tail}.lock") for tail in ("", "-tpl")):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(SHM_DIR, name))


def _copy_sparse(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst``, leaving zero blocks as holes; the digest
    (hashed in a second thread while the copy writes: both take ~0.4 s for
    256 MiB here)."""
    import hashlib
    import threading

    h = hashlib.sha256()
    chunk_size = 1 << 20
    zeros = bytes(chunk_size)
    with open(src, "rb", buffering=0) as fi, open(dst, "xb", buffering=0) as fo:
        size = os.fstat(fi.fileno()).st_size
        fo.truncate(size)
        data = fi.read()  # (one read: the template is in RAM already)
        view = memoryview(data)
        hasher = threading.Thread(target=h.update, args=(view,))
        hasher.start()
        try:
            for pos in range(0, len(data), chunk_size):
                chunk = view[pos:pos + chunk_size]
                if chunk != zeros[:len(chunk)]:
                    os.pwrite(fo.fileno(), chunk, pos)
        finally:
            hasher.join()
    os.chmod(dst, 0o640)
    return f"sha256:{h.hexdigest()}"


def in_background(ctx: Context, snap: Snapshot, vm: VM, kernel: Path, initrd: Path | None,
                  full: int) -> None:
    """Build the template in a process of its own (the caller is the detached
    saver, which exits at once): `snapshot create` returns when the state is
    saved, and the template joins the snapshot about a second later. Clones
    started meanwhile restore the state with RAM inside; an unconfined one
    waits for the template (see :func:`wait`)."""
    import fcntl

    tmp = ctx.root / "tmp"
    name = f"{snap.metadata.uid}-tpl"
    lock = os.open(tmp / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # (held by the grandchild below until it is done)
    if os.fork() != 0:
        os.close(lock)  # (the grandchild holds it)
        return
    try:
        keep = {full, lock}
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, min(keep | {null}))  # (the locks of the CLI that forked us)
        for fd in range(min(keep | {null}) + 1, 1024):
            if fd not in keep and fd != null:
                with contextlib.suppress(OSError):
                    os.close(fd)
        work = tmp / name
        work.mkdir(0o700)
        try:
            digest = build(ctx, snap, vm, kernel, initrd, work, full)
            publish(ctx, snap.metadata.uid, work, digest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.unlink(tmp / f"{name}.lock")
    finally:
        os._exit(0)


def publish(ctx: Context, uid: str, work: Path, digest: str) -> None:
    """Add the template to snapshot ``uid`` (unless it was removed meanwhile)."""
    import fcntl

    from ignitevm.api.types import Size, Snapshot, SnapshotFile
    from ignitevm.operations.snapshots import digest as file_digest
    from ignitevm.util.fs import flock

    d = ctx.store.kind_dir(Snapshot) / uid
    # The saver's CLI renames the snapshot into the store, then removes its
    # staging lock: wait for that lock if it is still there (never made anew).
    try:
        held = os.open(ctx.root / "tmp" / f"{uid}.lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        held = -1
    if held >= 0:
        fcntl.flock(held, fcntl.LOCK_EX)
        os.close(held)
    try:
        lock = flock(d / ".lock")
        lock.__enter__()
    except (FileNotFoundError, NotADirectoryError):
        return  # removed meanwhile
    try:
        try:
            snap = ctx.store.get(Snapshot, uid)
        except Exception:
            return
        for fname in (MEMORY, STATE_SHARED):
            os.rename(work / fname, d / fname)
        snap.status.files += [
            SnapshotFile(name=MEMORY, size=(d / MEMORY).stat().st_size, digest=digest),
            SnapshotFile(name=STATE_SHARED, size=(d / STATE_SHARED).stat().st_size,
                         digest=file_digest(d / STATE_SHARED))]
        snap.status.size = Size(sum((d / f.name).stat().st_blocks * 512
                                    for f in snap.status.files))
        snap.spec.shared_memory = True
        ctx.store.save(snap)
    finally:
        lock.__exit__(None, None, None)


def wait(ctx: Context, uid: str, timeout: float = 120.0) -> bool:
    """Wait for a template being made for snapshot ``uid``; True if one was."""
    import fcntl

    from ignitevm.util.files import wait_lock

    path = ctx.root / "tmp" / f"{uid}-tpl.lock"
    # (the builder's own lock file, opened, never made here: the builder removes
    # it as it ends, and a waiter that made it again left it behind for good)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False  # (nobody holds it: no template is being made)
        except BlockingIOError:
            pass
        try:
            wait_lock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, time.monotonic() + timeout)
        except BlockingIOError:
            return False
        return True
    finally:
        os.close(fd)
