"""CNI networking on real guests: real plugins, real iptables, real bridges.

One network of the tests' own (its bridge and subnet, never ignite0 or
10.61.0.0/16); two booted VMs shared by the tests (a server and a client),
and a few VMs that are launched and destroyed without waiting for their boot.
Needs root and Debian's containernetworking-plugins; skips otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ignitevm.providers.network.cni import networks
from tests.conftest import Ignite, cli_env
from tests.helpers.cninet import (
    claim_network,
    free_claim,
    remove_network,
    require_cni,
    scope,
    snapshot,
    write_default,
)
from tests.helpers.hostserver import passt_unusable
from tests.vm.conftest import wait_console

# (the test's own id prefix: its namespaces and rules are told apart from
# those of other runs on this host)
PREFIX = f"ignt{os.getpid()}"
CNI = ("--network-plugin", "cni", "--id-prefix", PREFIX)
SMALL = ("--memory", "128MB", "--size", "256MB")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def net(cli: Ignite) -> Iterator[tuple[str, str, str]]:
    require_cni()
    name, bridge, subnet = write_default(cli.root, tag=7)
    yield name, bridge, subnet
    ids = cli("ps", "-a", "-q", check=False).stdout.split()
    if ids:
        cli("rm", "-f", *ids, check=False)
    remove_network(name, bridge)


def ip_of(cli: Ignite, vm: str) -> str:
    obj = json.loads(cli("inspect", "vm", vm).stdout)
    return obj["status"]["network"]["ipAddresses"][0]


@pytest.fixture(scope="module")
def web(cli: Ignite, testbox: str, net: tuple[str, str, str]) -> Iterator[tuple[str, int]]:
    """A guest serving /etc over HTTP on port 80, mapped to a host port."""
    port = free_port()
    cli("run", testbox, "--name", "web", *CNI, *SMALL, "-p", f"{port}:80")
    wait_console(cli, "web", "TEST-READY")
    cli("exec", "web", "--", "/bin/busybox", "httpd", "-p", "80", "-h", "/etc")
    yield "web", port
    cli("rm", "-f", "web", check=False)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def test_guest_server_by_ip_and_by_mapped_port(cli: Ignite, net: tuple[str, str, str],
                                               web: tuple[str, int]) -> None:
    _name, _bridge, subnet = net
    ip = ip_of(cli, "web")
    assert ip.rsplit(".", 1)[0] == subnet.rsplit(".", 1)[0]
    assert "root:x:0:0" in fetch(f"http://{ip}/passwd")
    assert "root:x:0:0" in fetch(f"http://127.0.0.1:{web[1]}/passwd")
    row = next(line for line in cli("ps", "-o", "wide").stdout.splitlines()
               if line.split()[-5:][0] == "web" or " web " in line)
    assert ip in row and f"0.0.0.0:{web[1]}->80/tcp" in row and " cni " in row
    # The guest took the CNI interface's MAC: no DHCP, no second bridge.
    resolv = cli("exec", "web", "--", "/bin/busybox", "cat", "/etc/resolv.conf").stdout
    gw = subnet.rsplit(".", 1)[0] + ".1"
    routes = cli("exec", "web", "--", "/bin/busybox", "ip", "route").stdout
    assert f"default via {gw}" in routes, routes
    assert resolv is not None


def test_mapped_port_reached_from_another_host(web: tuple[str, int],
                                                outside: str) -> None:
    """"So does another host": from a namespace beyond the host (its own veth and
    subnet, routed by the host), the mapped port on the host's address reaches the
    guest's server through portmap's DNAT."""
    host_side = outside.rsplit(".", 1)[0] + ".1"  # (the host's address towards it)
    code = ("import sys, urllib.request\n"
            "print(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode())\n")
    got = subprocess.run(["ip", "netns", "exec", f"{PREFIX}-out", sys.executable, "-c", code,
                          f"http://{host_side}:{web[1]}/passwd"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert "root:x:0:0" in got.stdout, got.stderr


def test_vm_to_vm_on_the_bridge(cli: Ignite, testbox: str, web: tuple[str, int],
                                net: tuple[str, str, str]) -> None:
    cli("run", testbox, "--name", "client", *CNI, *SMALL)
    try:
        wait_console(cli, "client", "TEST-READY")
        out = cli("exec", "client", "--", "/bin/busybox", "wget", "-q", "-O", "-",
                  f"http://{ip_of(cli, 'web')}/passwd").stdout
        assert "root:x:0:0" in out
        # A guest that takes an address that is not its own is cut off (no
        # spoofing another VM, no poisoning the bridge's ARP).
        own = ip_of(cli, "client")
        prefix = ip_of(cli, "web").rsplit(".", 1)[0]
        spoof = f"{prefix}.{250 if not own.endswith('.250') else 251}"
        bb = ["exec", "client", "--", "/bin/busybox"]
        plen = net[2].rsplit("/", 1)[1]
        # (own address first: deleting a primary address takes the secondary ones
        # of its subnet with it)
        cli(*bb, "ip", "addr", "del", f"{own}/{plen}", "dev", "eth0")
        cli(*bb, "ip", "addr", "add", f"{spoof}/{plen}", "dev", "eth0")
        # (busybox's own `timeout`: Debian 12's busybox wget dies of SIGSEGV with -T,
        # which once made this check pass whatever the network did)
        res = cli(*bb, "timeout", "5", "/bin/busybox", "wget", "-q", "-O", "-",
                  f"http://{ip_of(cli, 'web')}/passwd", check=False)
        # (its ARP for the server, sent from the address it took, never leaves the tap)
        assert res.returncode == 143 or (res.returncode == 1 and "No route to host"
                                         in res.stderr), res
        assert "root:x:0:0" not in res.stdout
    finally:
        cli("rm", "-f", "client")


def test_host_port_taken_is_refused_before_anything_starts(
        cli: Ignite, testbox: str, web: tuple[str, int], net: tuple[str, str, str]) -> None:
    before = snapshot(*scope(PREFIX, net), ports_of=(net[1],))
    # ...by another VM (portmap would accept it and lose it silently)...
    res = cli("run", testbox, "--name", "dup", *CNI, *SMALL, "-p", f"{web[1]}:80", check=False)
    assert res.returncode == 1
    assert res.stderr.startswith("error: host port") and "already mapped" in res.stderr
    # ...and by any process on the host.
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        res = cli("run", testbox, "--name", "dup", *CNI, *SMALL,
                  "-p", f"{s.getsockname()[1]}:80", check=False)
    assert res.returncode == 1 and "already in use" in res.stderr
    assert "Traceback" not in res.stderr
    assert "dup" not in cli("ps", "-a").stdout
    assert snapshot(*scope(PREFIX, net), ports_of=(net[1],)) == before


def ip_of_or_none(cli: Ignite, vm: str) -> str | None:
    obj = json.loads(cli("inspect", "vm", vm).stdout)
    return (obj["status"]["network"].get("ipAddresses") or [None])[0]


def test_bad_port_syntax(cli: Ignite, testbox: str, net: tuple[str, str, str]) -> None:
    res = cli("run", testbox, *CNI, "-p", "80:80:80:80", check=False)
    assert res.returncode == 1 and res.stderr.startswith("error: invalid port mapping")


def test_qemu_failing_after_add_leaks_nothing(cli: Ignite, testbox: str,
                                              net: tuple[str, str, str],
                                              tmp_path: Path) -> None:
    """QEMU refusing to start, after the network was attached. (A stand-in
    QEMU that fails is put first on PATH: the one fault a real QEMU will not
    produce on demand.)"""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "qemu-system-x86_64").write_text("#!/bin/sh\necho 'qemu: could not start' >&2\n"
                                             "exit 1\n")
    (fake / "qemu-system-x86_64").chmod(0o755)
    before = snapshot(*scope(PREFIX, net), ports_of=(net[1],))
    env_path = os.environ["PATH"]
    os.environ["PATH"] = f"{fake}:{env_path}"
    try:
        res = cli("run", testbox, "--name", "nostart", *CNI, *SMALL, "-p",
                  f"{free_port()}:80", check=False)
    finally:
        os.environ["PATH"] = env_path
    assert res.returncode == 1 and "QEMU failed to start" in res.stderr
    assert snapshot(*scope(PREFIX, net), ports_of=(net[1],)) == before


def test_created_killed_and_removed_vms_leave_nothing(cli: Ignite, testbox: str,
                                                      net: tuple[str, str, str]) -> None:
    """Ten VMs, each with a port map: three whose QEMU the test kills -9 (then
    `ps` sees it), two stopped with kill, three removed while running, and two
    whose namespace vanished as in a host reboot. Links, namespaces, rules
    naming them, leases: as before. (They need not finish booting.)"""
    _name, bridge, _subnet = net
    cli("run", testbox, "--name", "warm", *CNI, *SMALL)  # the bridge exists from here on
    cli("rm", "-f", "warm")
    before = snapshot(*scope(PREFIX, net), ports_of=(bridge,))
    k9, killed, rmf, reboot = ["k9a", "k9b", "k9c"], ["kia", "kib"], ["rma", "rmb", "rmc"], \
        ["rba", "rbb"]
    names = [*k9, *killed, *rmf, *reboot]
    for i, n in enumerate(names):
        cli("run", testbox, "--name", n, *CNI, *SMALL, "-p", f"{free_port() + i}:80")
    uid = {n: cli("inspect", "vm", n, "-t", "{{.ObjectMeta.UID}}").stdout.strip()
           for n in names}
    during = snapshot(*scope(PREFIX, net), ports_of=(bridge,))
    assert len(during["netns"]) == len(before["netns"]) + len(names)
    assert all(any(uid[n] in r for r in during["iptables"]) for n in names)
    for n in [*k9, *reboot]:
        os.kill(int((cli.root / "vm" / uid[n] / "run" / "qemu.pid").read_text()),
                signal.SIGKILL)
    for n in reboot:  # a host reboot: the namespace is gone with everything in it
        os.system(f"ip netns delete {PREFIX}-{uid[n]}")
    cli("ps", "-a")  # sees those QEMUs gone and releases their networks
    cli("kill", *killed)
    cli("rm", "-f", *names)
    assert snapshot(*scope(PREFIX, net), ports_of=(bridge,)) == before


def test_cli_killed_in_the_middle_of_setup(cli: Ignite, testbox: str,
                                           net: tuple[str, str, str]) -> None:
    """`ignite run` killed -9 once its network record is written: the next
    command finishes the job from the record."""
    _name, bridge, _subnet = net
    before = snapshot(*scope(PREFIX, net), ports_of=(bridge,))
    known = set((cli.root / "vm").glob("*/network.json"))
    env = cli_env(cli.root)
    proc = subprocess.Popen([sys.executable, "-m", "ignitevm", "run", testbox, "--name", "mid",
                             *CNI, *SMALL, "-p", f"{free_port()}:80"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not set((cli.root / "vm").glob("*/network.json")) - known:
            assert proc.poll() is None, "ignite run ended before it wrote its network record"
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    cli("rm", "-f", "mid")
    assert snapshot(*scope(PREFIX, net), ports_of=(bridge,)) == before


def test_named_network_static_ip_dns_and_two_nics(cli: Ignite, testbox: str,
                                                  web: tuple[str, int]) -> None:
    """eth0 on a network of the test's own with a fixed address, eth1 on the
    default one: the host reaches eth0's address, the VM reaches `web` over
    eth1, and the guest got the name servers and search domains asked for."""
    lab, n = claim_network("lab", tag=8)  # (its own name, bridge and subnet on this host)
    subnet = f"10.249.{n}.0/24"
    fixed_ip = f"10.249.{n}.50"
    cli("network", "create", lab, "--subnet", subnet)
    try:
        assert lab in cli("network", "ls").stdout
        cli("run", testbox, "--name", "fixed", *CNI, *SMALL, "--network", lab,
            "--ip", fixed_ip, "--network", "default", "--dns", "192.0.2.53",
            "--dns-search", "lab.example", "--mac", "02:00:0a:f9:00:32")
        try:
            wait_console(cli, "fixed", "TEST-READY")
            assert ip_of(cli, "fixed") == fixed_ip
            row = next(ln for ln in cli("ps", "-o", "wide").stdout.splitlines() if "fixed" in ln)
            assert f" cni:lab{n},default " in row and fixed_ip in row, row
            resolv = cli("exec", "fixed", "--", "/bin/busybox", "cat",
                         "/etc/resolv.conf").stdout
            assert "nameserver 192.0.2.53" in resolv and "search lab.example" in resolv
            links = cli("exec", "fixed", "--", "/bin/busybox", "ip", "addr").stdout
            assert "02:00:0a:f9:00:32" in links and "eth1" in links
            out = cli("exec", "fixed", "--", "/bin/busybox", "wget", "-q", "-O", "-",
                      f"http://{ip_of(cli, 'web')}/passwd").stdout
            assert "root:x:0:0" in out
            cli("exec", "fixed", "--", "/bin/busybox", "httpd", "-p", "80", "-h", "/etc")
            assert "root:x:0:0" in fetch(f"http://{fixed_ip}/passwd")
            res = cli("network", "rm", lab, check=False)
            assert res.returncode == 1 and "in use by VM 'fixed'" in res.stderr
            cli("stop", "fixed")
            cli("start", "fixed")  # (the static address is the VM's across stop/start)
            assert ip_of(cli, "fixed") == fixed_ip
            # Asking for an address another VM holds: refused before anything is made.
            res = cli("run", testbox, "--name", "twin", *CNI, "--network", lab,
                      "--ip", fixed_ip, check=False)
            assert res.returncode == 1 and "is taken" in res.stderr
        finally:
            cli("rm", "-f", "fixed")
    finally:
        cli("network", "rm", lab)
        free_claim(lab)


def test_passt_forwards_a_port(cli: Ignite, testbox: str, net: tuple[str, str, str]) -> None:
    if (why := passt_unusable()) is not None:
        pytest.skip(why)
    port = free_port()
    cli("run", testbox, "--name", "pst", "--network-plugin", "passt", *SMALL, "-p", f"{port}:80")
    try:
        wait_console(cli, "pst", "TEST-READY")
        cli("exec", "pst", "--", "/bin/busybox", "httpd", "-p", "80", "-h", "/etc")
        assert "root:x:0:0" in fetch(f"http://127.0.0.1:{port}/passwd")
        # A service on the host's loopback is not the guest's to reach.
        import socket

        with socket.socket() as loop:
            loop.bind(("127.0.0.1", 0))
            loop.listen(1)
            loop.settimeout(0)
            lport = loop.getsockname()[1]
            res = cli("exec", "pst", "--", "/bin/busybox", "timeout", "5", "/bin/busybox",
                      "wget", "-q", "-O", "-", f"http://10.0.2.2:{lport}/", check=False)
            assert res.returncode not in (0, 139), res  # (139: wget crashed, nothing tested)
            with pytest.raises(BlockingIOError):
                loop.accept()
    finally:
        cli("rm", "-f", "pst")
    assert not [p for p in Path("/proc").glob("[0-9]*")
                if _cmdline(p).startswith(b"passt") and str(cli.root).encode() in _cmdline(p)]


def _cmdline(p: Path) -> bytes:
    try:
        return (p / "cmdline").read_bytes()
    except OSError:
        return b""


def test_stop_start_keeps_the_address(cli: Ignite, web: tuple[str, int]) -> None:
    ip = ip_of(cli, "web")
    cli("stop", "web")
    assert "web" in cli("ps", "-a").stdout and not ip_of_or_none(cli, "web")
    cli("start", "web")
    assert ip_of(cli, "web") == ip
    # (last of the tests that use web: its server did not survive the restart)


@pytest.fixture
def outside() -> Iterator[str]:
    """An address beyond the host: a namespace of the test's own behind a
    veth pair, routed by the host like any other network. Yields its address."""
    claimed, n = claim_network("out", tag=11)  # (a subnet no other run uses meanwhile)
    ns, host_end, far_end = f"{PREFIX}-out", f"{PREFIX[:9]}o", f"{PREFIX[:9]}f"
    sh = ["ip", "link"]

    def undo() -> None:
        subprocess.run([*sh, "del", host_end], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)

    undo()
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run([*sh, "add", host_end, "type", "veth", "peer", "name", far_end,
                        "netns", ns], check=True)
        subprocess.run(["ip", "addr", "add", f"10.247.{n}.1/24", "dev", host_end], check=True)
        subprocess.run([*sh, "set", host_end, "up"], check=True)
        for argv in (["addr", "add", f"10.247.{n}.2/24", "dev", far_end],
                     ["link", "set", far_end, "up"], ["link", "set", "lo", "up"],
                     ["route", "add", "default", "via", f"10.247.{n}.1"]):
            subprocess.run(["ip", "-n", ns, *argv], check=True)
        yield f"10.247.{n}.2"
    finally:
        undo()
        free_claim(claimed)


def test_internal_network_vms_reach_each_other_only(cli: Ignite, testbox: str,
                                                    web: tuple[str, int],
                                                    net: tuple[str, str, str],
                                                    outside: str) -> None:
    """Two VMs on an --internal network reach each other and their gateway;
    even after adding a default route (they are root in their VMs) they reach
    neither `web` on the default network nor an address beyond the host, and
    `web` does not reach them. (`web` reaches that address: the control.)"""
    lab, n = claim_network("iso", tag=9)
    subnet = f"10.246.{n}.0/24"
    gw = f"10.246.{n}.1"
    mine = (*scope(PREFIX, net), f"10.246.{n}.", f"/{networks.host_names(cli.root, lab)[0]}/")
    before = snapshot(*mine, ports_of=(net[1],))
    cli("network", "create", lab, "--subnet", subnet, "--internal")
    names = ["in1", "in2"]
    try:
        for name in names:
            cli("run", testbox, "--name", name, *CNI, *SMALL, "--network", lab)
        for name in names:
            wait_console(cli, name, "TEST-READY")

        def ping(vm: str, ip: str) -> bool:
            return cli("exec", vm, "--", "/bin/busybox", "ping", "-c", "1", "-W", "2", ip,
                       check=False).returncode == 0

        in1, in2, w = ip_of(cli, "in1"), ip_of(cli, "in2"), ip_of(cli, "web")
        assert ping("in1", in2) and ping("in2", in1) and ping("in1", gw)
        assert ping("web", outside)
        assert "default" not in cli("exec", "in1", "--", "/bin/busybox", "ip", "route").stdout
        # no name servers: the host's are out of reach (and none was named)
        assert "nameserver" not in cli("exec", "in1", "--", "/bin/busybox", "cat",
                                       "/etc/resolv.conf").stdout
        for name in names:
            cli("exec", name, "--", "/bin/busybox", "ip", "route", "add", "default", "via", gw)
        assert not ping("in1", w) and not ping("in2", outside)
        assert not ping("in1", net[2].rsplit(".", 1)[0] + ".1")  # the host's other address
        assert not ping("web", in1)
        assert ping("in1", in2)
    finally:
        cli("rm", "-f", *names, check=False)
        cli("network", "rm", lab)
        free_claim(lab)
    assert snapshot(*mine, ports_of=(net[1],)) == before
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert networks.host_names(cli.root, lab)[1] not in rules


def test_network_faults_at_the_cli(cli: Ignite, testbox: str,
                                   net: tuple[str, str, str]) -> None:
    """Each is one clear line, exit 1, no VM and nothing left: an --ip outside
    the network, a subnet overlapping another network's, and a plugin missing
    from a network's chain (after the bridge plugin has added its part: the
    ADD fails half-way)."""
    lab, n = claim_network("flt", tag=10)
    cni_name, bridge = networks.host_names(cli.root, lab)
    mine = (*scope(PREFIX, net), f"10.245.{n}.", f"/{cni_name}/")
    cli("network", "create", lab, "--subnet", f"10.245.{n}.0/24")
    try:
        before = snapshot(*mine, ports_of=(net[1], bridge))

        def refused(*args: str) -> str:
            res = cli(*args, check=False)
            # (run's own progress lines, "Created VM"/"Removed VM", may come first)
            errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
            assert res.returncode == 1 and len(errors) == 1, res
            assert "Traceback" not in res.stderr, res
            return res.stderr

        assert "is not in network" in refused("run", testbox, "--name", "bad", *CNI, *SMALL,
                                              "--network", lab, "--ip", "10.99.0.5")
        assert "overlaps" in refused("network", "create", f"ovl{n}", "--subnet",
                                     f"10.245.{n}.128/25")
        conf_path = cli.root / "cni" / f"{lab}.conflist"
        conf = json.loads(conf_path.read_text())
        conf["plugins"].insert(1, {"type": "ignitevm-no-such-plugin"})
        conf_path.write_text(json.dumps(conf))
        err = refused("run", testbox, "--name", "bad", *CNI, *SMALL, "--network", lab)
        assert "'ignitevm-no-such-plugin' is not installed" in err
        assert "apt-get install containernetworking-plugins" in err
        assert "bad" not in cli("ps", "-a").stdout
        assert snapshot(*mine, ports_of=(net[1], bridge)) == before
    finally:
        cli("network", "rm", lab)
        free_claim(lab)
