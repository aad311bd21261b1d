"""Named networks: each one a conflist of its own in the project's folder
(``ignite network create lab --subnet 10.77.0.0/24``). The default network
is Ignite's and cannot be removed."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from ignitevm.errors import Conflict, InvalidInput, NotFound
from ignitevm.providers.network.cni import conflist

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")


class Network(NamedTuple):
    name: str
    conf: dict[str, Any]

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


def listing(root: Path) -> list[Network]:
    conflist.load(root)  # the default network exists from the first listing on
    out = []
    for p in sorted(conflist.conf_dir(root).glob("*.conflist")):
        out.append(Network(p.stem, conflist.load(root, p.stem)))
    return out


def get(root: Path, name: str) -> Network:
    return Network(name, conflist.load(root, name))


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


def create(root: Path, name: str, subnet: str, gateway: str = "",
           internal: bool = False) -> Network:
    if not _NAME.fullmatch(name) or name == conflist.DEFAULT:
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
            if ipaddress.ip_network(s).overlaps(net):
                raise Conflict(f"subnet {net} overlaps {s} of network {other.name!r}",
                               hint="choose a subnet no other network uses")
    cni_name, bridge = host_names(root, name)
    conf = conflist.bridge_conflist(cni_name, bridge, str(net), gateway, internal=internal)
    conflist.write(root, name, conf)
    return Network(name, conf)


def remove_check(root: Path, name: str, users: list[str]) -> None:
    if name == conflist.DEFAULT:
        raise InvalidInput("the default network cannot be removed")
    if not conflist.path(root, name).exists():
        raise NotFound(f"network {name!r} does not exist", hint="see: ignite network ls")
    if users:
        raise Conflict(f"network {name!r} is in use by VM {users[0]!r}",
                       hint="remove those VMs first")


def remove(root: Path, name: str, users: list[str]) -> None:
    """Remove a network no VM uses: its conflist, bridge and lease folder."""
    from ignitevm.providers.network.cni import isolate, sweep
    from ignitevm.util.proc import run

    remove_check(root, name, users)
    net = get(root, name)
    if net.bridge and Path(f"/sys/class/net/{net.bridge}").exists():
        run(["ip", "link", "delete", net.bridge], check=False)
    if net.bridge:
        isolate.drop(net.bridge)
    shutil.rmtree(sweep.lease_dir(net.conf), ignore_errors=True)
    conflist.path(root, name).unlink()
