"""A VM's CNI attachment, kept in a record in the VM's folder.

The record (``network.json``) is written before the namespace and CNI ADD,
so whatever kills the CLI half-way, the next command finds what to release;
the ADD result is cached in it as soon as the chain returns, before anything
needs it. Release is DEL in reverse with that result, then a sweep by the
attachment's id and addresses, then the namespace; it is safe to repeat and
runs on every path: stop, kill, rm, a failed start, and the first command
that finds the VM's QEMU gone while the record is still there.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ignitevm.api.validation import printable
from ignitevm.errors import Conflict, IgniteError, InvalidInput
from ignitevm.log import log
from ignitevm.providers.network.base import Forward, NetPlan, check_port_free
from ignitevm.providers.network.cni import chain, conflist, netns, sweep
from ignitevm.providers.network.cni.plugins import CNIError
from ignitevm.util.fs import flock

if TYPE_CHECKING:
    import threading

RECORD = "network.json"
LAST_IP = "network.ip"  # the addresses to ask for again at the next start


def container_id(prefix: str, uid: str) -> str:
    return f"{prefix or 'ignite'}-{uid}"


def _write(d: Path, rec: dict[str, Any]) -> None:
    # Whole or not at all, without fsync: a killed CLI loses nothing that was
    # written, and after a power loss the namespaces are gone anyway.
    tmp = d / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(rec) + "\n")
    os.replace(tmp, d / RECORD)


def read(d: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads((d / RECORD).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


class Want(NamedTuple):
    """One interface the VM asks for: a network, maybe an address and a MAC."""

    network: str = conflist.DEFAULT
    ip: str = ""
    mac: str = ""


def _attachment(rec: dict[str, Any], att: dict[str, Any]) -> chain.Attachment:
    return chain.Attachment(rec["containerID"], str(netns.path(rec["netns"])), att["ifname"],
                            att.get("args", ""), att.get("runtime") or {})


def _attachments(rec: dict[str, Any]) -> list[dict[str, Any]]:
    if "attachments" in rec:
        return list(rec["attachments"])
    return [rec]  # (one network, the first record form)


def release(d: Path) -> None:
    """Undo the attachments recorded in ``d``, whatever state they were left in."""
    rec = read(d)
    if rec is None:
        return
    cid = rec["containerID"]
    if rec.get("state") == "adding" and rec.get("pid") != os.getpid():
        from ignitevm.providers.network.cni.plugins import stop_strays

        stop_strays(cid)  # the CLI that made it was killed, maybe in the middle of ADD
    present = netns.exists(rec["netns"])
    atts = _attachments(rec)
    shared = _SharedSweep()
    complete = True
    try:
        for i, att in enumerate(reversed(atts)):
            complete &= _release_one(rec, att, present,
                                     shared.start if i == len(atts) - 1 else None)
    finally:
        shared.finish()
    if not complete:  # (a sweep by id may have emptied the shared chains only now)
        sweep.shared_chains()
    netns.delete(rec["netns"])
    (d / RECORD).unlink(missing_ok=True)
    log.debug("released the network of %s", cid)


class _SharedSweep:
    """sweep.shared_chains (the last attachment gone: the host's iptables as
    before the first), run in a thread beside the last plugin's DEL once the
    firewall and portmap plugins, whose chains they are, have released theirs.
    Both mostly wait for the kernel (each program that removed netfilter
    objects waits ~14 ms for them to be freed as it ends), so side by side
    they take the time of one. Run by ``finish`` if it was not started."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        import threading

        def body() -> None:
            try:
                sweep.shared_chains()
            except BaseException as exc:  # (raised in the caller's thread by finish)
                self.error = exc

        self.thread = threading.Thread(target=body, name="cni-shared-sweep")
        self.thread.start()

    def finish(self) -> None:
        if self.thread is None:
            sweep.shared_chains()
            return
        self.thread.join()
        if self.error is not None:
            raise self.error


def _release_one(rec: dict[str, Any], att: dict[str, Any], present: bool,
                 before_last: Callable[[], None] | None = None) -> bool:
    """DEL one attachment (sweeping what DEL could not release); whether DEL
    ran completely. ``before_last``: see chain.delete; not called if the
    chain's first plugin makes shared chains itself."""
    conf, cid = att["conflist"], rec["containerID"]
    if before_last is not None and conf["plugins"][0].get("type") in sweep.SHARED_OWNERS:
        before_last = None
    result = att.get("result")
    addresses = [ip["address"] for ip in (result or {}).get("ips") or []]
    if not addresses:  # killed before the result was cached: the leases tell
        addresses = [f"{f.name}/32" for f in sweep.leases(conf, cid)]
        if addresses:
            result = {"cniVersion": conf.get("cniVersion", conflist.CNI_VERSION),
                      "ips": [{"address": a} for a in addresses]}
    complete = result is not None and present
    try:
        chain.delete(conf, _attachment(rec, att), result, before_last)
    except IgniteError as exc:
        log.debug("CNI DEL of %s on %s: %s (sweeping instead)", cid, conf["name"], exc)
        complete = False
    if complete:  # the plugins released all they made; leases are checked anyway
        sweep.leases_of(conf, cid)
    else:
        sweep.all_for(conf, cid, addresses)
    return complete


def held_ports(vm_dirs: Iterator[Path], skip: Path | None) -> dict[tuple[str, int], str]:
    """Host ports claimed by other VMs' records, and by whom."""
    out = {}
    for d in vm_dirs:
        if d == skip:
            continue
        rec = read(d) or {}
        for proto, _ip, port in rec.get("ports") or []:
            out[(proto, int(port))] = rec.get("name") or d.name
    return out


def check_ports(root: Path, d: Path | None, forwards: tuple[Forward, ...],
                cid: str = "") -> None:
    """Refuse a host port another VM of this root maps, or any port map on the
    host does (portmap would take a second rule and silently lose it; a VM's
    own listener on it would never see a connection), or any process on the
    host uses (every network plugin's check)."""
    if not forwards:
        return
    vm_dirs = root / "vm"
    held = held_ports(vm_dirs.iterdir() if vm_dirs.is_dir() else iter(()), d)
    mapped = sweep.mapped_ports()
    for f in forwards:
        other = held.get((f.proto, f.host_port))
        if other is not None:
            raise Conflict(f"host port {f.host_port}/{f.proto} is already mapped to "
                           f"VM {other!r}", hint="choose another host port with -p")
        owner = mapped.get((f.proto, f.host_port))
        if owner is not None and owner != cid:  # (its own, left by an earlier run: DEL'd)
            raise Conflict(f"host port {f.host_port}/{f.proto} is already mapped on this "
                           f"host by a CNI port map ({printable(owner)}: a VM of another "
                           "root, containerd or Kubernetes)",
                           hint="choose another host port with -p")
        check_port_free(f)


def check_wants(root: Path, wants: list[tuple[str, str]]) -> None:
    """Each network exists and the address asked for is one of its hosts."""
    for network, ip in wants:
        conf = conflist.load(root, network)
        if ip:
            subnets = conflist.subnets(conf)
            addr = ipaddress.ip_address(ip)
            if not any(addr in (n := ipaddress.ip_network(s, strict=False)) and addr not in (
                    n.network_address, n.broadcast_address) for s in subnets):
                raise InvalidInput(f"--ip {ip} is not in network {network!r} "
                                   f"({', '.join(subnets)})")
            if addr in conflist.gateways(conf):
                raise InvalidInput(f"--ip {ip} is the gateway of network {network!r} "
                                   "(the host's own address on it)",
                                   hint="choose another address in "
                                   f"{', '.join(subnets)}, or leave --ip out")
            if sweep.lease_owner(conf, ip) is not None:
                raise Conflict(f"address {ip} in network {network!r} is taken",
                               hint="choose another --ip, or leave it out")


def _requested_ip(last: str, conf: dict[str, Any], cid: str, want: Want) -> str:
    """The address to ask host-local for: --ip, else the one the VM had."""
    if want.ip:
        owner = sweep.lease_owner(conf, want.ip)
        if owner not in (None, cid):
            raise Conflict(f"address {want.ip} in network {want.network!r} is taken",
                           hint="choose another --ip, or leave it out")
        return want.ip
    if not last:
        return ""
    owner = sweep.lease_owner(conf, last)
    in_subnet = any(ipaddress.ip_address(last) in ipaddress.ip_network(s, strict=False)
                    for s in conflist.subnets(conf))
    return last if in_subnet and owner in (None, cid) else ""  # else a new one


def _port_maps(forwards: tuple[Forward, ...]) -> dict[str, Any]:
    return {"portMappings": [
        {"hostPort": f.host_port, "containerPort": f.guest_port, "protocol": f.proto,
         **({"hostIP": f.host_ip} if f.host_ip not in ("", "0.0.0.0") else {})}
        for f in forwards]}


def _last_ips(d: Path) -> list[str]:
    try:
        return (d / LAST_IP).read_text().split()
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def attached(root: Path, d: Path, prefix: str, uid: str, forwards: tuple[Forward, ...],
             wants: tuple[Want, ...] = (Want(),), dns: tuple[str, ...] = (),
             search: tuple[str, ...] = (), name: str = "") -> Iterator[NetPlan]:
    """Attach the VM in ``d`` to its networks (eth0, eth1, … in one namespace)
    for one start; yields the plan for QEMU and the guest (more interfaces in
    ``plan.more``). Port maps go to the first network. Any failure in the body
    releases everything; the taps' fds are closed at the end either way (QEMU
    holds its own)."""
    from ignitevm.providers.network.cni import tap as tapmod

    release(d)  # DEL anything an earlier run of this VM left (killed CLI, dead QEMU, reboot)
    cid = container_id(prefix, uid)
    last = _last_ips(d)
    atts = []
    for i, want in enumerate(wants):
        conf = conflist.load(root, want.network)
        if i == 0 and forwards and not any(p.get("type") == "portmap"
                                           for p in conf["plugins"]):
            raise InvalidInput(f"network {want.network!r} takes no port maps (-p)",
                               hint="publish ports on a network with the portmap plugin")
        requested = _requested_ip(last[i] if i < len(last) else "", conf, cid, want)
        atts.append({"network": want.network, "conflist": conf, "ifname": f"eth{i}",
                     "args": f"IgnoreUnknown=1;IP={requested}" if requested else "",
                     "runtime": _port_maps(forwards) if i == 0 else {}, "result": None})
    rec: dict[str, Any] = {
        "plugin": "cni", "name": name, "netns": cid, "containerID": cid,
        "state": "adding", "pid": os.getpid(),
        "ports": [[f.proto, f.host_ip, f.host_port] for f in forwards], "attachments": atts,
    }
    with contextlib.ExitStack() as undo:
        (root / "cni").mkdir(parents=True, exist_ok=True)
        with flock(root / "cni" / ".ports.lock"):
            check_ports(root, d, forwards, cid)
            _write(d, rec)  # before anything is made: the next command can finish the job
        undo.callback(release, d)
        netns.create(cid)
        plans = []
        for i, (want, att) in enumerate(zip(wants, atts, strict=True)):
            att["result"] = _add(att, rec, want)
            _write(d, rec)  # the result is cached before anything uses it
            plans.append(_plan(att["result"], forwards if i == 0 else (), dns, search,
                               internal=conflist.is_internal(att["conflist"])))
        (d / LAST_IP).write_text(" ".join(p.address for p in plans) + "\n")
        taps = []
        try:
            for i, want in enumerate(wants):
                taps.append(tapmod.open_tap(cid, f"eth{i}", f"tap{i}", want.mac,
                                            plans[i].address))
            full = [p._replace(mac=t.mac, tap_fd=t.fd) for p, t in zip(plans, taps, strict=True)]
            rec["state"] = "ready"
            _write(d, rec)
            yield full[0]._replace(more=tuple(full[1:]))
        finally:
            for t in taps:
                os.close(t.fd)
        undo.pop_all()


def _add(att: dict[str, Any], rec: dict[str, Any], want: Want) -> dict[str, Any]:
    conf = att["conflist"]
    internal = conflist.is_internal(conf)
    try:
        with sweep.adding():
            if internal:  # (the host's drops are in place before the VM is on the bridge)
                from ignitevm.providers.network.cni import isolate

                isolate.ensure(conflist.bridge(conf), conflist.gateway(conf))
            result = chain.add(conf, _attachment(rec, att))
            if internal:
                isolate.first_jumps()  # (the firewall plugin may have put its jump on top)
            return result
    except CNIError as exc:
        if "no IP addresses available" in str(exc):
            subnet = ", ".join(conflist.subnets(conf))
            raise Conflict(f"no addresses left in {want.network} ({subnet})",
                           hint="remove VMs from it, or use another network") from None
        if want.ip and ("not available" in str(exc) or "out of range" in str(exc)
                        or "not in" in str(exc)):
            raise Conflict(f"--ip {want.ip} cannot be given in {want.network}: {exc}") from None
        raise


def _plan(result: dict[str, Any], forwards: tuple[Forward, ...], dns: tuple[str, ...],
          search: tuple[str, ...], internal: bool = False) -> NetPlan:
    """What the guest gets from one network's result. Name servers: the ones
    the user named (--dns, the manifest, the conflist's dns), else the host's
    for a network that reaches out; an --internal network's guest cannot reach
    the host's, so it gets none (nor a view of the host's config)."""
    ips = [ip for ip in result.get("ips") or [] if "." in ip.get("address", "")]
    if not ips:
        raise IgniteError("the network gave the VM no IPv4 address",
                          hint="check the ipam section of the network's conflist")
    gateway = ""  # only a network with a default route gives one (not --internal)
    routes = []  # the others a conflist's ipam names (IPv4: the guest gets no IPv6 address)
    for r in result.get("routes") or []:
        dst = str(r.get("dst") or "")
        if dst == "0.0.0.0/0" and r.get("gw"):
            gateway = r["gw"]
        elif "." in dst and dst != "0.0.0.0/0":
            routes.append((dst, str(r.get("gw") or "")))
    given = result.get("dns") or {}
    servers = list(dns) or given.get("nameservers") or ([] if internal else host_nameservers())
    return NetPlan(plugin="cni", mac="", guest_ip=ips[0]["address"], gateway=gateway,
                   dns=" ".join(servers), forwards=forwards,
                   dns_search=" ".join(search or given.get("search") or []),
                   routes=tuple(routes))


def host_nameservers() -> list[str]:
    """The host's name servers a VM can reach (not the host's loopback ones):
    the first three, all the host's own resolver uses."""
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver" and not words[1].startswith(
                    ("127.", "::1")):
                out.append(words[1])
    from ignitevm.api.validation import MAX_NAMESERVERS

    return out[:MAX_NAMESERVERS]


def release_if_dead(d: Path, running: Callable[[], bool]) -> bool:
    """Release a VM's network if its QEMU is gone but the record is still
    there (it died by itself, the host rebooted, the CLI was killed); skipped
    while another command holds the VM's lock. True if it released."""
    try:
        with flock(d / ".lock", blocking=False):
            if running():
                return False
            release(d)
    except BlockingIOError:
        return False
    return True
