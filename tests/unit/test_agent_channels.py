"""Agent channels on the host side: hot-plugging one (the order of its QMP
commands and of its socket's naming), and who may serve a channel's socket."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ignitevm.providers.vmm.qemu import args
from ignitevm.providers.vmm.qemu.machine import QemuVMM
from ignitevm.providers.vmm.qemu.qmp import QMPError


class FakeMonitor:
    """QMP as far as adding a channel goes; notes whether the channel's socket
    has its name at each command."""

    def __init__(self, path: Path, ports: tuple[str, ...] = (), fail: str = ""):
        self.path, self.ports, self.fail = path, set(ports), fail
        self.log: list[tuple[str, bool]] = []

    def cmd(self, command: str, **kw: object) -> object:
        name = command
        self.log.append((name, self.path.exists()))
        if name == self.fail:
            raise QMPError(name, "GenericError", "failed")
        if name == "device_add":
            self.ports.add(str(kw["id"]))
        if name == "qom-list":
            return [{"name": n} for n in self.ports]
        return {}


@pytest.fixture
def vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / args.RUN_DIR).mkdir()
    args.agent_socket(tmp_path, 1).touch()      # (the boot channel: only its name counts)
    monkeypatch.setattr(QemuVMM, "pid", lambda self, workdir: 1)
    return tmp_path


def _use(monkeypatch: pytest.MonkeyPatch, mon: FakeMonitor) -> None:
    @contextlib.contextmanager
    def monitor(self: QemuVMM, workdir: Path) -> Iterator[FakeMonitor]:
        yield mon

    monkeypatch.setattr(QemuVMM, "monitor", monitor)


def test_a_hot_plugged_channel_is_named_only_once_its_port_is_there(
        vm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = args.agent_socket(vm, 2)
    mon = FakeMonitor(path)
    _use(monkeypatch, mon)
    assert QemuVMM().add_agent_channel(vm) == path
    assert [name for name, _ in mon.log] == ["getfd", "chardev-add", "device_add"]
    assert not any(named for _, named in mon.log)   # no client could find it before
    assert stat.S_ISSOCK(path.lstat().st_mode)
    assert not path.with_name(path.name + ".new").exists()


def test_a_port_that_cannot_be_added_leaves_no_socket(vm: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = args.agent_socket(vm, 2)
    mon = FakeMonitor(path, fail="device_add")
    _use(monkeypatch, mon)
    with pytest.raises(QMPError):
        QemuVMM().add_agent_channel(vm)
    assert mon.log[-1][0] == "chardev-remove"
    assert sorted(p.name for p in (vm / args.RUN_DIR).iterdir()) == ["agent-1.sock"]


@pytest.mark.parametrize("port", [True, False], ids=["port-added", "no-port"])
def test_a_channel_a_dead_client_left_unnamed_is_finished(
        vm: Path, monkeypatch: pytest.MonkeyPatch, port: bool) -> None:
    """Killed after device_add: its socket is named now; killed before: its
    chardev goes and the channel is added again."""
    path = args.agent_socket(vm, 2)
    new = path.with_name(path.name + ".new")
    with socket.socket(socket.AF_UNIX) as left:
        left.bind(str(new))
        mon = FakeMonitor(path, ports=("agentport2",) if port else ())
        _use(monkeypatch, mon)
        assert QemuVMM().add_agent_channel(vm) == path
    names = [name for name, _ in mon.log]
    if port:
        assert names == ["qom-list"]
    else:
        assert names == ["qom-list", "chardev-remove", "getfd", "chardev-add", "device_add"]
    assert stat.S_ISSOCK(path.lstat().st_mode) and not new.exists()
    os.unlink(path)


class _Ports:
    """A VM's channels as the host's clients see them (operations/vms.py:
    AgentPorts, without a Context)."""

    def __init__(self, workdir: Path):
        self.workdir, self.vmm = workdir, QemuVMM()

    def sockets(self) -> list[Path]:
        return self.vmm.agent_sockets(self.workdir)

    def grow(self) -> Path | None:
        return self.vmm.add_agent_channel(self.workdir)

    def pending(self) -> Path | None:
        return self.vmm.pending_agent_channel(self.workdir)

    def repair(self, path: Path) -> None:
        self.vmm.repair_agent_channel(self.workdir, path)


@pytest.mark.parametrize("port", [True, False], ids=["port-added", "no-port"])
def test_the_repair_finishes_a_channel_left_unnamed(
        vm: Path, monkeypatch: pytest.MonkeyPatch, port: bool) -> None:
    """A client killed between device_add and the naming of its socket: the
    next client's repair names it (the VM has the port: its socket must be
    found, and counted); killed before device_add: its chardev and socket go."""
    import time

    from ignitevm.agent.client import GROW_MARK, _repair

    path = args.agent_socket(vm, 2)
    new = path.with_name(path.name + ".new")
    (vm / GROW_MARK).write_text("1\n")
    with socket.socket(socket.AF_UNIX) as left:
        left.bind(str(new))
        mon = FakeMonitor(path, ports=("agentport1", "agentport2") if port else ("agentport1",))
        _use(monkeypatch, mon)
        _repair(_Ports(vm), path.parent, vm, time.monotonic() + 30)
    names = [name for name, _ in mon.log]
    assert not new.exists() and not (vm / GROW_MARK).exists()
    if port:
        assert names == ["qom-list"]
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert QemuVMM().agent_sockets(vm) == [args.agent_socket(vm, 1), path]
        os.unlink(path)
    else:
        assert names == ["qom-list", "chardev-remove", "closefd"]
        assert not path.exists()
        assert QemuVMM().agent_sockets(vm) == [args.agent_socket(vm, 1)]


def test_a_snapshot_counts_the_ports_qemu_has(vm: Path, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """The port count a snapshot records is QEMU's: a socket still named
    ``.new`` (its client killed after device_add) has its port in the saved
    state, and a clone restored with one port fewer would not load."""
    from ignitevm.api.types import VM
    from ignitevm.operations import snapshots
    from ignitevm.operations.context import Context

    path = args.agent_socket(vm, 2)
    path.with_name(path.name + ".new").touch()
    mon = FakeMonitor(path, ports=("agentport1", "agentport2", "netdev0"))
    _use(monkeypatch, mon)
    assert QemuVMM().agent_ports(vm) == 2
    ctx = Context(root=tmp_path / "root")
    snap = snapshots.Snapshot()
    snapshots._describe(ctx, snap, VM(), vm)
    assert snap.spec.agent_channels == 2


def test_a_stopped_vms_unnamed_channel_socket_is_cleaned_up(vm: Path) -> None:
    path = args.agent_socket(vm, 2)
    path.with_name(path.name + ".new").touch()
    QemuVMM().cleanup(vm)
    assert list((vm / args.RUN_DIR).iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="a process of another uid is needed: run as root")
@pytest.mark.parametrize("side", ["vmm", "fast"])
def test_a_socket_is_accepted_from_the_vms_qemu_or_from_the_host_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: str) -> None:
    """SO_PEERCRED names whoever called listen() last: QEMU >= 6.1 listens again
    on the socket the host hands it; an older one leaves the host's name there.
    The host's own socket counts only in a folder no one else may write. (QemuVMM,
    and exec's fast path: the same checks, providers/vmm/qemu/running.py.)"""
    import subprocess

    from ignitevm.cli import fastexec
    from ignitevm.providers.vmm.qemu import running

    def connect(folder: Path, path: Path) -> None:
        if side == "vmm":
            QemuVMM().connect_socket(folder, path).close()
        else:
            fastexec._Ports(str(folder)).connect(str(path)).close()

    qemu = subprocess.Popen(["sleep", "300"], user=65534, group=65534)
    try:
        monkeypatch.setattr(QemuVMM, "pid", lambda self, workdir: qemu.pid)
        monkeypatch.setattr(running, "pid", lambda workdir, check=None: qemu.pid)
        folder = tmp_path / "run"
        folder.mkdir(mode=0o700)
        path = folder / "agent-1.sock"
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
            server.listen(8)
            connect(tmp_path, path)     # (QEMU < 6.1, jailed)
            folder.chmod(0o777)
            with pytest.raises(PermissionError, match="served by uid 0, not by the VM's QEMU"):
                connect(tmp_path, path)
            pid = os.fork()
            if pid == 0:  # (QEMU >= 6.1: listen() again, as the VM's uid)
                try:
                    os.setgid(65534)
                    os.setuid(65534)
                    server.listen(8)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            connect(tmp_path, path)
    finally:
        qemu.kill()
        qemu.wait()
