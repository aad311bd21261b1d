"""Snapshots of running VMs: their RAM, devices and disk, saved so that clones
can start from them (``operations/clones.py``).

A snapshot's folder (``<root>/snapshot/<uid>/``) holds ``state`` (QEMU's
migration stream: devices, and RAM unless it is in ``memory``), ``disk.qcow2``
(the VM's disk layer as it was, over the shared image) and, with shared RAM,
``memory`` (the guest's RAM, which every clone maps privately). It is built
in the store's staging folder under a lock and appears by one rename, so a
save that fails or is killed leaves nothing listed (the sweeper removes the
rest). The source VM's CPUs stop only while its state and disk layer are
written; it then runs on (or, with ``--stop``, is stopped).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.api.types import VM, Image, Kernel, ObjectMeta, Size, Snapshot, SnapshotFile
from ignitevm.errors import Conflict, IgniteError, InvalidInput
from ignitevm.log import log
from ignitevm.operations import sharedram, snaptemplate
from ignitevm.operations.context import Context

if TYPE_CHECKING:
    from ignitevm.providers.vmm.qemu.machine import QemuVMM
    from ignitevm.providers.vmm.qemu.qmp import Monitor

STATE = "state"
STATE_SHARED = "state.shared"  # the devices only, for clones that map ``memory``
DISK = "disk.qcow2"
MEMORY = "memory"
# A clone's VM object names the snapshot its disk is layered over.
ANNOTATION = "ignitevm.io/snapshot"
GROW_WAIT = 30.0  # seconds a save waits for a client adding an agent channel


def qemu_version(cache: Path | None = None) -> str:
    """QEMU's version line; with ``cache``, remembered there per binary (its
    path, size, mtime and ctime: ~80 ms of a clone's start otherwise)."""
    from ignitevm.providers.vmm.qemu import args
    from ignitevm.util.fs import atomic_write
    from ignitevm.util.proc import run, which

    binary = which(args.QEMU)
    key = ""
    if cache is not None:
        st = os.stat(binary)
        key = f"{binary} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}\n"
        with contextlib.suppress(OSError):
            text = (cache / "qemu-version").read_text()
            if text.startswith(key):
                return text[len(key):].strip()
    out = run([binary, "--version"], check=False).stdout or ""
    version = out.splitlines()[0].strip() if out else ""
    if cache is not None and version:
        with contextlib.suppress(OSError):
            cache.mkdir(parents=True, exist_ok=True)
            atomic_write(cache / "qemu-version", (key + version + "\n").encode())
    return version


def machine_config(accel: str, cpus: int, memory_mib: int, nics: int, channels: int) -> str:
    """The VMM's machine and device set as a restore must match it."""
    from ignitevm.providers.vmm.qemu import args

    words = [*args.machine(accel), *args.resources(cpus, memory_mib),
             f"nics={nics}", f"agent-channels={channels}"]
    return " ".join(words)


def source_snapshot(vm: VM) -> str | None:
    """The uid of the snapshot ``vm`` is a clone of (None: not a clone)."""
    return (vm.metadata.annotations or {}).get(ANNOTATION)


def same_machine(saved: str, now: str) -> bool:
    """Whether a snapshot saved with machine configuration ``saved`` restores
    on ``now``. A TCG snapshot saved when the guest's CPU was ``max`` (before
    args.TCG_CPU) restores as it was: its guest chose its string moves at
    boot, and TCG runs them whatever CPUID says (QEMU keeps no CPUID in
    the saved state)."""
    if saved == now:
        return True
    from ignitevm.providers.vmm.qemu.args import TCG_CPU

    return saved.replace(" -cpu max ", f" -cpu {TCG_CPU} ", 1) == now


def nic_count(plugin: str, vm: VM) -> int:
    if plugin in ("", "none"):
        return 0
    if plugin == "cni":
        return max(1, len(vm.spec.network.networks))
    return 1


def digest(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return digest_fd(fd)[0]
    finally:
        os.close(fd)


def digest_fd(fd: int) -> tuple[str, int]:
    """The sha256 digest of what is read from ``fd`` to its end, and how many bytes."""
    h, size = hashlib.sha256(), 0
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
        size += len(chunk)
    return f"sha256:{h.hexdigest()}", size


def folder(ctx: Context, snap: Snapshot) -> Path:
    return ctx.store.dir(snap)


@contextlib.contextmanager
def held(ctx: Context, snap: Snapshot, *, exclusive: bool = False) -> Iterator[None]:
    """Hold a snapshot: shared while a clone is made from it, exclusive while
    it is removed (so the clones it finds are all there are). NotFound if it
    is gone, or goes while this waits."""
    from ignitevm.errors import NotFound
    from ignitevm.store.layout import METADATA
    from ignitevm.util.fs import flock

    d = folder(ctx, snap)
    gone = NotFound(f"snapshot {snap.metadata.name!r} was removed meanwhile",
                    hint="list snapshots with 'ignite snapshot ls'")
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(flock(d / ".use", shared=not exclusive))
        except (FileNotFoundError, NotADirectoryError):
            raise gone from None
        if not (d / METADATA).exists():
            raise gone
        yield


def _qemu(ctx: Context) -> QemuVMM:
    from ignitevm.providers.vmm.qemu.machine import QemuVMM

    if not isinstance(ctx.vmm, QemuVMM):
        raise IgniteError(f"snapshots need the QEMU VMM, not {ctx.vmm.name}")
    return ctx.vmm


def create(ctx: Context, vm: VM, name: str, *, stop: bool = False,
           shared: bool = True) -> Snapshot:
    """Save a running VM as snapshot ``name``."""
    from ignitevm.api.defaults import now, validate_name
    from ignitevm.operations import images, kernels, vms
    from ignitevm.util.ids import new_uid

    validate_name(name, "snapshot")
    snap = Snapshot(metadata=ObjectMeta(name=name, uid=new_uid(), created=now()))
    vmm = _qemu(ctx)
    with vms.vm_lock(ctx, vm):
        vm, d = vms._running(ctx, vm)
        state = vmm.run_state(d)
        if state not in ("running", "paused"):
            raise Conflict(f"VM {vm.metadata.name!r} cannot be saved: QEMU reports it "
                           f"{state!r}", hint=f"see ignite logs {vm.metadata.name}; stop it "
                           f"with: ignite stop {vm.metadata.name}")
        image, kernel = vms.bases(ctx, vm, "import it again before saving the VM")
        # No agent channel is added while the VM is described and saved: the
        # saved state and the port count the snapshot records must agree (the
        # saving child inherits the lock and holds it to its end).
        with contextlib.ExitStack() as grow:
            _agent_grow_lock(grow, d)
            _describe(ctx, snap, vm, d)
            snaptemplate.sweep(ctx)  # (what a killed `snapshot create` left running)
            with ctx.store.using(image), ctx.store.using(kernel), \
                    ctx.store.creating(snap) as stage:
                why = snaptemplate.eligible(vm, snap.spec.nics) if shared else "not asked for"
                kernel_path, initrd = kernels.kernel_files(ctx, kernel)

                layers = disk_layers(ctx, vm, images.image_file(ctx, image))

                def work() -> str:
                    _save(vmm, d, stage, paused=state == "paused", stop=stop)
                    if layers[1]:  # a clone: its layer reads through its snapshot's
                        _flatten(stage / DISK, layers[0], layers[1][-1])
                    if not why:
                        full = os.open(stage / STATE, os.O_RDONLY)  # (valid after the rename)
                        snaptemplate.in_background(ctx, snap, vm, kernel_path, initrd, full)
                        os.close(full)
                    return ""

                _detached(work)
                if why and shared:
                    log.info("Clones of %r will not share RAM: %s", name, why)
                _record_files(snap, stage, {})
    if stop:
        vms.stop(ctx, vm, force=True)
    log.info("Saved VM %r as snapshot %r (ID %s, %s)", vm.metadata.name, name,
             snap.metadata.uid, snap.status.size)
    return snap


def _describe(ctx: Context, snap: Snapshot, vm: VM, d: Path) -> None:
    import copy

    s = snap.spec
    s.vm, s.vm_uid = vm.metadata.name, vm.metadata.uid
    s.vm_spec = copy.deepcopy(vm.spec)
    s.network_plugin = vm.status.network.plugin
    s.nics = nic_count(s.network_plugin, vm)
    # (QEMU's ports, not the named sockets: a client killed after it added a
    # port, before it named its socket, leaves one more port than sockets)
    s.agent_channels = max(1, _qemu(ctx).agent_ports(d))
    s.image, s.kernel = vm.status.image, vm.status.kernel
    s.qemu_version = qemu_version(ctx.cache)
    s.accel = vm.status.runtime.accel or "tcg"
    s.cmd_line = _kernel_cmdline(d)
    s.initramfs = _launch_word(d, "-initrd")
    s.machine = machine_config(s.accel, vm.spec.cpus, vm.spec.memory.mib, s.nics,
                               s.agent_channels)
    source = source_snapshot(vm)
    if source:
        # (for people: the saved disk layer stands on the image alone)
        snap.metadata.annotations = {"ignitevm.io/from-snapshot": source}


def _agent_grow_lock(held: contextlib.ExitStack, d: Path) -> None:
    """Hold the lock under which clients add agent channels to VM folder ``d``."""
    import time

    from ignitevm.agent.client import _grow_lock
    from ignitevm.providers.vmm.qemu import args

    _grow_lock(held, args.agent_socket(d, 1).parent, time.monotonic() + GROW_WAIT)


def _kernel_cmdline(d: Path) -> str:
    return _launch_word(d, "-append")


def _launch_word(d: Path, option: str) -> str:
    """The value of ``option`` on the command line the VM's QEMU was started with."""
    try:
        words = (d / "qemu.cmdline").read_text().splitlines()
    except OSError:
        return ""
    return words[words.index(option) + 1] if option in words[:-1] else ""


def _detached(work: Callable[[], str]) -> str:
    """Run ``work`` in a child of its own session and return its result: the
    source VM's CPUs are stopped while it saves, and the template QEMU waits
    for its state; a CLI killed meanwhile (even by SIGKILL) must leave neither
    so. The child finishes whatever becomes of its parent (the locks it
    inherited are held until then: the staging folder is swept after); its
    result or error comes back through a pipe."""
    import signal
    import traceback

    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # (the child: no return from here)
        code = 0
        try:
            os.close(r)
            os.setsid()
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
            result = work()
            os.write(w, f"OK\n{result}".encode())
        except BaseException as exc:
            code = 1
            if isinstance(exc, OSError) and exc.errno == 28:
                msg = f"ENOSPC\n{exc.filename or ''}"
            elif isinstance(exc, IgniteError):
                msg = f"IGNITE\n{exc.brief}\n{exc.hint or ''}"
            else:
                msg = f"OTHER\n{exc!r}\n{traceback.format_exc()}"
            with contextlib.suppress(OSError):
                os.write(w, msg.encode()[:65536])
        finally:
            os._exit(code)
    os.close(w)
    try:
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(r)
    kind, _, rest = b"".join(chunks).decode(errors="replace").partition("\n")
    if status == 0 and kind == "OK":
        return rest
    if kind == "ENOSPC":
        raise OSError(28, "No space left on device", rest or None)
    if kind == "IGNITE":
        brief, _, hint = rest.partition("\n")
        raise IgniteError(brief, hint=hint or None)
    raise IgniteError(f"saving the VM failed: {rest.splitlines()[0] if rest else status}",
                      details=rest)


def _save(vmm: QemuVMM, d: Path, stage: Path, *, paused: bool, stop: bool) -> None:
    """Stop the CPUs, write the state and copy the disk layer, run on."""
    from ignitevm.providers.vmm.qemu import migration, qcow2

    with vmm.monitor(d) as mon, contextlib.ExitStack() as undo:
        if not paused:
            mon.cmd("stop")
            undo.callback(_resume, mon)  # whatever fails below, the source runs on
        fd = os.open(stage / STATE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            migration.save(mon, fd)
        except IgniteError as exc:
            if "space" in exc.brief.lower():
                raise OSError(28, "No space left on device", str(stage / STATE)) from None
            raise
        finally:
            os.close(fd)
        # The guest's disk is flushed and idle once the state is saved: its
        # layer now is the one that matches the RAM.
        _copy(d / DISK, stage / DISK)
        qcow2.check(stage / DISK)  # (the source's QEMU wrote it; now root reads it)
        if not paused and not stop:
            undo.pop_all()
            _resume(mon)


def _flatten(disk: Path, parent: Path, image: Path) -> None:
    """Make a clone's saved layer stand on the image alone: what its snapshot's
    layer held is merged into it. The chain is named by the host (never read
    from the layers' headers, which a jailed QEMU wrote)."""
    import json

    from ignitevm.providers.vmm.qemu import qcow2
    from ignitevm.util.proc import run

    def node(path: Path, fmt: str) -> dict[str, object]:
        return {"driver": fmt, "file": {"driver": "file", "filename": str(path)}}

    qcow2.check(disk)
    qcow2.check(parent)
    chain = {**node(disk, "qcow2"), "backing": {**node(parent, "qcow2"),
                                                "backing": node(image, "raw")}}
    run(["qemu-img", "rebase", "-q", "-b", str(image), "-F", "raw",
         "json:" + json.dumps(chain)])


def _resume(mon: Monitor) -> None:
    """Run the source's CPUs again. QEMU reports a migration completed a moment
    before it has finished with it, and refuses `cont` until then: retried as
    it answers (each refusal is one QMP round trip), for at most 10 s."""
    import time

    from ignitevm.providers.vmm.qemu.qmp import QMPError

    deadline = time.monotonic() + 10.0
    while True:
        try:
            mon.cmd("cont")
            return
        except QMPError as exc:
            if "not finalized" in exc.desc and time.monotonic() < deadline:
                continue
            log.warning("could not resume the VM after saving it: %s", exc)
            return
        except Exception as exc:  # (the source is left paused: say so)
            log.warning("could not resume the VM after saving it: %s", exc)
            return


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, open(dst, "xb") as fo:
        shutil.copyfileobj(fi, fo, 1 << 20)
        fo.flush()
    os.chmod(dst, 0o600)


def _record_files(snap: Snapshot, stage: Path, known: dict[str, str]) -> None:
    files, total = [], 0
    for name in (STATE, STATE_SHARED, DISK, MEMORY):
        path = stage / name
        if not path.exists():
            continue
        size = path.stat().st_size
        files.append(SnapshotFile(name=name, size=size,
                                  digest=known.get(name) or digest(path)))
        total += path.stat().st_blocks * 512
    snap.status.files = files
    snap.status.size = Size(total)
    snap.spec.shared_memory = (stage / MEMORY).exists()


def check_files(ctx: Context, snap: Snapshot, names: tuple[str, ...] = (STATE, DISK)) -> None:
    """Every file named is there with its recorded size and digest (hashed once,
    then again only when the file changed: see :func:`verified`)."""
    d = folder(ctx, snap)
    recorded = {f.name: f for f in snap.status.files}
    for name in names:
        rec = recorded.get(name)
        if rec is None:
            continue
        path = d / name
        bad = ""
        try:
            st = os.stat(path)
            if st.st_size != rec.size:
                bad = f"its size is {st.st_size}, not {rec.size}"
            elif verified(d, name, st, rec.digest):
                continue
            elif digest(path) != rec.digest:
                bad = "its digest does not match"
            else:
                mark_verified(d, name, st, rec.digest)
        except FileNotFoundError:
            bad = "it is missing"
        if bad:
            raise InvalidInput(f"snapshot {snap.metadata.name!r} is damaged: {name} changed "
                               f"({bad})", hint=f"remove it (ignite snapshot rm "
                               f"{snap.metadata.name}) and save the VM again")


# A file's digest is checked once, then again only when its inode, size, mtime
# or ctime change: the record ``.<name>.verified`` in the snapshot's folder
# (root's alone, so no one else can change a file there without its ctime
# moving). A file changed less than a second before it was checked is not
# recorded: timestamps move by clock ticks, and a change right after could
# keep them.
SETTLE_NS = 1_000_000_000


def _stamp(st: os.stat_result, want: str) -> str:
    return f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {want}"


def verified(d: Path, name: str, st: os.stat_result, want: str) -> bool:
    """Whether the file ``name`` (``st``) was found to have digest ``want`` as it is now."""
    try:
        return (d / f".{name}.verified").read_text() == _stamp(st, want)
    except OSError:
        return False


def mark_verified(d: Path, name: str, st: os.stat_result, want: str) -> None:
    """Record that ``name``, as ``st`` describes it, has digest ``want``."""
    import time

    from ignitevm.util.fs import atomic_write

    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < SETTLE_NS:
        return
    with contextlib.suppress(OSError):  # (a record not written: hashed again next time)
        atomic_write(d / f".{name}.verified", _stamp(st, want).encode())


def clones_of(ctx: Context, snap: Snapshot) -> list[VM]:
    return [vm for vm in ctx.store.list(VM)
            if source_snapshot(vm) == snap.metadata.uid]


def remove(ctx: Context, snap: Snapshot, *, force: bool = False) -> None:
    """Remove a snapshot; refused while clones' disks read through it, unless
    ``force`` (then they are removed too)."""
    from ignitevm.errors import NotFound
    from ignitevm.operations import vms
    from ignitevm.util.fs import flock

    try:
        with held(ctx, snap, exclusive=True):  # (no clone is being made meanwhile)
            users = clones_of(ctx, snap)
            if users and not force:
                raise Conflict(f"unable to remove, snapshot {snap.metadata.name!r} is in use "
                               f"by VM {users[0].metadata.name!r} (its disk reads through the "
                               "snapshot's)", hint="remove those VMs first, or use -f to "
                               "remove them too")
            for vm in users:
                vms.remove(ctx, vm, force=True)
            from ignitevm.operations import spares

            spares.remove_all(ctx, snap)
            sharedram.release(folder(ctx, snap))
            with flock(folder(ctx, snap) / ".lock"):  # (not while a template joins it)
                ctx.store.delete(snap)
    except (NotFound, FileNotFoundError):
        pass
    log.info("Removed snapshot %r (ID %s)", snap.metadata.name, snap.metadata.uid)


def users_of(ctx: Context, obj: Image | Kernel) -> list[Snapshot]:
    """Snapshots that need this image or kernel to restore."""
    out = []
    for snap in ctx.store.list(Snapshot):
        ref = snap.spec.vm_spec.image.oci if isinstance(obj, Image) \
            else snap.spec.vm_spec.kernel.oci
        if ref == obj.metadata.name:
            out.append(snap)
    return out


def disk_layers(ctx: Context, vm: VM, image_file: Path) -> tuple[Path, tuple[Path, ...]]:
    """What a VM's disk overlay reads through: the image, or for a clone its
    snapshot's disk layer and then the image."""
    uid = source_snapshot(vm)
    if not uid:
        return image_file, ()
    try:
        snap = ctx.store.get(Snapshot, uid)
    except IgniteError:
        raise InvalidInput(f"VM {vm.metadata.name!r} was cloned from snapshot {uid}, "
                           "which is gone", hint="remove the VM") from None
    return folder(ctx, snap) / DISK, (image_file,)
