"""How a network plan reaches QEMU's command line and the guest's config, and
how the new spec fields keep Ignite's files unchanged (no root, no VM)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ignitevm.api import codec
from ignitevm.api.defaults import default_vm, validate_vm
from ignitevm.api.types import VM, NetworkAttachment
from ignitevm.errors import InvalidInput
from ignitevm.providers.network.base import Forward, NetPlan, guest_lines
from ignitevm.providers.network.passt import argv as passt_argv
from ignitevm.providers.vmm.qemu import args


def _cni(mac: str, ip: str, fd: int) -> NetPlan:
    return NetPlan(plugin="cni", mac=mac, guest_ip=ip, gateway="", dns="", tap_fd=fd)


def test_cni_nics_take_the_inherited_taps() -> None:
    net = _cni("02:00:00:00:00:01", "10.61.0.2/16", 7)._replace(
        gateway="10.61.0.1", more=(_cni("02:00:00:00:00:02", "10.77.0.5/24", 8),))
    assert args.network(net) == [
        "-netdev", "tap,id=net0,fd=7", "-device", "virtio-net-device,netdev=net0,"
        "mac=02:00:00:00:00:01",
        "-netdev", "tap,id=net1,fd=8", "-device", "virtio-net-device,netdev=net1,"
        "mac=02:00:00:00:00:02"]


def test_passt_nic_and_its_port_forwards() -> None:
    net = NetPlan(plugin="passt", mac="02:00:00:00:00:03", guest_ip="10.0.2.15/24",
                  gateway="10.0.2.2", dns="10.0.2.3", tap_fd=9)
    assert args.network(net)[1] == "stream,id=net0,server=off,addr.type=fd,addr.str=9"
    cmd = passt_argv(5, (Forward("tcp", "0.0.0.0", 8080, 80), Forward("tcp", "127.0.0.1", 2222, 22),
                         Forward("udp", "0.0.0.0", 5353, 53)))
    assert cmd[cmd.index("--tcp-ports") + 1] == "8080:80,127.0.0.1/2222:22"
    assert cmd[cmd.index("--udp-ports") + 1] == "5353:53"
    assert cmd[cmd.index("--fd") + 1] == "5"


def test_guest_config_has_dns_search_and_more_nics() -> None:
    net = _cni("02:00:00:00:00:01", "10.61.0.2/16", 7)._replace(
        gateway="10.61.0.1", dns="192.0.2.53 192.0.2.54", dns_search="lab.example example",
        more=(_cni("02:00:00:00:00:02", "10.77.0.5/24", 8),))
    assert guest_lines(net) == [
        ("net", "eth0 02:00:00:00:00:01 10.61.0.2/16"),
        ("net", "eth1 02:00:00:00:00:02 10.77.0.5/24"), ("gw", "10.61.0.1"),
        ("dns", "192.0.2.53 192.0.2.54"), ("search", "lab.example example")]
    with pytest.raises(InvalidInput, match="control character"):
        guest_lines(net._replace(dns_search="lab\ngw=192.0.2.66"))


def test_ignite_files_read_and_write_unchanged() -> None:
    raw = (b'{"kind":"VM","apiVersion":"ignite.weave.works/v1alpha4","metadata":{"name":"a"},'
           b'"spec":{"image":{"oci":"x"},"network":{"ports":[{"hostPort":80,"vmPort":80}]}},'
           b'"status":{}}')
    vm = codec.decode_json(raw, VM)
    out = codec.to_builtins(vm)
    assert out["spec"]["network"] == {"ports": [{"hostPort": 80, "vmPort": 80}]}
    vm.spec.network.networks = [NetworkAttachment(network="lab", ip="10.77.0.50")]
    vm.spec.network.dns_search = ["lab"]
    out = codec.to_builtins(vm)["spec"]["network"]
    assert out["networks"] == [{"network": "lab", "ip": "10.77.0.50"}]
    assert out["dnsSearch"] == ["lab"]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("ip", "10.77.0.300", "invalid --ip"),
    ("ip", "fd00::5", "IPv4"),
    ("mac", "01:00:00:00:00:01", "invalid --mac"),
    ("mac", "02:00:00:00:01", "invalid --mac"),
    ("network", "Bad_Name", "invalid network name"),
])
def test_bad_network_fields(field: str, value: str, message: str) -> None:
    vm = VM()
    vm.spec.image.oci = "x"
    att = NetworkAttachment(network="lab")
    setattr(att, field, value)
    vm.spec.network.networks = [att]
    default_vm(vm)
    with pytest.raises(InvalidInput, match=message):
        validate_vm(vm)


def test_at_most_eight_networks() -> None:
    vm = VM()
    vm.spec.image.oci = "x"
    vm.spec.network.networks = [NetworkAttachment(network=f"n{i}") for i in range(9)]
    default_vm(vm)
    with pytest.raises(InvalidInput, match="at most 8 networks"):
        validate_vm(vm)
    vm.spec.network.networks.pop()
    validate_vm(vm)


def test_bad_dns_fields() -> None:
    vm = VM()
    vm.spec.image.oci = "x"
    default_vm(vm)
    vm.spec.network.dns = ["not-an-ip"]
    with pytest.raises(InvalidInput, match="invalid --dns"):
        validate_vm(vm)
    vm.spec.network.dns = ["192.0.2.53"]
    vm.spec.network.dns_search = ["bad domain"]
    with pytest.raises(InvalidInput, match="invalid --dns-search"):
        validate_vm(vm)


def test_the_guest_tap_passes_only_its_own_address_and_mac() -> None:
    from ignitevm.providers.network.cni.tap import redirect_script

    script = redirect_script("eth0", "tap0", "02:42:0A:4D:00:05", "10.77.0.5")
    guest = [ln for ln in script.splitlines() if ln.startswith("filter add dev tap0")]
    assert len(guest) == 2 and all("mirred egress redirect dev eth0" in ln for ln in guest)
    assert all("match u32 0x02420a4d 0xffffffff at -8 match u16 0x0005 0xffff at -4" in ln
               for ln in guest)
    assert "protocol ip" in guest[0] and "match ip src 10.77.0.5/32" in guest[0]
    assert "protocol arp" in guest[1] and "0x0a4d 0xffff at 14" in guest[1]
    assert "0x0005 0xffff at 16" in guest[1]
    assert not any("protocol all" in ln for ln in guest)   # nothing else goes on


def test_passt_socket_pair_has_wide_buffers() -> None:
    """At the socket pair's default buffers (~208 KB) passt stalls on its
    end: host -> guest ran at a third of its speed. The real passt is started
    (it ends when the pair's other end closes)."""
    import socket

    from ignitevm.providers.network import passt
    from tests.helpers.hostserver import passt_unusable

    if (why := passt_unusable()) is not None:
        pytest.skip(why)
    with passt.attached([], False) as net:
        sk = socket.socket(fileno=net.tap_fd)
        try:
            want = min(passt.BUFFER, _max("wmem_max")) if os.geteuid() else passt.BUFFER
            assert sk.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= want
            assert sk.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= want
        finally:
            sk.detach()


def _max(name: str) -> int:
    return int(open(f"/proc/sys/net/core/{name}").read())


def test_start_may_switch_the_network_plugin(tmp_path: Path) -> None:
    """Ignite's ``start --network-plugin`` (its provider-switch scenario): the
    plugin is checked and taken (it was once accepted and ignored)."""
    from ignitevm.providers import network

    vm = VM()
    vm.spec.image.oci = "x"
    default_vm(vm)
    vm.status.network.plugin = "cni"
    network.switch(vm, "user", tmp_path)
    assert vm.status.network.plugin == "user"
    with pytest.raises(InvalidInput, match="unknown network plugin 'slirp'"):
        network.switch(vm, "slirp", tmp_path)
    vm.spec.network.networks = [NetworkAttachment(network="lab")]
    with pytest.raises(InvalidInput, match="need --network-plugin cni"):
        network.switch(vm, "none", tmp_path)


def test_passt_needs_an_ipv4_default_route(tmp_path: Path) -> None:
    """passt turns IPv4 off on a host without an IPv4 default route: the
    project says so up front (and picks user mode by default) instead of
    starting a guest that can never be reached."""
    from ignitevm.providers.network.passt import ipv4_routable

    head = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
    table = tmp_path / "route"
    table.write_text(head + "eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n")
    assert not ipv4_routable(table)  # (a subnet route only)
    table.write_text(head + "eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\n")
    assert ipv4_routable(table)
    table.write_text(head + "eth0\t00000000\t0100A8C0\t0002\t0\t0\t0\t00000000\n")
    assert not ipv4_routable(table)  # (not up)
    assert ipv4_routable(tmp_path / "absent")  # (cannot tell: passt decides)


def test_the_shared_chain_sweep_starts_once_their_plugins_released(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Release sweeps the plugins' shared chains beside the last DEL only once
    firewall and portmap have released theirs; else after every DEL."""
    import json

    from ignitevm.providers.network.cni import chain, conflist, netns, plugins, sweep, vm

    events: list[str] = []
    monkeypatch.setattr(plugins, "invoke", lambda cmd, conf, **_: events.append(
        f"{cmd} {conf['type']}"))
    monkeypatch.setattr(chain, "invoke", plugins.invoke)
    monkeypatch.setattr(sweep, "shared_chains", lambda: events.append("sweep"))
    monkeypatch.setattr(sweep, "leases_of", lambda *_: None)
    monkeypatch.setattr(netns, "exists", lambda _: True)
    monkeypatch.setattr(netns, "delete", lambda _: None)
    for first, want in (("bridge", ["DEL firewall", "DEL portmap", "sweep", "DEL bridge"]),
                        ("firewall", ["DEL portmap", "DEL bridge", "DEL firewall", "sweep"])):
        conf = conflist.bridge_conflist("n", "igx0", "10.250.0.0/24")
        conf["plugins"].sort(key=lambda p: p["type"] != first)
        att = {"conflist": conf, "ifname": "eth0",
               "result": {"ips": [{"address": "10.250.0.2/24"}]}}
        (tmp_path / vm.RECORD).write_text(json.dumps(
            {"containerID": "c", "netns": "c", "state": "ready", "attachments": [att]}))
        events.clear()
        vm.release(tmp_path)
        # (the thread's sweep runs beside the last DEL: in either order of the two)
        assert sorted(events) == sorted(want)
        assert events[:want.index("sweep")] == want[:want.index("sweep")]
