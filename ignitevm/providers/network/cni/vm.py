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
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ignitevm.errors import Conflict, IgniteError
from ignitevm.log import log
from ignitevm.providers.network.base import Forward, NetPlan
from ignitevm.providers.network.cni import chain, conflist, netns, sweep
from ignitevm.util.fs import flock

RECORD = "network.json"
LAST_IP = "network.ip"  # the address to ask for again at the next start
IFNAME = "eth0"


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


def _attachment(rec: dict[str, Any]) -> chain.Attachment:
    return chain.Attachment(rec["containerID"], str(netns.path(rec["netns"])), rec["ifname"],
                            rec.get("args", ""), rec.get("runtime") or {})


def release(d: Path) -> None:
    """Undo the attachment recorded in ``d``, whatever state it was left in."""
    rec = read(d)
    if rec is None:
        return
    conf, cid = rec["conflist"], rec["containerID"]
    result = rec.get("result")
    addresses = [ip["address"] for ip in (result or {}).get("ips") or []]
    if not addresses:  # killed before the result was cached: the leases tell
        addresses = [f"{f.name}/32" for f in sweep.leases(conf, cid)]
        if addresses:
            result = {"cniVersion": conf.get("cniVersion", conflist.CNI_VERSION),
                      "ips": [{"address": a} for a in addresses]}
    complete = result is not None and netns.exists(rec["netns"])
    try:
        chain.delete(conf, _attachment(rec), result)
    except IgniteError as exc:
        log.debug("CNI DEL of %s: %s (sweeping instead)", cid, exc)
        complete = False
    if complete:  # the plugins released all they made; leases are checked anyway
        sweep.leases_of(conf, cid)
    else:
        sweep.all_for(conf, cid, addresses)
    netns.delete(rec["netns"])
    (d / RECORD).unlink(missing_ok=True)
    log.debug("released the network of %s", cid)


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


def check_ports(root: Path, d: Path | None, forwards: tuple[Forward, ...]) -> None:
    """Refuse a host port another VM maps (portmap would take a second rule
    and silently lose it) or any process on the host uses."""
    vm_dirs = root / "vm"
    held = held_ports(vm_dirs.iterdir() if vm_dirs.is_dir() else iter(()), d)
    for f in forwards:
        other = held.get((f.proto, f.host_port))
        if other is not None:
            raise Conflict(f"host port {f.host_port}/{f.proto} is already mapped to "
                           f"VM {other!r}", hint="choose another host port with -p")
        check_port_free(f)


def check_port_free(f: Forward) -> None:
    """A bind test: is some process on the host using this port?"""
    import socket

    kind = socket.SOCK_STREAM if f.proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((f.host_ip if f.host_ip not in ("", "0.0.0.0") else "0.0.0.0", f.host_port))
        except OSError as exc:
            raise Conflict(f"host port {f.host_port}/{f.proto} is already in use on this host "
                           f"({exc.strerror})",
                           hint="choose another host port with -p, or stop what uses it") from exc


def _requested_ip(d: Path, conf: dict[str, Any], cid: str, want: str) -> str:
    if want:
        return want
    try:
        last = (d / LAST_IP).read_text().strip()
    except FileNotFoundError:
        return ""
    owner = sweep.lease_owner(conf, last)
    return last if owner in (None, cid) else ""  # taken by another: take a new one


@contextlib.contextmanager
def attached(root: Path, d: Path, prefix: str, uid: str, forwards: tuple[Forward, ...],
             network: str = conflist.DEFAULT, ip: str = "", name: str = "") -> Iterator[NetPlan]:
    """Attach the VM in ``d`` to ``network`` for one start; yields the plan for
    QEMU and the guest. Any failure in the body releases everything; the
    tap's fd is closed at the end either way (QEMU holds its own)."""
    from ignitevm.providers.network.cni import tap as tapmod

    release(d)  # DEL anything an earlier run of this VM left (killed CLI, dead QEMU, reboot)
    conf = conflist.load(root, network)
    cid = container_id(prefix, uid)
    requested = _requested_ip(d, conf, cid, ip)
    rec: dict[str, Any] = {
        "plugin": "cni", "name": name, "network": network, "netns": cid, "containerID": cid,
        "ifname": IFNAME, "conflist": conf,
        "args": f"IgnoreUnknown=1;IP={requested}" if requested else "",
        "runtime": {"portMappings": [
            {"hostPort": f.host_port, "containerPort": f.guest_port, "protocol": f.proto,
             **({"hostIP": f.host_ip} if f.host_ip not in ("", "0.0.0.0") else {})}
            for f in forwards]},
        "ports": [[f.proto, f.host_ip, f.host_port] for f in forwards],
        "result": None,
    }
    with contextlib.ExitStack() as undo:
        (root / "cni").mkdir(parents=True, exist_ok=True)
        with flock(root / "cni" / ".ports.lock"):
            check_ports(root, d, forwards)
            _write(d, rec)  # before anything is made: the next command can finish the job
        undo.callback(release, d)
        netns.create(cid)
        result = chain.add(conf, _attachment(rec))
        rec["result"] = result
        _write(d, rec)
        plan = _plan(result, forwards)
        (d / LAST_IP).write_text(plan.address + "\n")
        tap = tapmod.open_tap(cid, IFNAME)
        try:
            yield plan._replace(mac=tap.mac, tap_fd=tap.fd)
        finally:
            os.close(tap.fd)
        undo.pop_all()


def _plan(result: dict[str, Any], forwards: tuple[Forward, ...]) -> NetPlan:
    ips = [ip for ip in result.get("ips") or [] if "." in ip.get("address", "")]
    if not ips:
        raise IgniteError("the network gave the VM no IPv4 address",
                          hint="check the ipam section of the network's conflist")
    gateway = ips[0].get("gateway", "")
    for r in result.get("routes") or []:
        if r.get("dst") == "0.0.0.0/0" and r.get("gw"):
            gateway = r["gw"]
    dns = result.get("dns") or {}
    servers = dns.get("nameservers") or host_nameservers()
    return NetPlan(plugin="cni", mac="", guest_ip=ips[0]["address"], gateway=gateway,
                   dns=" ".join(servers), forwards=forwards,
                   dns_search=" ".join(dns.get("search") or []))


def host_nameservers() -> list[str]:
    """The host's name servers a VM can reach (not the host's loopback ones)."""
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver" and not words[1].startswith(
                    ("127.", "::1")):
                out.append(words[1])
    return out


def release_if_dead(d: Path, running: Callable[[], bool]) -> bool:
    """Release a VM's network if its QEMU is gone but the record is still
    there (it died by itself, the host rebooted, the CLI was killed); skipped
    while another command holds the VM's lock. True if it released."""
    if not (d / RECORD).exists():
        return False
    try:
        with flock(d / ".lock", blocking=False):
            if running():
                return False
            release(d)
    except BlockingIOError:
        return False
    return True
