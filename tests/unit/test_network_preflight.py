"""Host ports refused before a VM is made (create) and before anything starts
(start), for every network plugin: a port a process on the host holds, an
address the host does not have, a port mapped with no network at all. Real
sockets: the test takes a port to make it busy."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ignitevm.api.types import VM, ObjectMeta, PortMapping
from ignitevm.errors import Conflict, InvalidInput
from ignitevm.providers import network
from tests.conftest import REPO

FOREIGN = "10.9.9.9"  # (checked below not to be one of this host's addresses)


def _vm(plugin: str, *ports: PortMapping, ssh: bool = False) -> VM:
    vm = VM(metadata=ObjectMeta(name="web", uid="0123456789abcdef"))
    vm.spec.network.ports = list(ports)
    vm.spec.ssh = ssh or None
    vm.status.network.plugin = plugin
    return vm


@pytest.fixture
def taken() -> Iterator[int]:
    """A TCP port some process on the host listens on (this test)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.fixture
def foreign() -> str:
    with socket.socket() as s:
        try:
            s.bind((FOREIGN, 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return FOREIGN
            raise
    pytest.skip(f"{FOREIGN} is an address of this host")


@pytest.mark.parametrize("plugin", ["user", "passt", "cni"])
def test_a_taken_host_port_is_refused_at_create(tmp_path: Path, taken: int,
                                                plugin: str) -> None:
    for ip in ("127.0.0.1", ""):  # (a port on all addresses clashes with one on loopback)
        vm = _vm(plugin, PortMapping(bind_address=ip, host_port=taken, vm_port=80))
        with pytest.raises(Conflict, match=f"host port {taken}/tcp is already in use"):
            network.preflight(vm, tmp_path)


@pytest.mark.parametrize("plugin", ["user", "passt"])
def test_a_taken_udp_port_is_refused(tmp_path: Path, plugin: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        port = int(s.getsockname()[1])
        vm = _vm(plugin, PortMapping(host_port=port, vm_port=53, protocol="udp"))
        with pytest.raises(Conflict, match=f"host port {port}/udp is already in use"):
            network.preflight(vm, tmp_path)


@pytest.mark.parametrize("plugin", ["user", "passt", "cni"])
def test_an_address_the_host_lacks_is_named(tmp_path: Path, foreign: str, plugin: str) -> None:
    vm = _vm(plugin, PortMapping(bind_address=foreign, host_port=8080, vm_port=80))
    with pytest.raises(InvalidInput, match=f"{foreign} is not an address of this host") as e:
        network.preflight(vm, tmp_path)
    assert "in use" not in str(e.value)


@pytest.mark.parametrize("plugin", ["user", "passt"])
def test_start_checks_the_ports_again(tmp_path: Path, taken: int, plugin: str) -> None:
    """Free at create, taken by start: refused before QEMU or passt is run."""
    with pytest.raises(Conflict, match=f"host port {taken}/tcp is already in use"), \
            network.attached(plugin, [("tcp", "127.0.0.1", taken, 80)], ssh=False,
                             root=tmp_path, workdir=tmp_path, prefix="", uid="x"):
        pytest.fail("the body ran")


def test_free_ports_pass(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    for plugin in ("user", "passt", "cni"):
        network.preflight(_vm(plugin, PortMapping(bind_address="127.0.0.1", host_port=port,
                                                  vm_port=80)), tmp_path)


@pytest.mark.parametrize("vm", [
    _vm("none", PortMapping(host_port=8080, vm_port=80)),
    _vm("none", ssh=True),
], ids=["ports", "ssh"])
def test_no_network_with_ports_or_ssh_is_refused_at_create(tmp_path: Path, vm: VM) -> None:
    with pytest.raises(InvalidInput, match="need a network"):
        network.preflight(vm, tmp_path)


def test_a_privileged_port_without_root_says_so() -> None:
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if start <= 80:
        pytest.skip(f"ports from {start} need no root on this host")
    if os.geteuid() != 0:
        pytest.skip("needs root to run the check as another user")
    code = ("from ignitevm.providers import network\n"
            "from ignitevm.errors import InvalidInput\n"
            "from pathlib import Path\n"
            "try:\n    network.check_host_ports([('tcp', '', 80, 80)], Path('/nonexistent'))\n"
            "except InvalidInput as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, user=65534, group=65534,
                         capture_output=True, text=True, check=True).stdout
    assert "host port 80/tcp is a privileged port" in out


@pytest.mark.parametrize(("gateway", "refused", "fine"), [
    ("", "10.77.0.1", "10.77.0.2"),          # (host-local's default: the first host)
    ("10.77.0.254", "10.77.0.254", "10.77.0.1"),
])
def test_the_gateway_is_not_an_address_to_ask_for(tmp_path: Path, gateway: str, refused: str,
                                                  fine: str) -> None:
    from ignitevm.api.types import NetworkAttachment
    from ignitevm.providers.network.cni import conflist

    name = f"ignitevm-test-gw-{os.getpid()}"  # (no leases under that name: nothing is made)
    conflist.write(tmp_path, "lab", conflist.bridge_conflist(name, "ignt-gw0", "10.77.0.0/24",
                                                             gateway, network="lab"))
    vm = _vm("cni")
    vm.spec.network.networks = [NetworkAttachment(network="lab", ip=refused)]
    with pytest.raises(InvalidInput, match=f"--ip {refused} is the gateway of network 'lab'"):
        network.preflight(vm, tmp_path)
    vm.spec.network.networks = [NetworkAttachment(network="lab", ip=fine)]
    network.preflight(vm, tmp_path)


@pytest.mark.parametrize("flags, said", [
    (["--network-plugin", "cni", "--network", "nope"], "nope"),
    (["--network-plugin", "none", "-p", "8080:80"], "need a network"),
    (["--network-plugin", "user", "--ip", "10.1.2.3"], "--network-plugin cni"),
])
def test_network_mistakes_are_said_before_any_pull(tmp_path: Path, flags: list[str],
                                                   said: str) -> None:
    """A typo in the network flags must not cost a download first: it is refused before
    the image is looked for (here an image that is nowhere, with --pull never)."""
    from tests.conftest import Ignite

    res = Ignite(tmp_path)("run", *flags, "--pull", "never", "example.invalid/none:1",
                           check=False)
    assert res.returncode == 1 and said in res.stderr, res.stderr
    assert "example.invalid" not in res.stderr
    assert not (tmp_path / "vm").is_dir() or not any((tmp_path / "vm").iterdir())


def test_host_routes_are_read_from_the_kernels_table(tmp_path: Path) -> None:
    from ipaddress import IPv4Network

    from ignitevm.providers.network.cni.networks import host_routes

    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"      # default: skipped
        "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"      # 192.0.2.0/24
        "wg0\t0000A8C0\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"       # 192.168.0.0/16
        "junk\tzz\n")
    assert host_routes(str(table)) == [(IPv4Network("192.0.2.0/24"), "eth0"),
                                       (IPv4Network("192.168.0.0/16"), "wg0")]
    assert host_routes(str(tmp_path / "none")) == []


def test_port_maps_are_read_from_the_rules_and_nothing_breaks_without_iptables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's port maps come from portmap's per-attachment chains (the jump's
    comment names the owner); odd lines are passed over; without iptables-save (a
    minimal host, passt's) or root there are none to read, and -p still works."""
    from ignitevm.providers.network.cni import sweep

    if os.geteuid() != 0:
        pytest.skip("the port maps are read as root only")
    lines = [
        '-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"n\\" id: \\"ign-1\\"" '
        '-m multiport --dports 8080 -j CNI-DN-aaa',
        "-A CNI-DN-aaa -s 10.61.0.2/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
        "-A CNI-DN-aaa -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.61.0.2:80",
        "-A CNI-DN-bbb -p udp -m udp --dport 53 -j DNAT --to-destination 10.61.0.3:53",
        '-A CNI-DN-ccc -p tcp --dport "9090 -j DNAT',      # an unbalanced quote
        "-A CNI-DN-ddd -p tcp -m tcp --dport -j DNAT",     # no port
        "-A CNI-HOSTPORT-DNAT -j",                         # cut short
    ]
    monkeypatch.setattr(sweep, "_iptables_save", lambda table: lines)
    assert sweep.mapped_ports() == {("tcp", 8080): "ign-1", ("udp", 53): "CNI-DN-bbb"}
    monkeypatch.undo()
    monkeypatch.setattr("shutil.which", lambda *a, **k: None)  # (no iptables-save here)
    assert sweep.mapped_ports() == {}
