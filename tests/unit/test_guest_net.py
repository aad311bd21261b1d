"""The guest's network module (ignitevm/guest/net.c), shared by the init at
boot and the agent on a clone's RESTORE: compiled here with a small driver
(tests/helpers/net_harness.c) and run on the host, in a network namespace of
its own with veth links standing for the guest's eth0 and eth1 (root; no VM).
The lines are the ones the host writes (providers/network/base.guest_lines)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ignitevm.api.types import VM, ObjectMeta
from ignitevm.operations import clones
from ignitevm.providers.network.base import NetPlan, guest_lines
from tests.helpers.guestc import build_driver


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_driver(tmp_path_factory, "net_harness", "net.c")


def _nic(mac: str, ip: str, **kw) -> NetPlan:
    return NetPlan(plugin="cni", mac=mac, guest_ip=ip, gateway="", dns="", **kw)


BOOT = _nic("02:00:00:00:00:09", "10.61.0.2/16", mtu=1400)._replace(
    gateway="10.61.0.1", dns="192.0.2.53 192.0.2.54", dns_search="lab.example example",
    more=(_nic("02:00:00:00:00:0a", "10.77.0.5/24",
               routes=(("10.99.0.0/16", "10.77.0.1"), ("10.98.0.0/16", ""))),))
CLONE = _nic("02:00:00:00:00:0b", "10.62.0.7/24")._replace(
    gateway="10.62.0.1", dns="10.62.0.1", more=(_nic("02:00:00:00:00:0c", "10.77.0.6/24"),))
INTERNAL = _nic("02:00:00:00:00:0d", "10.63.0.7/24")  # no gateway, no name servers


def test_the_lines_the_host_writes() -> None:
    assert guest_lines(BOOT) == [
        ("net", "eth0 02:00:00:00:00:09 10.61.0.2/16 1400"),
        ("net", "eth1 02:00:00:00:00:0a 10.77.0.5/24"),
        ("route", "eth1 10.99.0.0/16 10.77.0.1"), ("route", "eth1 10.98.0.0/16"),
        ("gw", "10.61.0.1"), ("dns", "192.0.2.53 192.0.2.54"),
        ("search", "lab.example example")]
    assert guest_lines(INTERNAL) == [("net", "eth0 02:00:00:00:00:0d 10.63.0.7/24"),
                                     ("dns", "")]
    assert guest_lines(_nic("", "")) == [("net", "eth0 - -"), ("dns", "")]
    # a clone's RESTORE carries the same lines after its identity
    vm = VM(metadata=ObjectMeta(name="c", uid="0123456789abcdef"))
    assert clones.identity_fields(vm, BOOT)[4:] == guest_lines(BOOT)


def _state() -> str:
    return ('echo "ADDR $(ip -j -4 addr)"; echo "ROUTE $(ip -j -4 route)"; '
            'echo "LINK $(ip -j link)"; echo "RESOLV $(cat "$ETC/resolv.conf" | base64 -w0)"')


def _parse(out: str) -> list[dict]:
    states, cur = [], {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key in ("ADDR", "ROUTE", "LINK"):
            cur[key] = json.loads(value)
        elif key == "RESOLV":
            import base64

            cur[key] = base64.b64decode(value).decode()
            states.append(cur)
            cur = {}
        else:
            assert not line.startswith("warn:"), out
    return states


def _addrs(state: dict, ifname: str) -> list[str]:
    return [f"{a['local']}/{a['prefixlen']}" for i in state["ADDR"] if i["ifname"] == ifname
            for a in i["addr_info"]]


def _routes(state: dict) -> set[str]:
    return {f"{r['dst']} {r.get('gateway', '-')} {r['dev']}" for r in state["ROUTE"]
            if r.get("protocol") != "kernel"}


def _link(state: dict, ifname: str) -> dict:
    return next(i for i in state["LINK"] if i["ifname"] == ifname)


def _run(harness: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a network namespace the harness makes (it applies lines
    nowhere else); skips where none can be made."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip (iproute2) for a network namespace")
    out = subprocess.run([str(harness), "run", script], capture_output=True, text=True,
                         env={**os.environ, "H": str(harness), **env})
    if out.returncode == 3:
        pytest.skip(out.stdout.strip())
    return out


def test_boot_then_clones_replace_addresses_routes_and_resolv_conf(harness: Path,
                                                                   tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    files = {}
    for name, net in (("boot", BOOT), ("clone", CLONE), ("internal", INTERNAL)):
        files[name] = tmp_path / name
        files[name].write_text("".join(f"{k}={v}\n" for k, v in guest_lines(net)))
    script = (
        "set -e; ip link add eth0 type veth peer name p0; ip link add eth1 type veth peer "
        "name p1; ip link set p0 up; ip link set p1 up; "
        # what a snapshot's guest may hold: an address and a route of its own
        "ip link set eth0 up; ip addr add 10.50.0.9/24 dev eth0; "
        "ip route add default via 10.50.0.1; "
        + "; ".join(f'"$H" {files[n]} "$ETC"; {_state()}' for n in ("boot", "clone", "internal")))
    out = _run(harness, script, ETC=str(etc))
    assert out.returncode == 0, out.stdout + out.stderr
    boot, clone, internal = _parse(out.stdout)

    assert _addrs(boot, "eth0") == ["10.61.0.2/16"] and _addrs(boot, "eth1") == ["10.77.0.5/24"]
    assert _addrs(boot, "lo") == ["127.0.0.1/8"]
    assert _routes(boot) == {"default 10.61.0.1 eth0", "10.99.0.0/16 10.77.0.1 eth1",
                             "10.98.0.0/16 - eth1"}
    assert _link(boot, "eth0")["mtu"] == 1400 and _link(boot, "eth1")["mtu"] == 1500
    assert _link(boot, "eth0")["address"] == "02:00:00:00:00:09"
    assert all("UP" in _link(boot, n)["flags"] for n in ("lo", "eth0", "eth1"))
    assert boot["RESOLV"] == ("search lab.example example\nnameserver 192.0.2.53\n"
                              "nameserver 192.0.2.54\n")

    # a clone: the snapshot's addresses replaced (not a second one), its routes gone
    assert _addrs(clone, "eth0") == ["10.62.0.7/24"] and _addrs(clone, "eth1") == ["10.77.0.6/24"]
    assert _routes(clone) == {"default 10.62.0.1 eth0"}
    assert _link(clone, "eth0")["address"] == "02:00:00:00:00:0b"
    assert clone["RESOLV"] == "nameserver 10.62.0.1\n"

    # on an --internal network: no default route, no name servers
    assert _addrs(internal, "eth0") == ["10.63.0.7/24"] and _routes(internal) == set()
    assert "nameserver" not in internal["RESOLV"]


def test_resolv_conf_kept_when_the_image_links_it(harness: Path, tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    lines = tmp_path / "lines"
    lines.write_text("dns=192.0.2.53\n")
    out = _run(harness, f'"$H" {lines} {etc}')
    assert out.returncode == 0 and "warn" not in out.stdout, out.stdout + out.stderr
    assert os.readlink(etc / "resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"
    assert not (tmp_path / "run").exists()


def test_the_harness_applies_nothing_outside_its_own_namespace(harness: Path,
                                                                tmp_path: Path) -> None:
    lines = tmp_path / "lines"
    lines.write_text("gw=192.0.2.1\n")  # (would be harmless even if applied)
    out = subprocess.run([str(harness), str(lines), str(tmp_path)], capture_output=True,
                         text=True, env={**os.environ, "NET_HARNESS_NS": "1"})
    assert out.returncode == 2 and "refused" in out.stdout


def test_the_most_the_host_lets_through_reaches_the_guest_whole(harness: Path,
                                                                tmp_path: Path) -> None:
    """The host's limits (api/validation.py GUEST_*, MAX_NAMESERVERS,
    MAX_SEARCH) are within what the module takes: at the limit, every route,
    name server and search domain arrives, without a warning."""
    from ignitevm.api import validation as v

    def routes(first: int, n: int, gw: str) -> tuple[tuple[str, str], ...]:
        return tuple((f"10.{first + i}.0.0/16", gw) for i in range(n))

    search = ["a" * 63 + "." + "b" * 62, "c" * 63 + "." + "d" * 62]
    search.append("e" * (v.MAX_SEARCH - len(" ".join(search)) - 1))
    assert len(" ".join(search)) == v.MAX_SEARCH
    half = v.GUEST_ROUTES // 2
    most = _nic("02:00:00:00:00:09", "10.61.0.2/16", routes=routes(100, half, "10.61.0.1"))
    most = most._replace(
        gateway="10.61.0.1", dns=" ".join(["2001:db8::53", "192.0.2.53", "192.0.2.54"]
                                          [:v.MAX_NAMESERVERS]),
        dns_search=" ".join(search),
        more=(_nic("02:00:00:00:00:0a", "10.77.0.5/24",
                   routes=routes(100 + half, v.GUEST_ROUTES - half, "10.77.0.1")),))
    etc = tmp_path / "etc"
    etc.mkdir()
    lines = tmp_path / "lines"
    lines.write_text("".join(f"{k}={val}\n" for k, val in guest_lines(most)))
    script = ("set -e; ip link add eth0 type veth peer name p0; ip link add eth1 type veth "
              f'peer name p1; ip link set p0 up; ip link set p1 up; "$H" {lines} "$ETC"; '
              + _state())
    out = _run(harness, script, ETC=str(etc))
    assert out.returncode == 0, out.stdout + out.stderr
    (state,) = _parse(out.stdout)  # (a warning line fails the parse)
    assert len(_routes(state)) == v.GUEST_ROUTES + 1  # (and the default one)
    assert state["RESOLV"] == (f"search {' '.join(search)}\n" + "".join(
        f"nameserver {ns}\n" for ns in most.dns.split()))


def test_a_clone_on_user_networking_changes_its_mac_alone(harness: Path,
                                                          tmp_path: Path) -> None:
    """A clone whose plugin gives every VM the same address (user, passt) is
    sent only its new MAC (and for passt one datagram): the address, the
    default route and resolv.conf stay as the snapshot had them."""
    from ignitevm.providers.network import usermode

    etc = tmp_path / "etc"
    etc.mkdir()
    source = usermode.plan([], ssh=False)._replace(mac="02:00:00:00:00:21")
    assert usermode.plan([], ssh=False)._replace(mac="") == source._replace(mac="")
    vm = VM(metadata=ObjectMeta(name="c", uid="0123456789abcdef"))
    lines = {"boot": guest_lines(source)}
    for plugin in ("user", "passt"):
        clone = source._replace(plugin=plugin, mac="02:00:00:00:00:22")
        got = clones.identity_fields(vm, clone, mac_only=True)[4:]
        want = [("mac", "eth0 02:00:00:00:00:22")]
        assert got == want + ([("notify", "10.0.2.2")] if plugin == "passt" else [])
        lines[plugin] = got
    # (an agent that does not say restore=2, or a CNI clone: every line, as before)
    assert clones.identity_fields(vm, source, mac_only=False)[4:] == guest_lines(source)
    cni = source._replace(plugin="cni")
    assert clones.identity_fields(vm, cni, mac_only=True)[4:] == guest_lines(cni)
    files = {}
    for name, got in lines.items():
        files[name] = tmp_path / name
        files[name].write_text("".join(f"{k}={v}\n" for k, v in got))
    script = ("set -e; ip link add eth0 type veth peer name p0; ip link set p0 up; "
              + "; ".join(f'"$H" {files[n]} "$ETC"; {_state()}'
                          for n in ("boot", "user", "passt")))
    out = _run(harness, script, ETC=str(etc))
    assert out.returncode == 0, out.stdout + out.stderr
    boot, user, passt = _parse(out.stdout)
    assert _link(boot, "eth0")["address"] == "02:00:00:00:00:21"
    for clone in (user, passt):
        assert _link(clone, "eth0")["address"] == "02:00:00:00:00:22"
        assert _addrs(clone, "eth0") == ["10.0.2.15/24"]
        assert _routes(clone) == {"default 10.0.2.2 eth0"}
        assert clone["RESOLV"] == boot["RESOLV"] == "nameserver 10.0.2.3\n"
        assert "UP" in _link(clone, "eth0")["flags"]


def test_a_mac_line_it_cannot_take_is_a_warning(harness: Path, tmp_path: Path) -> None:
    lines = tmp_path / "lines"
    lines.write_text("mac=eth0\nmac=eth0 02:00:00:00:00:22 extra\nmac=eth0 not-a-mac\n")
    script = ('set -e; ip link add eth0 type veth peer name p0; ip link set p0 up; '
              f'"$H" {lines} "$ETC"; ip -j link show eth0')
    out = _run(harness, script, ETC=str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("cannot take mac=") == 2
    assert "eth0: cannot set MAC not-a-mac" in out.stdout
    assert not (tmp_path / "resolv.conf").exists()  # (no dns= line: not written)
