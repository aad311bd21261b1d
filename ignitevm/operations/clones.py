"""Clones: new VMs started from a snapshot's state instead of booting.

A clone is a VM like any other (its own uid, name, MAC, address, agent
channels, config disk); its disk is a qcow2 layer over the snapshot's disk
layer. QEMU starts with ``-incoming defer``; the host checks the snapshot's
files, feeds QEMU the saved state, runs the CPUs, then tells the guest agent
its new identity (RESTORE: fresh RNG seed, the host's clock, hostname,
machine-id, network address, and with --ssh its own SSH host key and
authorized key) before the VM is reported running. Whatever
fails on the way, the clone is removed (nothing half-made stays).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ignitevm.api.types import VM, Image, Kernel, ObjectMeta, Snapshot
from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.log import log
from ignitevm.operations import snapshots
from ignitevm.operations.context import Context
from ignitevm.store.layout import METADATA, SPARE

if TYPE_CHECKING:
    from ignitevm.agent.client import Channel
    from ignitevm.operations.sharedram import Filling
    from ignitevm.providers.network.base import NetPlan
    from ignitevm.util.background import Background

LOAD_TIMEOUT = 120.0
AGENT_TIMEOUT = 60.0


class Restore:
    """What `vms.start` needs to bring a VM up from a snapshot."""

    def __init__(self, ctx: Context, snap: Snapshot, memory_file: Path | None,
                 filling: Filling | None = None):
        self.snap = snap
        self.dir = snapshots.folder(ctx, snap)
        # (a sealed memfd QEMU inherits, perhaps still being filled: sharedram.Filling)
        self.filling = filling
        if self.memory_fd >= 0:
            memory_file = Path(f"/proc/self/fd/{self.memory_fd}")
        self.memory_file = memory_file
        self.cmdline = snap.spec.cmd_line
        self.warnings: list[str] = []
        # The clone's SSH host key, made while QEMU starts when nothing needs it
        # before the guest runs (no --ssh: it goes to the guest in RESTORE alone).
        self.host_key_later = False
        self.host_key: Background | None = None
        self.record = METADATA  # (SPARE: the clone is a spare, operations/spares.py)

    @property
    def memory_fd(self) -> int:
        """The memfd's descriptor (-1: none, or closed)."""
        return self.filling.fd if self.filling is not None else -1

    def launch(self, workdir: Path) -> dict[str, Any]:
        """What the launch of QEMU takes from the snapshot (called right before it)."""
        out = {"incoming": True, "memory_file": self.memory_file, "memory_shared": False,
               "agent_channels": self.snap.spec.agent_channels,
               "on_spawn": lambda: self._spawned(workdir)}
        if self.memory_fd >= 0:
            out["pass_fds"] = (self.memory_fd,)
        return out

    def _spawned(self, workdir: Path) -> None:
        """QEMU's process has started and sets itself up (~40 ms): the work
        that needs nothing of it begins now, in threads, on the other core.
        Not before the spawn: a thread's imports (cryptography's, ~12-20 ms)
        would take the interpreter from the launch's own last steps."""
        with contextlib.suppress(RuntimeError):  # (no thread to be had: imported where used)
            _preload()
        if self.host_key_later:
            from ignitevm.operations.sshkeys import make_host_key
            from ignitevm.util.background import Background, signals_held

            # (started and recorded with no interrupt between: settle() must
            # know of every thread that writes in the clone's folder)
            with signals_held(), contextlib.suppress(RuntimeError):  # (finish makes it then)
                self.host_key = Background(lambda: make_host_key(workdir, workdir.name))
                self.host_key_later = False

    def host_key_ready(self, workdir: Path) -> None:
        """Return once the clone's host key is in ``workdir``: made by its
        thread, or here when none made it (no thread to be had, a launcher
        that does not call on_spawn)."""
        if self.host_key is not None:
            self.host_key.wait()
        elif self.host_key_later:
            from ignitevm.operations.sshkeys import make_host_key

            make_host_key(workdir, workdir.name)
            self.host_key_later = False

    def settle(self) -> None:
        """Wait for the work begun in threads to end (its errors are not
        said: the caller's is), before the clone is removed."""
        if self.host_key is not None:
            self.host_key.settle()
            self.host_key = None
        if self.filling is not None:
            self.filling.settle()

    def close(self) -> None:
        self.settle()
        if self.filling is not None:
            self.filling.close()
            self.filling = None

    def finish(self, ctx: Context, vm: VM, d: Path, net: NetPlan | None) -> None:
        """Load the state into the waiting QEMU, run it, give the guest its identity."""
        from ignitevm.providers.vmm.qemu import migration

        vmm = snapshots._qemu(ctx)
        if self.filling is not None:  # (whole and sealed before QEMU reads any of it)
            self.filling.wait()
        if self.memory_fd >= 0:  # (where the next clone's host finds the memfd)
            from ignitevm.operations.sharedram import CLONE_FD

            (d / CLONE_FD).write_text(f"{self.memory_fd}\n")
        t0 = time.monotonic()
        fd = _checked_state(ctx, self.snap, shared=self.memory_file is not None)
        try:
            with vmm.monitor(d) as mon:
                migration.load(mon, fd, ignore_shared=self.memory_file is not None,
                               timeout=LOAD_TIMEOUT)
                mon.cmd("cont")
        except IgniteError as exc:
            why = _last_line(d / "qemu.log")
            raise IgniteError(f"{exc.brief}{f' ({why})' if why else ''}",
                              hint=f"the snapshot {self.snap.metadata.name!r} does not fit "
                              "this machine as QEMU sees it; save the VM again") from None
        finally:
            os.close(fd)
        t1 = time.monotonic()
        self.host_key_ready(d)
        self.warnings = renew_identity(ctx, vm, d, net)
        log.debug("state loaded in %.3fs, identity renewed in %.3fs", t1 - t0,
                  time.monotonic() - t1)


def _preload() -> None:
    """Import the modules the restore needs next while QEMU starts: the CLI
    waits for QEMU's start (~40 ms), its imports (~5 ms) can run beside it
    on the other core. (A failure here changes nothing: they are imported
    again where used, and fail there visibly.)"""
    import _thread

    def load() -> None:
        try:
            for name in ("ignitevm.providers.vmm.qemu.qmp", "ignitevm.providers.vmm.qemu.migration",
                         "ignitevm.agent.session"):
                __import__(name)
        except BaseException:  # (never a traceback from this thread)
            pass

    _thread.start_new_thread(load, ())


def _last_line(path: Path) -> str:
    """QEMU's last message (a jailed QEMU's stderr goes to qemu.log)."""
    from ignitevm.api.validation import printable

    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return printable(lines[-1])[:300] if lines else ""


def _checked_state(ctx: Context, snap: Snapshot, shared: bool) -> int:
    """The state file, open, after its digest was checked on that very open
    file (what QEMU reads is what was checked; a file hashed before is
    known by its inode and times: snapshots.verified)."""
    name = snapshots.STATE_SHARED if shared else snapshots.STATE
    path = snapshots.folder(ctx, snap) / name
    rec = next((f for f in snap.status.files if f.name == name), None)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise _damaged(snap, "its state file is missing") from None
    try:
        st = os.fstat(fd)
        if rec is not None and st.st_size == rec.size and \
                snapshots.verified(path.parent, name, st, rec.digest):
            return fd  # (this very file was hashed before, unchanged since)
        found, size = snapshots.digest_fd(fd)
        if rec is None or size != rec.size or found != rec.digest:
            raise _damaged(snap, "its state file does not match its digest")
        os.lseek(fd, 0, os.SEEK_SET)
        snapshots.mark_verified(path.parent, name, st, rec.digest)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _damaged(snap: Snapshot, why: str) -> InvalidInput:
    return InvalidInput(f"snapshot {snap.metadata.name!r} is damaged: {why}",
                        hint=f"remove it (ignite snapshot rm {snap.metadata.name}) and save "
                        "the VM again")


def renew_identity(ctx: Context, vm: VM, d: Path, net: NetPlan | None, *,
                   clock_only: bool = False) -> list[str]:
    """Send the agent RESTORE; the warnings it reported. ``clock_only``:
    fresh RNG bytes and the clock alone (a spare taken: the rest is its own)."""
    from ignitevm.agent.client import Channel
    from ignitevm.operations import sshkeys
    from ignitevm.operations.vms import AgentPorts

    with Channel.connect(AgentPorts(ctx, d), AGENT_TIMEOUT, f"VM {vm.metadata.name!r}") as ch:
        level = restore_level(ch.info)
        if clock_only:  # (and no warm-up exec: the spare ran its own)
            return _restore(ch, vm, [*fresh_fields(), ("warm", "0")])
        # (an older agent ignores the ssh_* lines: without --ssh the clone keeps its
        # snapshot's host key, as before; with --ssh it could not be reached)
        ssh = sshkeys.restore_fields(vm, d) if level >= 3 else []
        if vm.spec.ssh and level < 3:
            raise IgniteError("the guest agent in the snapshot cannot give a clone its own SSH "
                              "host key and authorized key (it predates them in RESTORE)",
                              hint="restart the source VM with this version of ignite and "
                              "save it again")
        return _restore(ch, vm, identity_fields(vm, net, mac_only=level >= 2) + ssh)


def _restore(ch: Channel, vm: VM, fields: list[tuple[str, str]]) -> list[str]:
    from ignitevm.agent.session import GuestError, restore

    try:
        status, warnings = restore(ch, fields, AGENT_TIMEOUT)
    except GuestError as exc:
        if "unknown frame type" not in exc.brief:
            raise
        raise IgniteError("the guest agent in the snapshot cannot renew a clone's "
                          "identity (it predates RESTORE)",
                          hint="restart the source VM with this version of ignite and "
                          "save it again") from None
    for w in warnings:
        log.warning("VM %r after restore: %s", vm.metadata.name, w)
    if status != 0:
        log.warning("VM %r: a restore hook failed (status %d)", vm.metadata.name, status)
    return warnings


def restore_level(info: dict[str, str]) -> int:
    """What the agent's RESTORE takes (READY's ``restore=``): 0 unknown, 2
    ``mac=`` and ``notify=``, 3 also the ``ssh_*`` lines."""
    try:
        return int(info.get("restore", "0"))
    except ValueError:
        return 0


# Plugins that give every VM the same guest address, gateway, name server and
# MTU (providers/network/usermode.py, passt.py): a clone's network differs from
# its snapshot's by the MAC alone.
SAME_ADDRESS_PLUGINS = ("user", "passt")


def identity_fields(vm: VM, net: NetPlan | None, mac_only: bool = False
                    ) -> list[tuple[str, str]]:
    """The RESTORE request's fields (docs/agent-protocol.md). ``mac_only``:
    the agent takes ``mac=`` and ``notify=`` (it says ``restore=2`` in READY),
    and with a plugin of SAME_ADDRESS_PLUGINS only what changed is sent: the
    MAC (and for passt the datagram that tells it the MAC). Under TCG, the
    address, default route and resolv.conf set again to what they were, and
    that datagram, cost a clone ~40-60 ms of QEMU's CPU before it runs."""
    fields = [*fresh_fields(), ("hostname", vm.metadata.uid),
              ("machine_id", os.urandom(16).hex())]
    if net is None:
        return fields
    if mac_only and net.plugin in SAME_ADDRESS_PLUGINS and not net.more and net.mac:
        fields.append(("mac", f"eth0 {net.mac}"))
        # (QEMU's user networking asks the guest's MAC by ARP when it has a
        # packet for it; passt answers nothing before it has seen the MAC.
        # The datagram costs the guest an ARP exchange: ~20 ms of QEMU's CPU.)
        if net.plugin == "passt" and net.gateway:
            fields.append(("notify", net.gateway))
        return fields
    from ignitevm.providers.network.base import guest_lines

    return fields + guest_lines(net)


def fresh_fields() -> list[tuple[str, str]]:
    """RESTORE's fresh RNG bytes and the host's clock."""
    now = time.time_ns()
    return [("rand", os.urandom(64).hex()),
            ("time", f"{now // 1_000_000_000}.{now % 1_000_000_000:09d}")]


def verify(ctx: Context, snap: Snapshot) -> tuple[Image, Kernel]:
    """What the snapshot needs is here and unchanged; clear errors otherwise."""
    name = snap.metadata.name
    spec = snap.spec
    found = []
    for typ, ref, want in ((Image, spec.vm_spec.image.oci, spec.image.id),
                           (Kernel, spec.vm_spec.kernel.oci, spec.kernel.id)):
        what = typ.__name__.lower()
        obj = ctx.store.find(typ, ref)
        if obj is None:
            raise InvalidInput(f"cannot restore snapshot {name!r}: its {what} {ref!r} was "
                               "removed", hint=f"import the {what} again, or remove the "
                               f"snapshot (ignite snapshot rm {name})")
        if want and obj.status.oci_source.id != want:
            raise InvalidInput(f"cannot restore snapshot {name!r}: {what} {ref!r} is not the "
                               f"one it was saved with ({want})",
                               hint=f"import that {what} again, or save the VM anew")
        found.append(obj)
    vs = spec.vm_spec
    machine = snapshots.machine_config(spec.accel, vs.cpus, vs.memory.mib, spec.nics,
                                       spec.agent_channels)
    if spec.machine and not snapshots.same_machine(spec.machine, machine):
        raise InvalidInput(f"cannot restore snapshot {name!r}: it was saved from another "
                           f"machine configuration ({spec.machine!r}, now {machine!r})",
                           hint="boot the VM with this version of ignite and save it again")
    now = snapshots.qemu_version(ctx.cache)
    if spec.qemu_version and now != spec.qemu_version:
        raise InvalidInput(f"cannot restore snapshot {name!r}: it was saved by "
                           f"{spec.qemu_version!r}, this host has {now!r}",
                           hint="boot the VM and save it again with this QEMU")
    return found[0], found[1]  # type: ignore[return-value]


def clone(ctx: Context, query: str, **kw: Any) -> VM:
    """Start a new VM from snapshot ``query`` (see _clone for ``kw``); the
    snapshot is held against its removal until the clone runs. A ready spare
    that fits is taken (operations/spares.py); after that, or when none was
    ready, the snapshot's pool is filled again in the background."""
    snap = ctx.store.resolve(Snapshot, query)
    try:
        with snapshots.held(ctx, snap):
            return _clone(ctx, snap, **kw)
    finally:
        from ignitevm.operations import sparefill

        sparefill.fill_later(ctx, snap)


def _clone(ctx: Context, snap: Snapshot, *, name: str = "",
           labels: dict[str, str] | None = None, ports: list[Any] | None = None,
           plugin: str = "", memory: str = "", cpus: int | None = None,
           spare: bool = False) -> VM:
    """The clone (``spare``: a spare, see operations/spares.py: not named,
    not listed, its record SPARE)."""
    import copy

    from ignitevm.api.defaults import now, validate_vm
    from ignitevm.api.types import Size
    from ignitevm.operations import vms
    from ignitevm.util.ids import new_uid, random_name

    spec = copy.deepcopy(snap.spec.vm_spec)
    if memory and Size.parse(memory, "--memory").bytes != spec.memory.bytes:
        raise InvalidInput(f"--memory {memory} differs from snapshot {snap.metadata.name!r}'s "
                           f"{spec.memory}", hint="a clone has the memory of its snapshot: "
                           "leave --memory out")
    if cpus is not None and cpus != spec.cpus:
        raise InvalidInput(f"--cpus {cpus} differs from snapshot {snap.metadata.name!r}'s "
                           f"{spec.cpus}", hint="a clone has the CPUs of its snapshot: leave "
                           "--cpus out")
    if ctx.accel not in (None, "auto", snap.spec.accel):
        raise InvalidInput(f"--accel {ctx.accel} differs from snapshot "
                           f"{snap.metadata.name!r}'s ({snap.spec.accel})")
    ctx.accel = snap.spec.accel
    spec.network.ports = list(ports or [])
    for att in spec.network.networks:
        att.ip, att.mac = "", ""  # (a new lease, a new MAC)
    vm = VM(metadata=ObjectMeta(name=name, labels=labels or None, created=now(),
                                annotations={snapshots.ANNOTATION: snap.metadata.uid}),
            spec=spec)
    vm.status.network.plugin = plugin or snap.spec.network_plugin
    if vm.status.network.plugin != snap.spec.network_plugin:
        raise InvalidInput(f"--network-plugin {vm.status.network.plugin} differs from snapshot "
                           f"{snap.metadata.name!r}'s ({snap.spec.network_plugin}): the saved "
                           "network device needs the same backend",
                           hint=f"use --network-plugin {snap.spec.network_plugin} (the default)")
    if snapshots.nic_count(vm.status.network.plugin, vm) != snap.spec.nics:
        raise InvalidInput(f"--network-plugin {vm.status.network.plugin} gives the clone "
                           f"{snapshots.nic_count(vm.status.network.plugin, vm)} network "
                           f"interfaces; snapshot {snap.metadata.name!r} has {snap.spec.nics}",
                           hint=f"use --network-plugin {snap.spec.network_plugin} (or one "
                           "with as many interfaces)")
    validate_vm(vm)
    image, kernel = verify(ctx, snap)
    if not spare and not spec.network.ports and snap.spec.spares:
        from ignitevm.operations import spares

        # (held as a clone's making holds them: their removal takes the spares)
        with ctx.store.using(image), ctx.store.using(kernel):
            taken = spares.claim(ctx, snap, name=name, labels=labels)
        if taken is not None:
            return taken
    snapshots.check_files(ctx, snap, (snapshots.DISK,))
    memory_file = None
    if not snap.spec.shared_memory:
        from ignitevm.operations import snaptemplate

        if snaptemplate.wait(ctx, snap.metadata.uid):  # (one is being made: it comes soon)
            snap = ctx.store.get(Snapshot, snap.metadata.uid)
    filling = None
    if snap.spec.shared_memory:
        # (a jailed clone must not be able to write the shared RAM: see sharedram)
        from ignitevm.operations import sharedram

        if ctx.sandbox == "none":
            memory_file = sharedram.template(ctx, snap)
        else:
            filling = sharedram.start(ctx, snap)  # (filled while the clone is made)
    restore = Restore(ctx, snap, memory_file, filling)
    if spare:
        restore.record = SPARE
    try:  # (the memfd closed, and its filling thread ended, whatever happens)
        with ctx.store.using(image), ctx.store.using(kernel):
            vm.metadata.uid = new_uid()
            if spare:  # (its name until it is taken: in messages, never looked up)
                vm.metadata.name = f"spare-{vm.metadata.uid}"
            generated = not vm.metadata.name
            if generated:
                vm.metadata.name = random_name({v.metadata.name for v in ctx.store.list(VM)})
            vm.status.image, vm.status.kernel = snap.spec.image, snap.spec.kernel
            vm.status.runtime.name = ctx.vmm.name
            from ignitevm.operations import sshkeys
            from ignitevm.providers.network import preflight

            preflight(vm, ctx.root)
            with ctx.store.creating(vm, rename=generated, record=restore.record) as stage:
                if vm.spec.ssh:  # (its port's known_hosts is written before QEMU starts)
                    with sshkeys.making_keys(vm, stage):
                        pass
                else:
                    restore.host_key_later = True
                _layer(restore.dir / snapshots.DISK, stage / snapshots.DISK,
                       spec.disk_size.bytes)
        try:
            vms.start(ctx, vm, restore)
        except BaseException:
            restore.settle()  # (no thread writes in the clone's folder as it goes)
            vms.remove(ctx, vm, force=True, say=not spare)
            raise
    finally:
        restore.close()
    if spare:
        return vm
    log.info("Started VM %r (%s) from snapshot %r", vm.metadata.name, vm.metadata.uid,
             snap.metadata.name)
    return vm


LAYER_MAX = 16 << 20  # bytes: an empty qcow2 layer is a few clusters (196 KiB at 64 KiB)


def _layer(base: Path, disk: Path, size: int) -> None:
    """A clone's disk: a qcow2 layer over the snapshot's (which is never written).

    Every clone of a snapshot gets the same bytes (the same backing path and
    size): qemu-img makes them once, beside the snapshot's files in its
    root-only folder (a template no VM's QEMU is given), and each clone's
    layer is a copy of that file (qemu-img's start was ~15 ms of a clone's)."""
    import hashlib

    from ignitevm.util.fs import NO_SPACE
    from ignitevm.util.proc import run

    if not base.exists():
        raise IgniteError(f"the snapshot's disk layer {base} is missing")
    key = hashlib.sha256(f"{base}\0{size}".encode()).hexdigest()[:16]
    template = base.parent / f".layer-{key}.qcow2"
    if not _usable_template(template):
        # (made again when a crash left it empty or cut: it was never synced)
        tmp = template.with_name(f".layer-{key}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            run(["qemu-img", "create", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b",
                 str(base), "-o", "cluster_size=65536", str(tmp), str(size)])
            os.replace(tmp, template)   # (another clone may have made it too: the same)
        finally:
            tmp.unlink(missing_ok=True)
    try:
        _copy_small(template, disk)
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise   # (the store's no_space_errors says it)
        raise IgniteError(f"cannot make the clone's disk layer {disk}: {exc.strerror}"
                          ) from None


def _usable_template(template: Path) -> bool:
    """Whether the snapshot's layer template is there and, if a regular file, a
    qcow2 layer whose header names no other file (see qcow2.problem); anything
    else found there is refused by the copy, not replaced."""
    from ignitevm.providers.vmm.qemu import qcow2

    try:
        st = template.lstat()
        if not stat.S_ISREG(st.st_mode):
            return True
        return st.st_size > 0 and not qcow2.problem(template)
    except FileNotFoundError:
        return False


def _copy_small(src: Path, dst: Path) -> None:
    """Copy a small regular file to a new file (never through a link)."""
    from ignitevm.util.fs import write_all

    fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > LAYER_MAX:
            raise IgniteError(f"{src} is not the small qcow2 layer it should be",
                              hint="remove it: the next clone makes it again")
        data = os.read(fd, LAYER_MAX + 1)
    finally:
        os.close(fd)
    out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                  0o644)
    try:
        write_all(out, data)
    finally:
        os.close(out)
