"""Named networks: each one a conflist of its own in the project's folder
(``ignite network create lab --subnet 10.77.0.0/24``). The default network
is Ignite's and cannot be removed. A folder shared with other tools
(IGNITE_CNI_CONF_DIR) may hold their conflists too: they are listed and can
be joined, but never removed (see :func:`own`)."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path
from typing import Any, NamedTuple

from ignitevm.errors import Conflict, InvalidInput, NotFound
from ignitevm.log import log
from ignitevm.providers.network.cni import conflist


class Network(NamedTuple):
    name: str
    conf: dict[str, Any]
    own: bool = True  # made by the project (see own()); others are never removed

    @property
    def bridge(self) -> str:
        return conflist.bridge(self.conf)

    @property
    def subnet(self) -> str:
        return (conflist.subnets(self.conf) or [""])[0]

    @property
    def gateway(self) -> str:
        return conflist.gateway(self.conf)

    @property
    def internal(self) -> bool:
        return conflist.is_internal(self.conf)


def host_names(root: Path, name: str) -> tuple[str, str]:
    """The host-wide names of network ``name`` of this root: its CNI network
    name (which names its lease folder, /var/lib/cni/networks/<it>, and its
    rules' comments) and its bridge (at most 15 characters, IFNAMSIZ). Both
    hold a short key of the root's conflist folder: two roots (two users, two
    IGNITE_ROOTs) with a network of the same name get a bridge and leases each.
    (Roots that share a conflist folder through IGNITE_CNI_CONF_DIR share its
    networks, as they should.) They are written in the conflist when the
    network is made and read from it afterwards: a network made before keeps
    the names it has."""
    key = hashlib.sha256(str(conflist.conf_dir(root).resolve()).encode()).hexdigest()
    return (f"ignite-{name}-{key[:8]}",
            "ign-" + hashlib.sha256(f"{key}\0{name}".encode()).hexdigest()[:10])


def _old_bridge(name: str) -> str:
    """The bridge name versions before host_names gave a network."""
    return "ign-" + hashlib.sha256(name.encode()).hexdigest()[:10]


def own(root: Path, name: str, conf: dict[str, Any]) -> bool:
    """Whether network ``name`` is one the project made: only those are removed
    (rm, prune), with their bridge and lease folder. Made now: its conflist
    carries the mark ``"ignitevm": {"network": name}``. Made by an earlier
    version (no mark): its CNI name and bridge are exactly the ones that
    version gave ``name`` (``ignite-<name>`` on ``ign-<sha256(name)>``, or
    host_names'), or Ignite's default, ``ignite-cni-bridge`` on ``ignite0``.
    Another tool's conflist in a shared folder (containerd's on cni0, ...)
    matches none of these."""
    mark = conf.get("ignitevm")
    if isinstance(mark, dict) and mark.get("network") == name:
        return True
    names = (conf.get("name"), conflist.bridge(conf))
    if name == conflist.DEFAULT:
        return names == (conflist.DEFAULT_NAME, conflist.DEFAULT_BRIDGE)
    return names in ((f"ignite-{name}", _old_bridge(name)), host_names(root, name))


def listing(root: Path) -> list[Network]:
    """Every network in the folder, the project's and other tools' (``own``).
    A file whose name is no network name, or that is no valid conflist, is
    left out with a warning."""
    conflist.load(root)  # the default network exists from the first listing on
    out = []
    for p in sorted(conflist.conf_dir(root).glob("*.conflist")):
        if not conflist.NETWORK.fullmatch(p.stem):
            log.warning("ignoring %s: %r is not a network name", p, p.stem)
            continue
        try:
            conf = conflist.load(root, p.stem)
        except InvalidInput as exc:
            log.warning("ignoring %s", exc)
            continue
        out.append(Network(p.stem, conf, own(root, p.stem, conf)))
    return out


def get(root: Path, name: str) -> Network:
    conf = conflist.load(root, name)
    return Network(name, conf, own(root, name, conf))


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise InvalidInput(f"invalid --subnet {text!r}: {exc}",
                           hint="give an IPv4 network, e.g. 10.77.0.0/24") from None
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 30:
        raise InvalidInput(f"invalid --subnet {text!r}: an IPv4 network of /30 or larger "
                           "is needed")
    return net


def host_routes(table: str = "/proc/net/route") -> list[tuple[ipaddress.IPv4Network, str]]:
    """The host's IPv4 routes but the default one: (destination, device). A new
    network must not take addresses the host already reaches some other way (its
    LAN, a VPN, another runtime's bridge)."""
    import socket
    import struct

    out = []
    try:
        lines = Path(table).read_text().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        words = line.split()
        if len(words) < 8:
            continue
        try:
            dest, mask = (socket.inet_ntoa(struct.pack("<I", int(w, 16)))
                          for w in (words[1], words[7]))
            route = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        except (ValueError, OSError, struct.error):
            continue
        if route.prefixlen:
            out.append((route, words[0]))
    return out


def create(root: Path, name: str, subnet: str, gateway: str = "",
           internal: bool = False) -> Network:
    if not conflist.NETWORK.fullmatch(name) or name == conflist.DEFAULT:
        raise InvalidInput(f"invalid network name {name!r}",
                           hint="use up to 32 lower-case letters, digits and '-' "
                           "('default' is taken)")
    net = parse_subnet(subnet)
    if gateway:
        try:
            gw = ipaddress.ip_address(gateway)
        except ValueError:
            raise InvalidInput(f"invalid --gateway {gateway!r}") from None
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise InvalidInput(f"--gateway {gateway} is not a host address of {net}")
    if conflist.path(root, name).exists():
        raise Conflict(f"network {name!r} already exists")
    for other in listing(root):
        for s in conflist.subnets(other.conf):
            if ipaddress.ip_network(s, strict=False).overlaps(net):
                raise Conflict(f"subnet {net} overlaps {s} of network {other.name!r}",
                               hint="choose a subnet no other network uses")
    cni_name, bridge = host_names(root, name)
    for route, dev in host_routes():
        if route.overlaps(net) and dev != bridge:  # (its own bridge, left by a killed run)
            raise Conflict(f"subnet {net} overlaps {route}, which this host routes to {dev}",
                           hint="choose a subnet the host does not use (see: ip -4 route)")
    conf = conflist.bridge_conflist(cni_name, bridge, str(net), gateway, internal=internal,
                                    network=name)
    conflist.write(root, name, conf)
    return Network(name, conf)


def remove_check(root: Path, name: str, users: list[str]) -> Network:
    """The network ``name`` if it may be removed: the project's, not the
    default one, used by no VM."""
    if name == conflist.DEFAULT:
        raise InvalidInput("the default network cannot be removed")
    if not conflist.path(root, name).exists():  # (checks the name first: no ../x)
        raise NotFound(f"network {name!r} does not exist", hint="see: ignite network ls")
    net = get(root, name)
    if not net.own:
        raise InvalidInput(f"network {name!r} ({conflist.path(root, name)}) was not made by "
                           "ignite: it is left alone",
                           hint="remove it with the tool that made it")
    if users:
        raise Conflict(f"network {name!r} is in use by VM {users[0]!r}",
                       hint="remove those VMs first")
    return net


def remove(root: Path, name: str, users: list[str]) -> None:
    """Remove a network no VM uses: its conflist, bridge and lease folder."""
    from ignitevm.providers.network.cni import isolate, sweep
    from ignitevm.util.proc import run

    net = remove_check(root, name, users)
    if net.bridge and Path(f"/sys/class/net/{net.bridge}").exists():
        run(["ip", "link", "delete", net.bridge], check=False)
    if net.bridge:
        isolate.drop(net.bridge)
    sweep.remove_lease_dir(net.conf)
    conflist.path(root, name).unlink()
