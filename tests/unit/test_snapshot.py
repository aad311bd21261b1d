"""Snapshots without a guest: the object in the store, what a restore checks
and refuses, the QEMU arguments of a restore, the RESTORE request, and the
migration helpers against a scripted QMP peer (tests/vm/test_snapshot.py
drives real QEMU)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from ignitevm.api import codec
from ignitevm.api.types import (
    VM,
    Image,
    Kernel,
    ObjectMeta,
    OCISource,
    Size,
    Snapshot,
    SnapshotFile,
)
from ignitevm.errors import Conflict, InvalidInput
from ignitevm.operations import clones, snapshots
from ignitevm.operations.context import Context
from ignitevm.providers.network.base import NetPlan
from ignitevm.providers.vmm.base import Disk, LaunchSpec
from ignitevm.providers.vmm.qemu import args, migration, qmp


def _snapshot(ctx: Context, name: str = "snap", files: dict[str, bytes] | None = None,
              image: str = "img:latest", kernel: str = "k:latest") -> Snapshot:
    snap = Snapshot(metadata=ObjectMeta(name=name, uid=os.urandom(8).hex()))
    snap.spec.vm = "src"
    snap.spec.vm_spec.image.oci = image
    snap.spec.vm_spec.kernel.oci = kernel
    snap.spec.vm_spec.memory = Size(256 << 20)
    snap.spec.vm_spec.cpus = 1
    snap.spec.vm_spec.disk_size = Size(256 << 20)
    snap.spec.image = OCISource(id="sha256:aaa")
    snap.spec.kernel = OCISource(id="sha256:kkk")
    snap.spec.network_plugin = "user"
    snap.spec.nics = 1
    snap.spec.accel = "tcg"
    files = files if files is not None else {"state": b"S" * 100, "disk.qcow2": b"D" * 10}
    with ctx.store.creating(snap) as stage:
        for fname, data in files.items():
            (stage / fname).write_bytes(data)
        snapshots._record_files(snap, stage, {})
    return snap


def _base(ctx: Context, typ: type, name: str, oid: str) -> None:
    obj = typ(metadata=ObjectMeta(name=name, uid=os.urandom(8).hex()))
    obj.status.oci_source = OCISource(id=oid)
    with ctx.store.creating(obj):
        pass


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(root=tmp_path / "root")


def test_snapshot_object_round_trips_and_is_listed(ctx: Context) -> None:
    snap = _snapshot(ctx)
    again = ctx.store.resolve(Snapshot, "snap")
    assert again.kind == "Snapshot" and again.metadata.uid == snap.metadata.uid
    assert {f.name for f in again.status.files} == {"state", "disk.qcow2"}
    assert all(f.digest.startswith("sha256:") for f in again.status.files)
    text = codec.to_json(again)
    assert json.loads(text)["spec"]["vmSpec"]["memory"] == "256MB"
    with pytest.raises(Conflict, match="already exists"):
        _snapshot(ctx)
    snapshots.remove(ctx, again)
    assert ctx.store.list(Snapshot) == []


def test_damaged_files_are_refused(ctx: Context) -> None:
    snap = _snapshot(ctx)
    snapshots.check_files(ctx, snap)
    d = snapshots.folder(ctx, snap)
    (d / "disk.qcow2").write_bytes(b"X" * 10)  # same size, other bytes
    with pytest.raises(InvalidInput, match=r"is damaged: disk\.qcow2 changed"):
        snapshots.check_files(ctx, snap)
    with open(d / "state", "r+b") as f:
        f.truncate(50)
    with pytest.raises(InvalidInput, match="is damaged"):
        clones._checked_state(ctx, snap, shared=False)


def test_digests_are_checked_once_until_a_file_changes(ctx: Context, monkeypatch) -> None:
    """A clone does not hash the snapshot's files again while they are unchanged
    (they can be hundreds of MB), and still sees any change made since."""
    snap = _snapshot(ctx)
    d = snapshots.folder(ctx, snap)
    calls: list[Path] = []
    real = snapshots.digest
    monkeypatch.setattr(snapshots, "digest", lambda p: calls.append(p) or real(p))
    snapshots.check_files(ctx, snap)  # (just written: hashed, not recorded)
    assert len(calls) == 2 and not (d / ".disk.qcow2.verified").exists()
    monkeypatch.setattr(snapshots, "SETTLE_NS", 0)
    snapshots.check_files(ctx, snap)
    snapshots.check_files(ctx, snap)
    assert len(calls) == 4
    os.close(clones._checked_state(ctx, snap, shared=False))
    assert (d / ".state.verified").exists()
    for name, data in (("disk.qcow2", b"X" * 10), ("state", b"T" * 100)):
        st = os.stat(d / name)
        (d / name).write_bytes(data)  # same size, other bytes, a later time
        os.utime(d / name, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(InvalidInput, match=r"is damaged: disk\.qcow2 changed"):
        snapshots.check_files(ctx, snap, (snapshots.DISK,))
    with pytest.raises(InvalidInput, match="its state file does not match its digest"):
        clones._checked_state(ctx, snap, shared=False)


def test_memfd_fill_copies_data_and_skips_holes(tmp_path: Path) -> None:
    """The shared RAM's memfd holds the file's bytes; its holes are not read
    (the RAM file is mostly holes) and all-zero chunks are not written."""
    from ignitevm.operations import sharedram

    path = tmp_path / "memory"
    size = 8 << 20
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in ((4096, b"A" * 5000), (3 << 20, b"B" * 10), (size - 3, b"end")):
            f.seek(off)
            f.write(data)
    fd = os.memfd_create("test", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        sharedram.fill(fd, path)
        assert os.pread(fd, size, 0) == path.read_bytes()
        # (a chunk of zeros between the data is left unallocated)
        assert os.fstat(fd).st_blocks * 512 < size // 2
    finally:
        os.close(fd)


def test_checked_state_is_the_open_file(ctx: Context) -> None:
    snap = _snapshot(ctx)
    fd = clones._checked_state(ctx, snap, shared=False)
    try:
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0 and os.read(fd, 200) == b"S" * 100
    finally:
        os.close(fd)


def test_restore_refuses_removed_or_changed_image_and_kernel(ctx: Context,
                                                           monkeypatch) -> None:
    monkeypatch.setattr(snapshots, "qemu_version", lambda cache=None: "QEMU 7.2")
    snap = _snapshot(ctx)
    snap.spec.qemu_version = "QEMU 7.2"
    with pytest.raises(InvalidInput, match="its image 'img:latest' was removed"):
        clones.verify(ctx, snap)
    _base(ctx, Image, "img:latest", "sha256:aaa")
    with pytest.raises(InvalidInput, match="its kernel 'k:latest' was removed"):
        clones.verify(ctx, snap)
    _base(ctx, Kernel, "k:latest", "sha256:other")
    with pytest.raises(InvalidInput, match="is not the one it was saved with"):
        clones.verify(ctx, snap)
    ctx.store.delete(ctx.store.resolve(Kernel, "k:latest"))
    _base(ctx, Kernel, "k:latest", "sha256:kkk")
    clones.verify(ctx, snap)
    monkeypatch.setattr(snapshots, "qemu_version", lambda cache=None: "QEMU 8.0")
    with pytest.raises(InvalidInput, match=r"saved by .QEMU 7\.2."):
        clones.verify(ctx, snap)
    monkeypatch.setattr(snapshots, "qemu_version", lambda cache=None: "QEMU 7.2")
    snap.spec.machine = snapshots.machine_config("tcg", 1, 256, 1, 1)
    clones.verify(ctx, snap)
    snap.spec.machine = "-M pc"
    with pytest.raises(InvalidInput, match="another machine configuration"):
        clones.verify(ctx, snap)


@pytest.mark.parametrize("kw, word", [({"memory": "512MB"}, "--memory"), ({"cpus": 2}, "--cpus"),
                                      ({"plugin": "none"}, "--network-plugin none differs")])
def test_clone_refuses_other_memory_cpus_or_devices(ctx: Context, kw: dict, word: str) -> None:
    _snapshot(ctx)
    with pytest.raises(InvalidInput, match=word):
        clones.clone(ctx, "snap", **kw)
    assert ctx.store.list(VM) == []


def test_image_and_kernel_removal_refused_while_a_snapshot_needs_them(ctx: Context) -> None:
    from ignitevm.operations.vms import remove_base

    _snapshot(ctx)
    _base(ctx, Image, "img:latest", "sha256:aaa")
    image = ctx.store.resolve(Image, "img:latest")
    with pytest.raises(Conflict, match="needed by snapshot 'snap'"):
        remove_base(ctx, image)
    remove_base(ctx, image, force=True)
    assert ctx.store.find(Image, "img:latest") is None


def test_snapshot_rm_refused_while_clones_read_through_it(ctx: Context) -> None:
    snap = _snapshot(ctx)
    vm = VM(metadata=ObjectMeta(name="c1", uid=os.urandom(8).hex(),
                                annotations={snapshots.ANNOTATION: snap.metadata.uid}))
    with ctx.store.creating(vm):
        pass
    with pytest.raises(Conflict, match="in use by VM 'c1'"):
        snapshots.remove(ctx, snap)
    backing, chain = snapshots.disk_layers(ctx, vm, Path("/img.ext4"))
    assert backing == snapshots.folder(ctx, snap) / "disk.qcow2"
    assert chain == (Path("/img.ext4"),)
    snapshots.remove(ctx, snap, force=True)
    assert ctx.store.list(VM) == [] and ctx.store.list(Snapshot) == []


def test_restore_arguments() -> None:
    spec = LaunchSpec(uid="u", workdir=Path("/r/vm/u"), kernel=Path("/k"), initrd=None,
                      cmdline="console=ttyS0", cpus=1, memory_mib=256,
                      disks=(Disk(Path("/r/vm/u/disk.qcow2"), "ignite-root", "qcow2",
                                  backing=Path("/r/snapshot/s/disk.qcow2"),
                                  chain=(Path("/r/image/i/image.ext4"),)),),
                      accel="tcg", incoming=True, memory_file=Path("/r/snapshot/s/memory"),
                      agent_channels=3)
    argv = args.argv(spec, console_fd=9)
    drive = argv[argv.index("-drive") + 1]
    assert ("backing.driver=qcow2,backing.file.filename=/r/snapshot/s/disk.qcow2,"
            "backing.backing.driver=raw,backing.backing.file.filename=/r/image/i/image.ext4"
            ) in drive
    mem = argv[argv.index("-object") + 1]
    assert "mem-path=/r/snapshot/s/memory" in mem and "share=off" in mem
    assert f"id={args.RAM_ID}" in mem and f"memory-backend={args.RAM_ID}" in argv
    assert argv[argv.index("-incoming") + 1] == "defer"
    assert sum(1 for w in argv if w.startswith("virtserialport,")) == 3
    plain = args.argv(spec._replace(incoming=False, memory_file=None), console_fd=9)
    assert "-incoming" not in plain and "-object" not in plain


def test_identity_fields() -> None:
    vm = VM(metadata=ObjectMeta(name="c", uid="0123456789abcdef"))
    net = NetPlan(plugin="cni", mac="02:00:00:00:00:09", guest_ip="10.9.0.5/24",
                  gateway="10.9.0.1", dns="10.9.0.1 1.1.1.1", dns_search="lan",
                  more=(NetPlan(plugin="cni", mac="02:00:00:00:00:0a", guest_ip="10.8.0.5/24",
                                gateway="", dns=""),))
    a = dict(clones.identity_fields(vm, net))
    b = dict(clones.identity_fields(vm, net))
    assert a["hostname"] == "0123456789abcdef"
    assert len(a["rand"]) == 128 and a["rand"] != b["rand"]
    assert len(a["machine_id"]) == 32 and a["machine_id"] != b["machine_id"]
    assert a["gw"] == "10.9.0.1" and a["dns"] == "10.9.0.1 1.1.1.1" and a["search"] == "lan"
    assert clones.identity_fields(vm, net._replace(dns=""))[-2] == ("dns", "")  # (none: said)
    nets = [v for k, v in clones.identity_fields(vm, net) if k == "net"]
    assert nets == ["eth0 02:00:00:00:00:09 10.9.0.5/24", "eth1 02:00:00:00:00:0a 10.8.0.5/24"]
    assert "net" not in dict(clones.identity_fields(vm, None))
    with pytest.raises(InvalidInput, match="control character"):
        clones.identity_fields(vm, net._replace(dns="1.1.1.1\nhostname=evil"))



def test_ssh_restore_fields(tmp_path: Path) -> None:
    """A clone with --ssh is sent its host key pair and authorized_keys (each
    file's bytes in hex: one line each); one without --ssh its host key pair
    (an image's own sshd gets the VM's key from init, --ssh or not)."""
    import shutil

    from ignitevm.operations import sshkeys

    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    vm = VM(metadata=ObjectMeta(name="c", uid="0123456789abcdef"))
    vm.spec.ssh = True
    with sshkeys.making_keys(vm, tmp_path):
        pass
    fields = sshkeys.restore_fields(vm, tmp_path)
    got = {k: bytes.fromhex(v) for k, v in fields}
    assert [k for k, _ in fields] == ["ssh_host_key", "ssh_host_key_pub", "ssh_authorized_keys"]
    assert got["ssh_host_key"] == (tmp_path / sshkeys.HOST_KEY).read_bytes()
    assert got["ssh_host_key"].startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert got["ssh_host_key_pub"] == (tmp_path / f"{sshkeys.HOST_KEY}.pub").read_bytes()
    client_pub = sshkeys.client_key(tmp_path, vm.metadata.uid).with_suffix(".pub")
    assert got["ssh_authorized_keys"] == client_pub.read_bytes()
    payload = "".join(f"{k}={v}\n" for k, v in fields)
    assert payload.count("\n") == 3
    # --ssh=PATH: the key the user named is root's authorized key.
    vm.spec.ssh = str(client_pub)
    assert dict(sshkeys.restore_fields(vm, tmp_path))["ssh_authorized_keys"] == \
        (client_pub.read_text().strip() + "\n").encode().hex()
    vm.spec.ssh = None
    assert [k for k, _ in sshkeys.restore_fields(vm, tmp_path)] == ["ssh_host_key",
                                                                    "ssh_host_key_pub"]
    # A clone whose key is missing is not sent the snapshot's, silently: it fails.
    (tmp_path / sshkeys.HOST_KEY).unlink()
    from ignitevm.errors import IgniteError

    with pytest.raises(IgniteError, match="no SSH host key"):
        sshkeys.restore_fields(vm, tmp_path)


class _Channel:
    def __init__(self, info: dict[str, str]):
        self.info = info

    def __enter__(self) -> _Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize("ready,ssh,outcome", [
    ({"restore": "3"}, True, "sent"), ({"restore": "2"}, True, "refused"),
    ({}, True, "refused"), ({"restore": "x"}, True, "refused"),
    ({"restore": "2"}, False, "old"), ({}, False, "old"), ({"restore": "3"}, False, "sent")])
def test_an_ssh_clone_needs_an_agent_that_takes_its_keys(
        ctx: Context, tmp_path: Path, monkeypatch, ready: dict, ssh: bool, outcome: str) -> None:
    """An agent older than the ssh_* lines would ignore them and leave the
    clone serving its snapshot's host key: such a clone fails, saying why (it
    is then removed), before RESTORE is sent. Without --ssh the host key goes to
    an agent that takes it, and an older one is sent nothing of it."""
    from ignitevm.agent import client, session
    from ignitevm.errors import IgniteError

    sent: list[list[tuple[str, str]]] = []
    monkeypatch.setattr(client.Channel, "connect",
                        classmethod(lambda cls, *a, **kw: _Channel(ready)))
    monkeypatch.setattr(session, "restore",
                        lambda ch, fields, timeout: (sent.append(fields), (0, []))[1])
    monkeypatch.setattr("ignitevm.operations.sshkeys.restore_fields",
                        lambda vm, d: [("ssh_host_key", "61")])
    vm = VM(metadata=ObjectMeta(name="c", uid="0123456789abcdef"))
    vm.spec.ssh = ssh
    if outcome == "refused":
        with pytest.raises(IgniteError, match="cannot give a clone its own SSH host key"):
            clones.renew_identity(ctx, vm, tmp_path, None)
        assert sent == []
        return
    assert clones.renew_identity(ctx, vm, tmp_path, None) == []
    (fields,) = sent
    assert ("ssh_host_key", "61") in fields if outcome == "sent" \
        else "ssh_host_key" not in dict(fields)


def _qmp_peer(tmp_path: Path, script) -> str:
    path = tmp_path / "qmp.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
            buf = b""
            while True:
                msg, fds, _flags, _addr = socket.recv_fds(conn, 65536, 4)
                for fd in fds:
                    os.close(fd)
                if not msg:
                    return
                buf += msg
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    cmd = json.loads(line)["execute"]
                    conn.sendall(script(cmd, bool(fds)))
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return str(path)


def test_save_passes_the_fd_and_waits_for_completion(tmp_path: Path) -> None:
    got_fd = []

    def script(cmd: str, with_fd: bool) -> bytes:
        if cmd == "getfd":
            got_fd.append(with_fd)
        if cmd == "migrate":
            return (b'{"return": {}}\r\n{"event": "MIGRATION", "data": {"status": "active"}}\r\n'
                    b'{"event": "MIGRATION", "data": {"status": "completed"}}\r\n')
        return b'{"return": {}}\r\n'

    mon = qmp.connect(_qmp_peer(tmp_path, script), 5)
    r, w = os.pipe()
    try:
        migration.save(mon, w, timeout=5)
    finally:
        mon.close()
        os.close(r)
        os.close(w)
    assert got_fd == [True]


def test_a_failed_load_is_one_error(tmp_path: Path) -> None:
    from ignitevm.errors import IgniteError

    def script(cmd: str, with_fd: bool) -> bytes:
        if cmd == "migrate-incoming":
            return b'{"return": {}}\r\n{"event": "MIGRATION", "data": {"status": "failed"}}\r\n'
        if cmd == "query-migrate":
            return b'{"return": {"status": "failed", "error-desc": "load of migration failed"}}\r\n'
        return b'{"return": {}}\r\n'

    mon = qmp.connect(_qmp_peer(tmp_path, script), 5)
    r, w = os.pipe()
    try:
        with pytest.raises(IgniteError, match="load of migration failed"):
            migration.load(mon, r, timeout=5)
    finally:
        mon.close()
        os.close(r)
        os.close(w)


def test_snapshot_commands_parse() -> None:
    from ignitevm.cli.parser import build_parser, normalize

    argv = normalize(["snapshot", "create", "web", "web-booted", "--stop"])
    ns = build_parser(argv).parse_args(argv)
    assert (ns.vm, ns.name, ns.stop) == ("web", "web-booted", True)
    argv = normalize(["run", "--from-snapshot", "web-booted", "--name", "w2", "-p", "8081:80"])
    ns = build_parser(argv).parse_args(argv)
    assert ns.from_snapshot == "web-booted" and ns.name == "w2" and ns.ports == ["8081:80"]


def test_a_clone_honours_require_name() -> None:
    from ignitevm.cli.parser import build_parser, normalize
    from ignitevm.cli.snapshot import run_clone
    from ignitevm.errors import InvalidInput

    argv = normalize(["run", "--from-snapshot", "web-booted", "--require-name"])
    with pytest.raises(InvalidInput, match="--require-name"):
        run_clone(build_parser(argv).parse_args(argv))


@pytest.mark.parametrize("flag", [
    ["--network", "lab"], ["--dns", "10.0.0.1"], ["--dns-search", "lab"],
    ["--id-prefix", "x"], ["--pull", "always"], ["--runtime", "containerd"],
    ["--containerd-namespace", "k8s.io"], ["--registry-config-dir", "/tmp"],
    ["--insecure-registry", "r.example:5000"], ["--sandbox-image", "x"],
    ["--ip", "10.61.0.9"], ["--size", "1GB"], ["--kernel-args", "quiet"]])
def test_a_clone_refuses_what_it_cannot_honour(flag: list[str]) -> None:
    """Every `run` flag a clone cannot apply is refused before anything is made, never
    silently dropped."""
    from ignitevm.cli.parser import build_parser, normalize
    from ignitevm.cli.snapshot import run_clone
    from ignitevm.errors import InvalidInput

    argv = normalize(["run", "--from-snapshot", "web-booted", *flag])
    with pytest.raises(InvalidInput, match=f"^{flag[0]} cannot be used with --from-snapshot"):
        run_clone(build_parser(argv).parse_args(argv))


def test_snapshot_files_record(tmp_path: Path) -> None:
    (tmp_path / "state").write_bytes(b"abc")
    snap = Snapshot()
    snapshots._record_files(snap, tmp_path, {})
    assert snap.status.files == [SnapshotFile(
        name="state", size=3,
        digest="sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")]
    assert snap.spec.shared_memory is False


def test_detached_work_reports_result_and_errors() -> None:
    """The save runs in a child of its own session; what it returns or raises
    comes back to the CLI (a full disk as the store's own no-space error)."""
    from ignitevm.errors import IgniteError

    assert snapshots._detached(lambda: "sha256:x") == "sha256:x"
    assert snapshots._detached(lambda: str(os.getsid(0))) != str(os.getsid(0))

    def full() -> str:
        raise OSError(28, "No space left on device", "/r/tmp/x/state")

    with pytest.raises(OSError) as err:
        snapshots._detached(full)
    assert err.value.errno == 28 and err.value.filename == "/r/tmp/x/state"

    def refused() -> str:
        raise InvalidInput("QEMU could not save the VM's state: boom", hint="try again")

    with pytest.raises(IgniteError, match="boom") as err2:
        snapshots._detached(refused)
    assert err2.value.hint == "try again"


def test_a_full_disk_while_saving_is_the_stores_error(ctx: Context) -> None:
    """ENOSPC from the save inside the staging block: one `no space left` error,
    and no snapshot listed."""
    from ignitevm.errors import IgniteError

    snap = Snapshot(metadata=ObjectMeta(name="full", uid=os.urandom(8).hex()))
    def full() -> str:
        raise OSError(28, "No space left on device", "state")

    with pytest.raises(IgniteError, match="no space left on the file system"), \
            ctx.store.creating(snap):
        snapshots._detached(full)
    assert ctx.store.list(Snapshot) == []
    assert not [p for p in (ctx.root / "tmp").iterdir() if p.is_dir()]


def test_template_ram_sweep_spares_templates_in_the_making(ctx: Context, tmp_path: Path,
                                                           monkeypatch) -> None:
    """A second `snapshot create` sweeps what killed builders left, not the RAM
    file of a template another process is still making (its -tpl lock)."""
    from ignitevm.operations import snaptemplate
    from ignitevm.util.fs import flock

    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(snaptemplate, "SHM_DIR", str(shm))
    ctx.store.ensure()
    key = snaptemplate._root_key(ctx)
    live, dead = shm / f"ignite-{key}-aaaa.ram", shm / f"ignite-{key}-bbbb.ram"
    other_root = shm / "ignite-000000000000-cccc.ram"
    for f in (live, dead, other_root):
        f.write_bytes(b"x")
    with flock(ctx.root / "tmp" / "aaaa-tpl.lock"):
        snaptemplate.sweep(ctx)
        assert live.exists() and not dead.exists() and other_root.exists()
    snaptemplate.sweep(ctx)
    assert not live.exists() and other_root.exists()


def test_shared_ram_memfd_is_taken_only_if_it_is_the_hosts_sealed_one(tmp_path: Path) -> None:
    """A compromised clone QEMU may put any file at the number the host
    recorded; the next clone's host takes only the inode it made itself, sealed."""
    import fcntl

    from ignitevm.operations import sharedram

    fd = os.memfd_create("t", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    fake = os.memfd_create("t", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        for f in (fd, fake):
            os.ftruncate(f, 8192)
        st = os.fstat(fd)
        record = f"{st.st_dev} {st.st_ino}"
        assert not sharedram._is_ours(fd, record, 8192)  # not sealed yet
        for f in (fd, fake):
            fcntl.fcntl(f, fcntl.F_ADD_SEALS, sharedram.SEALS)
        assert sharedram._is_ours(fd, record, 8192)
        assert not sharedram._is_ours(fd, record, 4096)
        assert not sharedram._is_ours(fake, record, 8192)  # sealed, but another inode
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"x", 0)
    finally:
        os.close(fd)
        os.close(fake)


def test_jail_plan_for_a_memfd_gives_its_own_proc(tmp_path: Path) -> None:
    from ignitevm.providers.sandbox.jail import Identity, Plan

    plan = Plan(Identity(5, 5, ()), [], [], [], [], True, tmp_path, own_proc=True)
    assert "-p" in plan.argv(Path("/helper"))
    assert "-p" not in plan._replace(own_proc=False).argv(Path("/helper"))


def _whole_memfd(ctx: Context, snap: Snapshot) -> int:
    """The memfd of ``snap``'s RAM as a clone's QEMU gets it, once whole and
    sealed (sharedram.start, then wait); closed again if that fails."""
    from ignitevm.operations import sharedram

    filling = sharedram.start(ctx, snap)
    try:
        filling.wait()
    except BaseException:
        filling.close()
        raise
    return filling.fd


def test_a_clone_cannot_block_the_next_ones_memfd_lookup(ctx: Context, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A compromised clone QEMU puts a FIFO with no writer at the number the
    host recorded for its memfd: opening it would block the next clone (and,
    through the held lock, every later one) for good. It is passed over and a
    new memfd made. (The running clone's QEMU is stood in for by a process
    holding the FIFO: its pid is what the VMM's pid lookup gives.)"""
    import subprocess
    import sys
    import threading

    from ignitevm.api.types import VM
    from ignitevm.operations import sharedram

    snap = _snapshot(ctx, files={"state": b"S" * 100, "disk.qcow2": b"D" * 10,
                                 sharedram.MEMORY: b"M" * 8192})
    d = snapshots.folder(ctx, snap)
    (d / sharedram.MEMFD_RECORD).write_text("1 2\n")
    vm = VM(metadata=ObjectMeta(name="clone", uid=os.urandom(8).hex(),
                                annotations={snapshots.ANNOTATION: snap.metadata.uid}))
    with ctx.store.creating(vm):
        pass
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    holder = subprocess.Popen([sys.executable, "-c", "import os, sys, time\n"
                               f"fd = os.open({str(fifo)!r}, os.O_RDONLY | os.O_NONBLOCK)\n"
                               "os.dup2(fd, 9)\nprint(9, flush=True)\ntime.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "9"
        (ctx.store.dir(vm) / sharedram.CLONE_FD).write_text("9")
        monkeypatch.setattr(type(ctx.vmm), "pid", lambda self, d: holder.pid)
        got: list[int] = []
        worker = threading.Thread(target=lambda: got.append(_whole_memfd(ctx, snap)),
                                  daemon=True)
        worker.start()
        worker.join(120)  # (a hang detector, not a timing limit)
        assert not worker.is_alive(), "the memfd lookup blocked on the clone's FIFO"
        assert got and os.fstat(got[0]).st_size == 8192
        os.close(got[0])
    finally:
        holder.kill()
        holder.wait()


def test_snapshot_rm_waits_for_a_clone_being_made(ctx: Context) -> None:
    """`snapshot rm` while `run --from-snapshot` makes a clone: the removal
    waits for the clone to exist, then sees it and refuses (before, it listed
    no clone, and deleted the snapshot under the new clone's disk)."""
    import threading

    from ignitevm.api.types import VM

    snap = _snapshot(ctx)
    errors: list[BaseException] = []

    def rm() -> None:
        try:
            snapshots.remove(ctx, snap)
        except BaseException as exc:  # (reported below)
            errors.append(exc)

    with snapshots.held(ctx, snap):  # as clones.clone holds it
        worker = threading.Thread(target=rm, daemon=True)
        worker.start()
        worker.join(0.5)
        assert worker.is_alive(), "snapshot rm did not wait for the clone being made"
        vm = VM(metadata=ObjectMeta(name="clone", uid=os.urandom(8).hex(),
                                    annotations={snapshots.ANNOTATION: snap.metadata.uid}))
        with ctx.store.creating(vm):
            pass
    worker.join(120)  # (a hang detector, not a timing limit)
    assert not worker.is_alive()
    assert errors and isinstance(errors[0], Conflict)
    assert ctx.store.find(Snapshot, "snap") is not None
    with pytest.raises(Exception, match="removed meanwhile"):
        snapshots.remove(ctx, snap, force=True)
        with snapshots.held(ctx, snap):
            pass


@pytest.mark.parametrize("state", ["io-error", "internal-error", "guest-panicked", "shutdown"])
def test_a_vm_qemu_stopped_on_an_error_is_not_saved(ctx: Context, monkeypatch,
                                                    state: str) -> None:
    """A VM whose QEMU stopped it on an error (or a panic) is refused, saying what QEMU
    reports, and nothing is made. (QEMU's report is stood in for: a real QEMU cannot be
    brought to each of these states on demand here; the VM tests cover running VMs.)"""
    from ignitevm.api.types import VM
    from ignitevm.operations import vms
    from ignitevm.providers.vmm.qemu.machine import QemuVMM

    vm = VM(metadata=ObjectMeta(name="sick", uid=os.urandom(8).hex()))
    d = ctx.store.dir(vm)
    d.mkdir(parents=True)
    ctx.store.save(vm)
    monkeypatch.setattr(vms, "_running", lambda ctx, vm: (vm, d))
    monkeypatch.setattr(QemuVMM, "run_state", lambda self, workdir: state)
    with pytest.raises(Conflict, match=rf"cannot be saved: QEMU reports it '{state}'"):
        snapshots.create(ctx, vm, "sick-snap")
    assert ctx.store.list(Snapshot) == []
    assert not (ctx.root / "tmp").is_dir() or not [
        p for p in (ctx.root / "tmp").iterdir() if p.is_dir()]


def test_background_work_says_its_error_where_it_is_waited_for() -> None:
    from ignitevm.util.background import Background

    done: list[int] = []
    Background(lambda: done.append(1)).wait()
    assert done == [1]

    def fail() -> None:
        raise OSError(28, "No space left on device")

    work = Background(fail)
    with pytest.raises(OSError, match="No space left"):
        work.wait()
    with pytest.raises(OSError):  # (said again to a second waiter)
        work.wait()
    work.settle()  # (a caller with its own error to say: nothing raised)


def test_a_new_memfd_is_given_at_once_and_sealed_before_it_is_waited_for(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """A jailed clone's memfd is filled by a thread while the clone is made and
    its QEMU starts: the descriptor comes at once (its size set), the
    snapshot's memfd lock stays taken until the memfd is whole, sealed and
    recorded, and wait() returns only then."""
    import fcntl
    import threading

    from ignitevm.operations import sharedram
    from ignitevm.util.files import lock

    ram = b"R" * 4096 + bytes(8192) + b"M" * 4096
    snap = _snapshot(ctx, files={"state": b"S" * 100, "disk.qcow2": b"D" * 10,
                                 sharedram.MEMORY: ram})
    d = snapshots.folder(ctx, snap)
    release = threading.Event()
    real_fill = sharedram.fill

    def slow_fill(fd: int, path: Path) -> None:
        assert release.wait(60)  # (a hang detector, not a timing limit)
        real_fill(fd, path)

    monkeypatch.setattr(sharedram, "fill", slow_fill)
    filling = sharedram.start(ctx, snap)
    try:
        assert os.fstat(filling.fd).st_size == len(ram)
        assert fcntl.fcntl(filling.fd, fcntl.F_GET_SEALS) & sharedram.SEALS == 0
        with pytest.raises(BlockingIOError):  # (another clone's host waits)
            os.close(lock(d / ".memfd.lock", blocking=False))
        assert not (d / sharedram.MEMFD_RECORD).exists()
        release.set()
        filling.wait()
        assert fcntl.fcntl(filling.fd, fcntl.F_GET_SEALS) & sharedram.SEALS == sharedram.SEALS
        assert os.pread(filling.fd, len(ram), 0) == ram
        st = os.fstat(filling.fd)
        assert (d / sharedram.MEMFD_RECORD).read_text() == f"{st.st_dev} {st.st_ino}\n"
        os.close(lock(d / ".memfd.lock", blocking=False))  # (free again)
    finally:
        release.set()
        filling.close()
    assert filling.fd == -1


def test_a_memfd_that_cannot_be_filled_is_said_and_frees_the_lock(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    from ignitevm.operations import sharedram
    from ignitevm.util.files import lock

    snap = _snapshot(ctx, files={"state": b"S" * 100, "disk.qcow2": b"D" * 10,
                                 sharedram.MEMORY: b"M" * 8192})

    def full(fd: int, path: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sharedram, "fill", full)
    with pytest.raises(OSError, match="No space left"):
        _whole_memfd(ctx, snap)
    d = snapshots.folder(ctx, snap)
    os.close(lock(d / ".memfd.lock", blocking=False))
    assert not (d / sharedram.MEMFD_RECORD).exists()


def test_background_work_outlives_an_interrupted_wait_and_settle_waits_for_it() -> None:
    """Ctrl-C while a command waits for its background work: wait() says the
    interrupt at once (the thread runs on); settle() returns only once the
    thread has ended, whatever interrupts come meanwhile, so that nothing the
    work holds (a descriptor, a folder) is undone under it."""
    import signal

    from ignitevm.util.background import Background

    release = threading.Event()
    ended: list[bool] = []

    def work() -> None:
        assert release.wait(60)  # (a hang detector, not a timing limit)
        ended.append(True)

    def interrupt_soon(then_release: bool) -> None:
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)
        if then_release:
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGINT)  # (a second one, during settle)
            time.sleep(0.2)
            release.set()

    # (Ctrl-C as a terminal sends it: a shell's background job, CI's runner,
    # may have started this process with SIGINT ignored)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        job = Background(work)
        threading.Thread(target=interrupt_soon, args=(False,), daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            job.wait()
        assert not ended
        threading.Thread(target=interrupt_soon, args=(True,), daemon=True).start()
        job.settle()
        assert ended == [True]
        job.wait()
    finally:
        release.set()
        signal.signal(signal.SIGINT, old)


def test_a_snapshot_saved_with_the_earlier_tcg_cpu_still_restores() -> None:
    """A TCG snapshot's machine configuration from before args.TCG_CPU (``-cpu
    max``) matches today's; anything else that differs does not."""
    from ignitevm.providers.vmm.qemu import args as qemu_args

    now = snapshots.machine_config("tcg", 1, 256, 1, 1)
    assert f" -cpu {qemu_args.TCG_CPU} " in now
    earlier = now.replace(f" -cpu {qemu_args.TCG_CPU} ", " -cpu max ")
    assert snapshots.same_machine(earlier, now)
    assert snapshots.same_machine(now, now)
    assert not snapshots.same_machine(earlier.replace("-m 256M", "-m 512M"), now)
    assert not snapshots.same_machine(now, snapshots.machine_config("kvm", 1, 256, 1, 1))


def test_a_restore_maps_the_shared_ram_privately_without_touching_it(tmp_path: Path) -> None:
    """A jailed clone's QEMU gets its RAM memfd before it is filled and sealed
    (sharedram.Filling): it may map it privately, never prealloc, lock or
    share it (any of those would touch pages before the host has filled them)."""
    spec = LaunchSpec(uid="u", workdir=tmp_path, kernel=Path("/k"), initrd=None, cmdline="c",
                      cpus=1, memory_mib=256, disks=(), accel="tcg",
                      memory_file=Path("/proc/self/fd/7"), incoming=True, memory_shared=False)
    words = " ".join(args.memory(spec))
    assert "share=off" in words and "-incoming defer" in words
    for word in ("prealloc", "share=on", "mem-lock", "populate"):
        assert word not in words
    argv = " ".join(args.argv(spec, console_fd=9))
    assert "mem-lock" not in argv and "-overcommit" not in argv


def test_the_tcg_probe_runs_the_vms_cpu_model() -> None:
    from ignitevm.providers.vmm.qemu import accel
    from ignitevm.providers.vmm.qemu import args as qemu_args

    argv = accel.probe_argv(Path("/k"), None, accel="tcg")
    assert argv[argv.index("-cpu") + 1] == qemu_args.TCG_CPU
    argv = accel.probe_argv(Path("/k"), None, accel="kvm")
    assert argv[argv.index("-cpu") + 1] == "host"


def test_waiting_for_a_ram_template_leaves_no_lock_file(ctx: Context, tmp_path: Path) -> None:
    """A clone started while its snapshot's RAM template is being made waits
    for the builder (which removes its lock file as it ends); the wait never
    makes that file again (it was left in the root's tmp/ for good)."""
    import subprocess
    import sys

    from ignitevm.operations import snaptemplate

    uid = "0123456789abcdef"
    tmp = ctx.root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"{uid}-tpl.lock"
    assert not snaptemplate.wait(ctx, uid)  # (no builder)
    assert not path.exists()
    path.touch()
    assert not snaptemplate.wait(ctx, uid)  # (a file nobody holds)
    path.unlink()
    builder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\n"
         f"time.sleep(0.3)\nos.unlink({str(path)!r})\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert builder.stdout is not None and builder.stdout.readline().strip() == "held"
        assert snaptemplate.wait(ctx, uid, timeout=60)
    finally:
        builder.wait()
    assert not path.exists()
    assert list(tmp.iterdir()) == []
