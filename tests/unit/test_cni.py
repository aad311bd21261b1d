"""The CNI driver against the real plugins, in throwaway namespaces (no VM).

Needs root and Debian's containernetworking-plugins; skips otherwise. Each
test's network has its own bridge and subnet, removed at the end.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ignitevm.errors import Conflict, IgniteError, InvalidInput, MissingTool, NotFound
from ignitevm.providers import network
from ignitevm.providers.network.base import Forward
from ignitevm.providers.network.cni import (
    chain,
    conflist,
    netns,
    networks,
    plugins,
    sweep,
    vm,
)
from ignitevm.util.fs import flock
from tests.helpers.cninet import (
    claim_network,
    free_claim,
    remove_network,
    require_cni,
    scope,
    snapshot,
    write_default,
)

# (the attachments' id prefix, this run's own: other runs on this host use the
# same VM ids at the same time)
PREFIX = f"ignite-unit{os.getpid()}"


@pytest.fixture
def net(tmp_path: Path) -> Iterator[tuple[Path, str, str, str]]:
    require_cni()
    root = tmp_path / "root"
    (root / "vm").mkdir(parents=True)
    name, bridge, subnet = write_default(root, tag=1)
    mine = scope(f"{PREFIX}-", (name, bridge, subnet))
    before = snapshot(*mine, ports_of=(bridge,))
    try:
        yield root, name, bridge, subnet
        assert snapshot(*mine, ports_of=(bridge,)) == before
    finally:
        for d in (root / "vm").iterdir():
            vm.release(d)
        remove_network(name, bridge)


def vmdir(root: Path, uid: str) -> Path:
    d = root / "vm" / uid
    d.mkdir()
    return d


def ip_in(ns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                          text=True, check=False).stdout


def test_add_del_chain(net: tuple[Path, str, str, str]) -> None:
    root, name, _bridge, subnet = net
    conf = conflist.load(root)
    ns = f"{PREFIX}-chain"
    netns.create(ns)
    att = chain.Attachment(ns, str(netns.path(ns)), "eth0", runtime={"portMappings": [
        {"hostPort": 18931, "containerPort": 80, "protocol": "tcp"}]})
    try:
        result = chain.add(conf, att)
        addr = result["ips"][0]["address"]
        assert addr.startswith(subnet.rsplit(".", 2)[0])
        assert (Path("/var/lib/cni/networks") / name / addr.split("/")[0]).exists()
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        assert f'id: \\"{ns}\\"' in rules and "--dport 18931" in rules
        chain.delete(conf, att, result)
        chain.delete(conf, att, result)  # DEL is safe to repeat
        assert f'id: \\"{ns}\\"' not in subprocess.run(
            ["iptables-save"], capture_output=True, text=True).stdout
    finally:
        netns.delete(ns)
        # (the plugins driven by hand keep their host-wide chains: a release tidies them)
        sweep.shared_chains()


def test_error_json_is_one_clear_error(net: tuple[Path, str, str, str]) -> None:
    root, _name, _bridge, _subnet = net
    conf = conflist.load(root)
    ns = f"{PREFIX}-err"
    netns.create(ns)
    att = chain.Attachment(ns, str(netns.path(ns)), "eth0", args="IgnoreUnknown=1;IP=192.0.2.9")
    try:
        with pytest.raises(plugins.CNIError) as err:
            chain.add(conf, att)
        assert "CNI plugin bridge failed on ADD" in str(err.value)
        assert "192.0.2.9" in str(err.value)
        chain.delete(conf, att, None)
    finally:
        netns.delete(ns)
        sweep.shared_chains()


def test_missing_plugin_names_the_package(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setattr(plugins, "SEARCH_PATH", (str(tmp_path),))
    monkeypatch.delenv("IGNITE_CNI_PATH", raising=False)
    with pytest.raises(MissingTool) as err:
        plugins.find("bridge")
    assert "containernetworking-plugins" in (err.value.hint or "")


def test_attach_gives_mac_ip_tap_and_releases(net: tuple[Path, str, str, str]) -> None:
    root, _name, _bridge, _subnet = net
    d = vmdir(root, "0123456789abcdef")
    fwd = (Forward("tcp", "", 18932, 80),)
    with vm.attached(root, d, PREFIX, "0123456789abcdef", fwd) as plan:
        rec = json.loads((d / vm.RECORD).read_text())
        result = rec["attachments"][0]["result"]
        assert result["ips"][0]["address"] == plan.guest_ip  # cached before use
        ns = rec["netns"]
        assert plan.tap_fd >= 0 and plan.gateway
        assert plan.mac in ip_in(ns, "ip", "link", "show", "eth0")
        assert "Redirect to device tap0" in ip_in(ns, "tc", "filter", "show", "dev", "eth0",
                                                  "ingress")
        first_ip = plan.address
    assert netns.exists(ns)  # the attachment outlives the CLI's part in the start
    vm.release(d)
    vm.release(d)  # safe to repeat
    assert not netns.exists(ns)
    # The next start asks for the same address again.
    with vm.attached(root, d, PREFIX, "0123456789abcdef", ()) as plan:
        assert plan.address == first_ip
    vm.release(d)


def test_failure_in_body_releases_everything(net: tuple[Path, str, str, str]) -> None:
    root, *_ = net
    d = vmdir(root, "1123456789abcdef")
    with pytest.raises(RuntimeError), vm.attached(root, d, PREFIX, "1123456789abcdef",
                                                  ()):
        raise RuntimeError("QEMU failed")
    assert not (d / vm.RECORD).exists()


def test_add_failing_half_way_leaves_nothing(net: tuple[Path, str, str, str]) -> None:
    root, name, bridge, subnet = net
    conf = conflist.bridge_conflist(name, bridge, subnet)
    conf["plugins"].insert(1, {"type": "tuning", "sysctl": {"net.no.such.knob": "1"}})
    conflist.write(root, "broken", conf)
    d = vmdir(root, "2123456789abcdef")
    with pytest.raises(IgniteError), vm.attached(root, d, PREFIX, "2123456789abcdef",
                                                 (), (vm.Want("broken"),)):
        pass
    assert not (d / vm.RECORD).exists()


def test_lost_namespace_is_swept(net: tuple[Path, str, str, str]) -> None:
    """A host reboot: the namespace is gone, the record stays; release sweeps
    the masquerade rules, the port maps and the lease by the attachment's id."""
    root, *_ = net
    d = vmdir(root, "3123456789abcdef")
    with vm.attached(root, d, PREFIX, "3123456789abcdef",
                     (Forward("tcp", "", 18933, 80),)):
        pass
    subprocess.run(["ip", "netns", "delete", f"{PREFIX}-3123456789abcdef"], check=True)
    vm.release(d)


def test_killed_before_the_result_was_cached(net: tuple[Path, str, str, str]) -> None:
    root, *_ = net
    d = vmdir(root, "4123456789abcdef")
    with vm.attached(root, d, PREFIX, "4123456789abcdef", ()):
        pass
    rec = json.loads((d / vm.RECORD).read_text())
    rec["attachments"][0]["result"] = None  # as if the CLI died between ADD and caching it
    (d / vm.RECORD).write_text(json.dumps(rec))
    vm.release(d)


def test_host_port_in_use_is_refused(net: tuple[Path, str, str, str]) -> None:
    root, *_ = net
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        d = vmdir(root, "5123456789abcdef")
        with pytest.raises(Conflict, match="already in use"), vm.attached(
                root, d, PREFIX, "5123456789abcdef", (Forward("tcp", "", port, 80),)):
            pass
    # ...and a port another VM maps (portmap itself would accept it silently).
    d1, d2 = vmdir(root, "6123456789abcdef"), vmdir(root, "7123456789abcdef")
    with vm.attached(root, d1, PREFIX, "6123456789abcdef",
                     (Forward("tcp", "", 18934, 80),)):
        pass
    with pytest.raises(Conflict, match="already mapped"), vm.attached(
            root, d2, PREFIX, "7123456789abcdef", (Forward("tcp", "", 18934, 80),)):
        pass
    # A user-mode or passt VM's listener there would never see a connection: the
    # port map's DNAT takes them (and a bind test alone does not see a DNAT rule).
    with pytest.raises(Conflict, match="already mapped to VM"):
        network.check_host_ports([("tcp", "", 18934, 80)], root)
    # Nor may a VM of another root (or containerd, Kubernetes) map it: only the host's
    # iptables say so.
    other = root.parent / "other-root"
    with pytest.raises(Conflict, match=rf"already mapped on this host by a CNI port map "
                       rf"\({PREFIX}-6123456789abcdef"):
        vm.check_ports(other, None, (Forward("tcp", "", 18934, 80),))
    with pytest.raises(Conflict, match="already mapped on this host"):
        network.check_host_ports([("tcp", "", 18934, 80)], other)
    network.check_host_ports([("udp", "", 18934, 80)], other)  # (another protocol: free)
    vm.release(d1)
    assert not (d2 / vm.RECORD).exists()
    vm.check_ports(other, None, (Forward("tcp", "", 18934, 80),))  # (released: free again)


@pytest.fixture
def lab(net: tuple[Path, str, str, str]) -> Iterator[tuple[Path, networks.Network]]:
    """A second network, /29: five addresses for VMs."""
    root = net[0]
    name, n = claim_network("lab", tag=3)  # (its own name, bridge and subnet on this host)
    made = networks.create(root, name, f"10.251.{n}.0/29")
    try:
        yield root, made
    finally:
        networks.remove(root, made.name, [])
        free_claim(made.name)


def test_two_networks_a_mac_and_an_address(lab: tuple[Path, networks.Network]) -> None:
    root, made = lab
    d = vmdir(root, "8123456789abcdef")
    want_ip = made.subnet.rsplit(".", 1)[0] + ".5"
    wants = (vm.Want("default", mac="02:11:22:33:44:55"), vm.Want(made.name, ip=want_ip))
    with vm.attached(root, d, PREFIX, "8123456789abcdef", (), wants,
                     dns=("192.0.2.53",), search=("lab.example",)) as plan:
        assert plan.mac == "02:11:22:33:44:55" and plan.gateway
        assert plan.dns == "192.0.2.53" and plan.dns_search == "lab.example"
        (eth1,) = plan.more
        assert eth1.address == want_ip and eth1.tap_fd >= 0
        ns = f"{PREFIX}-8123456789abcdef"
        assert "02:11:22:33:44:55" in ip_in(ns, "ip", "link", "show", "eth0")
        assert want_ip in ip_in(ns, "ip", "addr", "show", "eth1")
    # The address is taken now: another VM asking for it is refused.
    with pytest.raises(Conflict, match="is taken"):
        vm.check_wants(root, [(made.name, want_ip)])
    vm.release(d)
    vm.check_wants(root, [(made.name, want_ip)])
    with pytest.raises(InvalidInput, match="is not in network"):
        vm.check_wants(root, [(made.name, "10.99.99.99")])
    with pytest.raises(NotFound):
        vm.check_wants(root, [("no-such-net", "")])


def test_a_full_network_says_so(lab: tuple[Path, networks.Network]) -> None:
    root, made = lab
    dirs = [vmdir(root, f"9{i}23456789abcde") for i in range(6)]
    for i, d in enumerate(dirs[:5]):
        with vm.attached(root, d, PREFIX, d.name, (), (vm.Want(made.name),)):
            pass
        assert i < 5
    with pytest.raises(Conflict, match=rf"no addresses left in {made.name} \({made.subnet}\)"), \
            vm.attached(root, dirs[5], PREFIX, dirs[5].name, (), (vm.Want(made.name),)):
        pass
    for d in dirs:
        vm.release(d)


def test_network_create_checks(net: tuple[Path, str, str, str]) -> None:
    root, _name, _bridge, subnet = net
    with pytest.raises(Conflict, match="overlaps"):
        networks.create(root, "clash", subnet)
    with pytest.raises(InvalidInput, match="invalid --subnet"):
        networks.create(root, "bad", "10.1.2.3/24")
    with pytest.raises(InvalidInput, match="not a host address"):
        networks.create(root, "bad", "10.252.0.0/24", gateway="10.253.0.1")
    with pytest.raises(InvalidInput, match="invalid network name"):
        networks.create(root, "default", "10.252.0.0/24")
    # A subnet the host already routes somewhere (its LAN here) would cut it off.
    routes = [(r, dev) for r, dev in networks.host_routes() if not dev.startswith("ig")]
    if routes:
        route, dev = routes[0]
        with pytest.raises(Conflict, match=rf"overlaps {route}, which this host routes to "
                           rf"{dev}"):
            networks.create(root, "lan", str(route))
    inuse, n = claim_network("inuse", tag=6)
    try:
        networks.create(root, inuse, f"10.252.{n}.0/24")
        with pytest.raises(Conflict, match="in use by VM 'web'"):
            networks.remove(root, inuse, ["web"])
        networks.remove(root, inuse, [])
        assert not conflist.path(root, inuse).exists()
    finally:
        free_claim(inuse)


def reaches(ns: str, ip: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "busybox", "ping", "-c", "1", "-W", "1",
                           ip], capture_output=True, check=False).returncode == 0


def filter_rules() -> list[str]:
    return subprocess.run(["iptables-save", "-t", "filter"], capture_output=True,
                          text=True, check=True).stdout.splitlines()


def test_internal_networks_get_only_the_name_servers_named(monkeypatch) -> None:
    """A guest on an --internal network cannot reach the host's name servers:
    it gets the ones the user named (--dns, the manifest, the conflist) or
    none, never the host's (no root needed)."""
    monkeypatch.setattr(vm, "host_nameservers", lambda: ["192.0.2.1"])
    result = {"ips": [{"address": "10.248.7.2/28"}],
              "routes": [{"dst": "10.99.0.0/16", "gw": "10.248.7.1"}]}
    assert vm._plan(result, (), (), (), internal=True).dns == ""
    assert vm._plan(result, (), ("10.248.7.1",), ("lab",), internal=True).dns == "10.248.7.1"
    given = {**result, "dns": {"nameservers": ["10.248.7.9"]}}
    assert vm._plan(given, (), (), (), internal=True).dns == "10.248.7.9"
    plan = vm._plan({**result, "routes": [*result["routes"], {"dst": "0.0.0.0/0",
                                                              "gw": "10.248.7.1"}]}, (), (), ())
    assert plan.dns == "192.0.2.1" and plan.gateway == "10.248.7.1"
    assert plan.routes == (("10.99.0.0/16", "10.248.7.1"),)  # the conflist's other routes


def test_internal_network_has_no_way_out(net: tuple[Path, str, str, str]) -> None:
    """Two attachments on an internal network and one on the test's default
    one. Each namespace's own stack stands in for its VM (the tap redirect is
    taken off eth0 to let it answer): the internal two reach each other and
    their gateway address; even with a default route added (a guest is root
    in its VM) they reach neither the other network, nor the host's other
    addresses, nor anything beyond; and nothing reaches them from outside."""
    root, _name, _bridge, subnet = net
    name, n = claim_network("iso", tag=4)
    made = networks.create(root, name, f"10.248.{n}.0/28", internal=True)
    dirs = [vmdir(root, f"a{i}23456789abcde") for i in range(3)]
    try:
        types = [p["type"] for p in made.conf["plugins"]]
        assert "portmap" not in types and made.internal
        plans = []
        for d, want in zip(dirs, ("iso", "iso", "default"), strict=True):
            with vm.attached(root, d, PREFIX, d.name, (),
                             (vm.Want(made.name if want == "iso" else "default"),)) as plan:
                plans.append(plan)
            subprocess.run(["tc", "-n", f"{PREFIX}-{d.name}", "qdisc", "del", "dev", "eth0",
                            "ingress"], check=True)
        (a, b, other), (nsa, nsb, nso) = plans, [f"{PREFIX}-{d.name}" for d in dirs]
        assert a.gateway == "" and other.gateway  # the internal guest gets no default route
        assert a.dns == "" and other.dns == " ".join(vm.host_nameservers())  # nor host DNS
        # The project's drops come first in FORWARD and INPUT, before the firewall
        # plugin's accepts for every VM address, and are there once each.
        rules = filter_rules()
        assert next(r for r in rules if r.startswith("-A FORWARD")) == \
            "-A FORWARD -j IGNITE-ISOLATE"
        assert next(r for r in rules if r.startswith("-A INPUT")) == \
            "-A INPUT -j IGNITE-ISOLATE-IN"
        assert len([r for r in rules if f"internal {made.bridge}" in r]) == 3
        assert reaches(nsa, b.address) and reaches(nsa, made.gateway)
        assert reaches(nso, other.gateway)
        for ns in (nsa, nsb):
            subprocess.run(["ip", "-n", ns, "route", "add", "default", "via", made.gateway],
                           check=True)
        assert not reaches(nsa, other.address)   # the other network's VM
        assert not reaches(nsa, other.gateway)   # the host's address on the other bridge
        assert not reaches(nso, a.address)       # and nothing in from the other side
        assert reaches(nsa, b.address)
        # A second ADD on the network adds no rule twice.
        vm.release(dirs[1])
        with vm.attached(root, dirs[1], PREFIX, dirs[1].name, (), (vm.Want(made.name),)):
            pass
        assert len([r for r in filter_rules() if f"internal {made.bridge}" in r]) == 3
        for d in dirs:
            vm.release(d)
        with pytest.raises(InvalidInput, match="takes no port maps"), vm.attached(
                root, dirs[0], PREFIX, dirs[0].name, (Forward("tcp", "", 18935, 80),),
                (vm.Want(made.name),)):
            pass
        assert not (dirs[0] / vm.RECORD).exists()
    finally:
        for d in dirs:
            vm.release(d)
        networks.remove(root, made.name, [])
        free_claim(made.name)
    # The rules went with the network (and the chains with the last of them).
    assert not [r for r in filter_rules() if made.bridge in r]
    assert subnet  # (the test's default network stays for the fixture's check)


def test_the_rules_of_a_vanished_internal_bridge_are_swept(
        net: tuple[Path, str, str, str]) -> None:
    """A bridge deleted behind the project's back (or gone with a reboot): the
    next release sweeps its rules; the next ADD puts them back."""
    root = net[0]
    name, n = claim_network("isp", tag=5)
    made = networks.create(root, name, f"10.247.{n}.0/28", internal=True)
    d = vmdir(root, "b123456789abcdef")
    try:
        with vm.attached(root, d, PREFIX, d.name, (), (vm.Want(made.name),)):
            pass
        vm.release(d)
        assert [r for r in filter_rules() if f"internal {made.bridge}" in r]
        subprocess.run(["ip", "link", "del", made.bridge], check=True)
        with vm.attached(root, d, PREFIX, d.name, ()):  # (any attachment's release)
            pass
        vm.release(d)
        assert not [r for r in filter_rules() if made.bridge in r]
        with vm.attached(root, d, PREFIX, d.name, (), (vm.Want(made.name),)):
            pass
        assert len([r for r in filter_rules() if f"internal {made.bridge}" in r]) == 3
    finally:
        vm.release(d)
        networks.remove(root, made.name, [])
        free_claim(made.name)
    assert not [r for r in filter_rules() if made.bridge in r]


def test_plugins_left_by_a_killed_cli_are_stopped_before_release() -> None:
    """A stand-in for a plugin still running for an attachment (a `sleep`
    with the plugin's environment): release must not race it."""
    proc = subprocess.Popen(["sleep", "60"], env={"CNI_CONTAINERID": f"{PREFIX}-stray"})
    try:
        deadline = time.monotonic() + 10   # (until the child's exec shows in /proc)
        while plugins.strays(f"{PREFIX}-stray") != [proc.pid] \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert plugins.strays(f"{PREFIX}-stray") == [proc.pid]
        plugins.stop_strays(f"{PREFIX}-stray")
        assert proc.wait(timeout=10) == -9
    finally:
        proc.kill()
        proc.wait()


def test_the_plugins_shared_chains_go_with_the_last_attachment(
        net: tuple[Path, str, str, str]) -> None:
    """The firewall and portmap plugins make host-wide chains at the first ADD;
    they go when the last attachment is released, unless something else (here
    an administrator's rule) still uses them. Other runs on this host may
    attach and release meanwhile: a chain may stay only while one of them (or
    the admin's rule) still has a rule in its table, which is looked at with
    the host's CNI lock held (no ADD half-done)."""
    root, _name, _bridge, subnet = net
    d = vmdir(root, "9123456789abcdef")
    # (our attachment's id and addresses, the admin's rule)
    mine = (f"{PREFIX}-", subnet.rsplit(".", 1)[0] + ".", "192.0.2.77")

    def settled() -> tuple[set[str], set[str]]:
        """The shared chains there, and those of the tables where another run's
        attachment has a rule of its own (not one of the plugins' fixed jumps)."""
        with flock(sweep.HOST_LOCK):
            text = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        there, held, table = set(), set(), ""
        for ln in text.splitlines():
            if ln.startswith("*"):
                table = ln[1:]
            elif ln.startswith(":CNI-"):
                there.add(ln[1:].split()[0])
            elif ln.startswith("-A ") and not any(t in ln for t in mine):
                words = shlex.split(ln)
                chains = sweep.SHARED.get(table, {})
                target = words[words.index("-j") + 1] if "-j" in words else ""
                if words[1] in chains and target not in chains[words[1]]:
                    held |= set(chains)
        return there & shared, held

    shared = {c for chains in sweep.SHARED.values() for c in chains}
    hostport = {"CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"}
    with vm.attached(root, d, PREFIX, d.name, (Forward("tcp", "", 18939, 80),)):
        assert shared <= settled()[0]
        admin = ["CNI-ADMIN", "-s", "192.0.2.77/32", "-j", "ACCEPT"]
        subprocess.run(["iptables", "-w", "-A", *admin], check=True)
    try:
        vm.release(d)
        there, held = settled()
        assert {"CNI-FORWARD", "CNI-ADMIN"} <= there   # still used by the admin's rule
        assert there & hostport <= held   # ours gone with our attachment
    finally:
        subprocess.run(["iptables", "-w", "-D", *admin], check=False)
    for _ in range(2):  # (a second sweep if another run's ADD made the first one wait)
        sweep.shared_chains()
        there, held = settled()
        if there <= held:
            break
    assert there <= held


def test_a_named_network_has_its_own_bridge_and_leases_per_root(tmp_path: Path) -> None:
    """Two roots (two users, two IGNITE_ROOTs) with a network of the same name:
    a bridge (IFNAMSIZ: at most 15 characters) and a lease folder each. A
    network made before keeps the names its conflist holds (no root needed)."""
    a, b = tmp_path / "a", tmp_path / "b"
    made = [networks.create(r, "lab", "10.77.0.0/24") for r in (a, b)]
    assert made[0].bridge != made[1].bridge and max(len(m.bridge) for m in made) <= 15
    dirs = {sweep.lease_dir(m.conf) for m in made}
    assert len(dirs) == 2 and all(d.name.startswith("ignite-lab-") for d in dirs)
    assert networks.get(a, "lab").bridge == made[0].bridge  # (read back, not recomputed)
    assert networks.host_names(a, "lab") == networks.host_names(a.parent / "a", "lab")
    old = conflist.bridge_conflist("ignite-old", "ign-0123456789", "10.78.0.0/24")
    conflist.write(a, "old", old)
    assert networks.get(a, "old").bridge == "ign-0123456789"
    assert sweep.lease_dir(networks.get(a, "old").conf).name == "ignite-old"
    assert conflist.bridge(conflist.load(a)) == conflist.bridge(conflist.load(b)) == "ignite0"


def test_ignited_frees_the_network_of_a_vm_whose_qemu_died(
        net: tuple[Path, str, str, str]) -> None:
    """An `ignited` pass that finds a managed VM's QEMU gone releases the VM's network
    (the attachment is real, made by the plugins; only no QEMU runs, as after it died)."""
    import copy

    from ignitevm.api.types import VM, ObjectMeta
    from ignitevm.daemon import reconcile
    from ignitevm.operations.context import Context

    root, *_ = net
    ctx, uid, source = Context(root=root), "8123456789abcdef", "dir:/x"
    have = VM(metadata=ObjectMeta(name="died", uid=uid,
                                  annotations={reconcile.MANAGED_BY: source}))
    d = ctx.store.dir(have)
    d.mkdir()
    ctx.store.save(have)
    with vm.attached(root, d, PREFIX, uid, (Forward("tcp", "", 18936, 80),)):
        pass
    ns = json.loads((d / vm.RECORD).read_text())["netns"]
    assert netns.exists(ns) and (("tcp", 18936) in sweep.mapped_ports())
    want = copy.deepcopy(have)
    want.status.running = False
    reconcile.Reconciler(ctx, source)._one(want, have)
    assert not (d / vm.RECORD).exists() and not netns.exists(ns)
    assert ("tcp", 18936) not in sweep.mapped_ports()
