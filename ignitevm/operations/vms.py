"""The VM lifecycle: create, start, stop, kill, remove, and live state."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.api.types import VM, Image, Kernel, Size
from ignitevm.errors import Conflict, InvalidInput
from ignitevm.log import log
from ignitevm.operations.context import Context
from ignitevm.store.layout import METADATA
from ignitevm.util.fs import flock, no_space_errors
from ignitevm.util.ids import new_uid, random_name

if TYPE_CHECKING:
    import socket

    from ignitevm.operations.clones import Restore
    from ignitevm.providers.vmm.base import Disk

STOP_TIMEOUT = 20.0
AGENT_STOP_TIMEOUT = 2.0
SSH_PORT_FILE = "ssh-port"


def workdir(ctx: Context, vm: VM) -> Path:
    return ctx.store.dir(vm)


@contextlib.contextmanager
def vm_lock(ctx: Context, vm: VM) -> Iterator[None]:
    """Serialise lifecycle operations on one VM across processes."""
    d = workdir(ctx, vm)
    if not d.is_dir():
        yield
        return
    with flock(d / ".lock"):
        yield


def is_running(ctx: Context, vm: VM) -> bool:
    return ctx.vmm.pid(workdir(ctx, vm)) is not None


def release_network_if_dead(ctx: Context, vm: VM) -> bool:
    """Release the network a VM holds if its VMM died by itself (or the host
    rebooted); any command that sees the VM stopped calls this."""
    from ignitevm.providers import network

    d = workdir(ctx, vm)
    return network.release_if_dead(d, lambda: ctx.vmm.pid(d) is not None)


def create(ctx: Context, vm: VM) -> VM:
    """Make a VM object and its disk; nothing is left behind if any step fails."""
    from ignitevm.api.defaults import default_vm, validate_vm
    from ignitevm.operations import images, kernels, sshkeys
    from ignitevm.providers.network import default_plugin, preflight

    default_vm(vm)
    validate_vm(vm)
    if not vm.status.network.plugin:
        vm.status.network.plugin = default_plugin()
    # Unknown networks, taken ports, a bad --ssh=PATH: refused before anything is
    # pulled or made (start checks the ports again).
    preflight(vm, ctx.root)
    sshkeys.user_public_key(vm.spec.ssh)
    image = images.ensure_image(ctx, vm.spec.image.oci)
    vm.spec.image.oci = image.metadata.name
    kernel = kernels.ensure_kernel(ctx, vm.spec.kernel.oci)
    vm.spec.kernel.oci = kernel.metadata.name
    # Held until the VM is in the store: `image rm`/`kernel rm` wait, then see it.
    with ctx.store.using(image), ctx.store.using(kernel):
        return _create(ctx, vm, image, kernel)


def _create(ctx: Context, vm: VM, image: Image, kernel: Kernel) -> VM:
    from ignitevm.operations import images, sshkeys

    image_size = images.image_file(ctx, image).stat().st_size
    if vm.spec.disk_size.bytes < image_size:
        raise InvalidInput(
            f"invalid --size {vm.spec.disk_size}: smaller than the image "
            f"{image.metadata.name!r} ({Size(image_size)})",
            hint=f"use --size of at least {Size(image_size)}",
        )
    generated = not vm.metadata.name
    if not vm.metadata.uid:
        vm.metadata.uid = new_uid()
    if generated:
        vm.metadata.name = random_name({v.metadata.name for v in ctx.store.list(VM)})
    vm.status.image = image.status.oci_source
    vm.status.kernel = kernel.status.oci_source
    vm.status.runtime.name = ctx.vmm.name
    with ctx.store.creating(vm, rename=generated) as stage, sshkeys.making_keys(vm, stage):
        ctx.vmm.create_disk(images.image_file(ctx, image), stage, vm.spec.disk_size.bytes)
    log.info("Created VM with ID %r and name %r", vm.metadata.uid, vm.metadata.name)
    return vm


def start(ctx: Context, vm: VM, restore: Restore | None = None, plugin: str = "") -> VM:
    """Boot a VM, or with ``restore`` bring it up from a snapshot's state;
    ``plugin``: its network plugin from now on (Ignite's ``start
    --network-plugin``), else the one it has."""
    from ignitevm.api.defaults import now
    from ignitevm.operations import images, kernels, sshkeys
    from ignitevm.operations.guestconfig import CONFIG_DISK, write_config_disk
    from ignitevm.providers import network
    from ignitevm.providers.vmm import consolelog
    from ignitevm.providers.vmm.base import Disk, LaunchSpec

    consolelog.limit()  # a bad IGNITE_CONSOLE_LOG_MAX: said before anything is made
    record = restore.record if restore is not None else METADATA  # (SPARE: a spare's)
    with vm_lock(ctx, vm), no_space_errors(ctx.root), contextlib.ExitStack() as stack:
        vm = ctx.store.get(VM, vm.metadata.uid, record=record)
        d = workdir(ctx, vm)
        if ctx.vmm.pid(d) is not None:
            raise Conflict(f"VM {vm.metadata.uid!r} is already running")
        if plugin and plugin != vm.status.network.plugin:
            network.switch(vm, plugin, ctx.root)
        image, kernel = bases(ctx, vm, "import it again, or remove the VM")
        kernel_path, initrd = kernels.kernel_files(ctx, kernel)
        accel = ctx.vmm.choose_accel(kernel_path, initrd, ctx.cache, ctx.accel, ctx.sandbox)
        ports = [(pm.protocol or "tcp", pm.bind_address, pm.host_port, pm.vm_port)
                 for pm in vm.spec.network.ports]
        # (a CNI attachment is released if anything below fails)
        net = stack.enter_context(network.attached(
            vm.status.network.plugin, ports, ssh=bool(vm.spec.ssh), root=ctx.root, workdir=d,
            prefix=vm.status.id_prefix, uid=vm.metadata.uid, name=vm.metadata.name,
            spec=vm.spec.network))
        if net is not None and net.ssh_port:
            sshkeys.pin_host_key(d, net.ssh_port, net.ssh_host)
            (d / SSH_PORT_FILE).write_text(f"{net.ssh_port}\n")
        from ignitevm.operations.snapshots import disk_layers, source_snapshot

        pair = (d / sshkeys.HOST_KEY, d / f"{sshkeys.HOST_KEY}.pub")
        if restore is None and not all(p.exists() for p in pair) and source_snapshot(vm):
            # (a clone's key is made while its first QEMU starts: a clone whose
            # start was killed before that boots with a key of its own all the same)
            for p in pair:
                p.unlink(missing_ok=True)
            sshkeys.make_host_key(d, vm.metadata.uid)
        cfg = write_config_disk(vm, images.image_config(ctx, image), d / CONFIG_DISK, net)
        words = [vm.spec.kernel.cmd_line, *ctx.vmm.kernel_args(accel)]
        if net is not None:
            words.append("net.ifnames=0")
        cmdline = " ".join(words)
        backing, chain = disk_layers(ctx, vm, images.image_file(ctx, image))
        spec = LaunchSpec(
            uid=vm.metadata.uid,
            workdir=d,
            kernel=kernel_path,
            initrd=initrd,
            cmdline=cmdline,
            cpus=vm.spec.cpus,
            memory_mib=vm.spec.memory.mib,
            disks=(Disk(d / "disk.qcow2", "ignite-root", "qcow2", backing=backing, chain=chain,
                        size=vm.spec.disk_size.bytes),
                   Disk(cfg, "ignite-cfg", "raw", readonly=True),
                   *volume_disks(vm)),
            accel=accel,
            net=net,
            sandbox=ctx.sandbox,
            cache=ctx.cache,
        )
        if restore is not None:
            spec = spec._replace(cmdline=restore.cmdline or cmdline, **restore.launch(d))
        log.debug("kernel command line: %s", shlex.quote(cmdline))
        ctx.vmm.launch(spec)
        if restore is not None:
            restore.finish(ctx, vm, d, net)
        vm.status.running = True
        vm.status.paused = False
        vm.status.start_time = now()
        vm.status.runtime.id = f"{vm.status.id_prefix or 'ignite'}-{vm.metadata.uid}"
        vm.status.runtime.name = ctx.vmm.name
        vm.status.runtime.accel = accel
        vm.status.network.ip_addresses = [net.address] if net is not None else None
        ctx.store.save(vm, record=record)
    if record == METADATA:
        log.info("Started VM %r (%s) with QEMU/%s", vm.metadata.name, vm.metadata.uid,
                 accel.upper())
    return vm


def bases(ctx: Context, vm: VM, hint: str) -> tuple[Image, Kernel]:
    """The image and kernel a VM runs on; InvalidInput (with ``hint``) if one is gone."""
    image = ctx.store.find(Image, vm.spec.image.oci)
    kernel = ctx.store.find(Kernel, vm.spec.kernel.oci)
    if image is None or kernel is None:
        missing = vm.spec.image.oci if image is None else vm.spec.kernel.oci
        raise InvalidInput(f"VM {vm.metadata.name!r} needs {missing!r}, which is gone",
                           hint=hint)
    return image, kernel


def volume_disks(vm: VM) -> list[Disk]:
    """Host block devices given with --volumes, checked again at each start."""
    import stat

    from ignitevm.api.types import VOLUME_SERIAL, volume_id
    from ignitevm.providers.vmm.base import Disk

    out = []
    for vol in vm.spec.storage.volumes:
        path = vol.block_device.path if vol.block_device else ""
        try:
            ok = stat.S_ISBLK(Path(path).stat().st_mode)
        except OSError:
            ok = False
        if not ok:
            raise InvalidInput(f"volume {vol.name!r}: {path} is not a block device on this host",
                               hint="attach the device, or remove the VM and create it again")
        out.append(Disk(Path(path), VOLUME_SERIAL.format(volume_id(vol.name)), "raw"))
    return out


def _mark_stopped(ctx: Context, vm: VM) -> None:
    from ignitevm.providers import network

    ctx.vmm.cleanup(workdir(ctx, vm))
    network.release(workdir(ctx, vm))
    vm.status.running = False
    vm.status.paused = False
    vm.status.start_time = None
    vm.status.network.ip_addresses = None
    ctx.store.save(vm)


class AgentPorts:
    """The agent channels of a VM, as its VMM provides them."""

    def __init__(self, ctx: Context, workdir: Path):
        self.ctx, self.workdir = ctx, workdir

    def sockets(self) -> list[Path]:
        return self.ctx.vmm.agent_sockets(self.workdir)

    def grow(self) -> Path | None:
        return self.ctx.vmm.add_agent_channel(self.workdir)

    def connect(self, path: Path) -> socket.socket:
        return self.ctx.vmm.connect_socket(self.workdir, path)

    def pending(self) -> Path | None:
        return self.ctx.vmm.pending_agent_channel(self.workdir)

    def repair(self, path: Path) -> None:
        self.ctx.vmm.repair_agent_channel(self.workdir, path)


def request_poweroff(ctx: Context, vm: VM) -> str:
    """Ask the guest to power off: through its agent if it answers, else ACPI."""
    from ignitevm.agent.client import Channel
    from ignitevm.agent.session import shutdown

    d = workdir(ctx, vm)
    try:
        with Channel.connect(AgentPorts(ctx, d), AGENT_STOP_TIMEOUT) as ch:
            shutdown(ch)
        return "agent"
    except Exception as exc:  # any failure: fall back to the power button
        log.debug("agent shutdown failed (%s), pressing the ACPI power button", exc)
    return "acpi" if ctx.vmm.powerdown(d) else ""


def paused_error(vm: VM) -> Conflict:
    return Conflict(f"VM {vm.metadata.name!r} is paused",
                    hint=f"resume it first: ignite resume {vm.metadata.name}")


def check_not_paused(ctx: Context, vm: VM) -> None:
    """Raise paused_error if the VMM says the guest's CPUs are stopped (asked
    only when the guest did not answer: one QMP exchange)."""
    try:
        state = ctx.vmm.run_state(workdir(ctx, vm))
    except Exception as exc:  # not reachable: nothing more to say
        log.debug("QMP query-status failed: %s", exc)
        return
    if state == "paused":
        raise paused_error(vm)
    if state not in ("running", ""):
        raise Conflict(f"VM {vm.metadata.name!r} is stopped by QEMU (state {state!r})",
                       hint=f"see ignite logs {vm.metadata.name}; stop it with: "
                       f"ignite stop {vm.metadata.name}")


def _running(ctx: Context, vm: VM) -> tuple[VM, Path]:
    """The VM as stored now and its folder; a clear error if it is not running."""
    vm = ctx.store.get(VM, vm.metadata.uid)
    d = workdir(ctx, vm)
    if ctx.vmm.pid(d) is None:
        raise Conflict(f"VM {vm.metadata.name!r} is not running",
                       hint=f"start it with: ignite start {vm.metadata.name}")
    return vm, d


def pause(ctx: Context, vm: VM) -> VM:
    """Stop a running VM's CPUs (its memory, devices and QEMU stay)."""
    with vm_lock(ctx, vm):
        vm, d = _running(ctx, vm)
        state = ctx.vmm.pause(d)
        if state == "paused":
            if not vm.status.paused:
                vm.status.paused = True
                ctx.store.save(vm)
            raise Conflict(f"VM {vm.metadata.name!r} is already paused",
                           hint=f"resume it with: ignite resume {vm.metadata.name}")
        if state != "running":
            raise Conflict(f"VM {vm.metadata.name!r} cannot be paused: QEMU reports it "
                           f"{state!r}", hint=f"see ignite logs {vm.metadata.name}")
        vm.status.paused = True
        ctx.store.save(vm)
    log.info("Paused VM with name %r and ID %r", vm.metadata.name, vm.metadata.uid)
    return vm


def resume(ctx: Context, vm: VM) -> VM:
    """Run a paused VM's CPUs again."""
    with vm_lock(ctx, vm):
        vm, d = _running(ctx, vm)
        state = ctx.vmm.resume(d)
        if state not in ("paused", "running"):
            raise Conflict(f"VM {vm.metadata.name!r} cannot be resumed: QEMU reports it "
                           f"{state!r}", hint=f"see ignite logs {vm.metadata.name}; "
                           f"stop it with: ignite stop {vm.metadata.name}")
        was_paused = vm.status.paused
        if vm.status.paused:
            vm.status.paused = False
            ctx.store.save(vm)
        if state == "running":
            if not was_paused:
                raise Conflict(f"VM {vm.metadata.name!r} is not paused")
            log.debug("VM %r was running already (its stored state was out of date)",
                      vm.metadata.name)
    log.info("Resumed VM with name %r and ID %r", vm.metadata.name, vm.metadata.uid)
    return vm


def stop(ctx: Context, vm: VM, *, force: bool = False, timeout: float = STOP_TIMEOUT) -> None:
    """Power the guest off (agent, else ACPI), then kill it if still there after
    ``timeout``. A paused guest is resumed first, so that it can power off."""
    from ignitevm.providers.vmm.qemu.machine import wait_pid

    with vm_lock(ctx, vm):
        d = workdir(ctx, vm)
        pid = ctx.vmm.pid(d)
        if pid is None:
            log.warning("VM %r is not running", vm.metadata.name)
        elif force:
            ctx.vmm.kill(d)
        elif not (_resumed_for_stop(ctx, vm) and request_poweroff(ctx, vm)
                  and wait_pid(pid, timeout)):
            log.warning("VM %r did not power off within %.0fs, killing it",
                        vm.metadata.name, timeout)
            ctx.vmm.kill(d)
        if pid is not None:
            from ignitevm.providers.vmm import consolelog

            consolelog.wait_writer(ctx.vmm.console_log(d))  # its last lines, for `logs`
        _mark_stopped(ctx, vm)
    log.info("Stopped VM with name %r and ID %r", vm.metadata.name, vm.metadata.uid)


def _resumed_for_stop(ctx: Context, vm: VM) -> bool:
    """Resume a paused guest so that it can power off; False if it cannot run
    (QEMU stopped it on an error, or QMP does not answer): kill it then."""
    try:
        state = ctx.vmm.resume(workdir(ctx, vm))
    except Exception as exc:
        log.debug("QMP query-status/cont failed: %s", exc)
        return True  # (the power-off below falls back as before)
    if state in ("running", "paused", "suspended"):
        return True
    log.warning("VM %r cannot run (QEMU reports it %r): killing it", vm.metadata.name, state)
    return False


def remove(ctx: Context, vm: VM, *, force: bool = False, say: bool = True,
           locked: bool = False) -> None:
    """Remove a VM (``force``: a running one too, killed first); ``say``:
    log it (not for a spare, which nobody named); ``locked``: the caller
    holds the VM's lock."""
    with contextlib.nullcontext() if locked else vm_lock(ctx, vm):
        d = workdir(ctx, vm)
        if ctx.vmm.pid(d) is not None:
            if not force:
                raise Conflict(f"VM {vm.metadata.name!r} ({vm.metadata.uid}) is running",
                               hint="stop it first, or use rm -f")
            ctx.vmm.kill(d)
        from ignitevm.providers import network

        network.release(d)
        ctx.vmm.cleanup(d)  # (also its cgroups)
        ctx.store.delete(vm)
    if say:
        log.info("Removed VM with name %r and ID %r", vm.metadata.name, vm.metadata.uid)


def remove_base(ctx: Context, obj: Image | Kernel, force: bool = False) -> None:
    """Remove an image or kernel; refused while a VM uses it, unless ``force``
    (then those VMs are removed too)."""
    what = "image" if isinstance(obj, Image) else "kernel"
    name = obj.metadata.name
    with ctx.store.using(obj, exclusive=True):  # no VM is being made over it meanwhile
        users = [vm for vm in ctx.store.list(VM)
                 if (vm.spec.image.oci if what == "image" else vm.spec.kernel.oci) == name]
        if users and not force:
            raise Conflict(
                f"unable to remove, {what} {name!r} is in use by VM {users[0].metadata.name!r}",
                hint="remove those VMs first, or use -f to remove them too",
            )
        from ignitevm.operations.snapshots import users_of

        snaps = users_of(ctx, obj)
        if snaps and not force:
            raise Conflict(
                f"unable to remove, {what} {name!r} is needed by snapshot "
                f"{snaps[0].metadata.name!r}",
                hint="remove the snapshot first (ignite snapshot rm), or use -f (the "
                "snapshot then cannot be restored)",
            )
        for vm in users:
            remove(ctx, vm, force=True)
        from ignitevm.operations import spares

        for snap in snaps:  # (their spares are VMs on it too, and cannot be taken now)
            spares.remove_all(ctx, snap)
        ctx.store.delete(obj)
    if what == "image":  # (its pull records: harmless once it is gone, but no use)
        from ignitevm.cli.fastpull import forget

        forget(ctx.root, obj.metadata.uid)
