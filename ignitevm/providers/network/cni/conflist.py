"""Network definitions: one conflist per network, in a folder the project owns
(``<root>/cni``, or the user's own folder named by IGNITE_CNI_CONF_DIR, as
with containerd). The default network is written on first use: Ignite's
bridge ``ignite0`` with host-local addresses from 10.61.0.0/16, masquerade,
port maps and the firewall plugin."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ignitevm.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    import ipaddress

DEFAULT = "default"
DEFAULT_NAME = "ignite-cni-bridge"
DEFAULT_BRIDGE = "ignite0"
DEFAULT_SUBNET = "10.61.0.0/16"
CNI_VERSION = "1.0.0"  # the newest the plugins Debian ships speak

# A conflist's own "name", as CNI's libraries require it: it names host-local's
# lease folder (<dataDir>/<name>), so it must stay one plain path part.
CNI_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
# A bridge (link) name: what the kernel takes (IFNAMSIZ: 15 characters and
# the NUL; never "." or ".."), without spaces, slashes or ':' of `ip` syntax.
LINK_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")
# A network's name on the command line and in manifests, and so its file name
# <name>.conflist in the folder ("default" included).
NETWORK = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")


def check_network(network: str) -> None:
    """A network name, before it makes a path (``../x`` would leave the folder)."""
    if not NETWORK.fullmatch(network):
        raise InvalidInput(f"invalid network name {network!r}",
                           hint="network names are up to 32 lower-case letters, digits "
                           "and '-'; see: ignite network ls")


def is_link_name(name: str) -> bool:
    return bool(LINK_NAME.fullmatch(name)) and name not in (".", "..")


def conf_dir(root: Path) -> Path:
    return Path(os.environ.get("IGNITE_CNI_CONF_DIR") or root / "cni")


def bridge_conflist(name: str, bridge: str, subnet: str, gateway: str = "",
                    internal: bool = False, network: str = "") -> dict[str, Any]:
    """A bridge network: VMs on ``bridge`` get addresses from ``subnet``;
    not ``internal``: they reach out through masquerade and take port maps.
    ``network``: the project's name of it, written as its mark (see
    networks.own: only marked networks are ever removed)."""
    rng: dict[str, Any] = {"subnet": subnet}
    if gateway:
        rng["gateway"] = gateway
    bridge_conf: dict[str, Any] = {
        "type": "bridge", "bridge": bridge, "isGateway": True,
        "isDefaultGateway": not internal, "promiscMode": True, "ipMasq": not internal,
        "ipam": {"type": "host-local", "ranges": [[rng]]},
    }
    plugins: list[dict[str, Any]] = [bridge_conf]
    if not internal:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    plugins.append({"type": "firewall"})
    conf: dict[str, Any] = {"cniVersion": CNI_VERSION, "name": name, "plugins": plugins}
    own: dict[str, Any] = {}  # (the project's own key: CNI tools ignore it)
    if network:
        own["network"] = network
    if internal:  # (see isolate.py)
        own["internal"] = True
    if own:
        conf["ignitevm"] = own
    return conf


def is_internal(conf: dict[str, Any]) -> bool:
    """Made by ``network create --internal``: the host keeps its VMs in (isolate.py)."""
    own = conf.get("ignitevm")
    return isinstance(own, dict) and own.get("internal") is True


def bridge(conf: dict[str, Any]) -> str:
    return next((str(p.get("bridge", "")) for p in conf["plugins"]
                 if p.get("type") == "bridge"), "")


def gateway(conf: dict[str, Any]) -> str:
    """The bridge's address: the range's gateway, else the subnet's first host
    (as the bridge plugin picks it)."""
    import ipaddress

    for p in conf["plugins"]:
        for rs in (p.get("ipam") or {}).get("ranges") or []:
            for r in rs:
                if isinstance(r, dict) and r.get("gateway"):
                    return str(r["gateway"])
    nets = subnets(conf)
    return str(next(ipaddress.ip_network(nets[0], strict=False).hosts())) if nets else ""


def gateways(conf: dict[str, Any]) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every range's gateway (given, else its subnet's first host, as
    host-local takes it): addresses no VM may ask for. Addresses, not text
    (``fd00::0001`` is ``fd00::1``)."""
    import ipaddress

    out = set()
    for p in conf["plugins"]:
        ipam = p.get("ipam") or {}
        ranges = [r for rs in ipam.get("ranges") or [] for r in rs if isinstance(r, dict)]
        if "subnet" in ipam:
            ranges.append(ipam)
        for r in ranges:
            with contextlib.suppress(ValueError, StopIteration):
                if r.get("gateway"):
                    out.add(ipaddress.ip_address(r["gateway"]))
                elif r.get("subnet"):
                    out.add(next(ipaddress.ip_network(r["subnet"], strict=False).hosts()))
    return out


def path(root: Path, network: str) -> Path:
    check_network(network)
    return conf_dir(root) / f"{network}.conflist"


def write(root: Path, network: str, conflist: dict[str, Any]) -> Path:
    from ignitevm.util.fs import atomic_write

    p = path(root, network)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(p, json.dumps(conflist, indent=2) + "\n")
    return p


def load(root: Path, network: str = DEFAULT) -> dict[str, Any]:
    """The conflist of ``network``; the default one is made on first use."""
    p = path(root, network)
    if not p.exists():
        if network != DEFAULT:
            raise NotFound(f"network {network!r} does not exist",
                           hint=f"the networks are the .conflist files in {p.parent}")
        write(root, network, bridge_conflist(DEFAULT_NAME, DEFAULT_BRIDGE, DEFAULT_SUBNET,
                                             network=DEFAULT))
    try:
        conf = json.loads(p.read_text())
    except ValueError as exc:
        raise InvalidInput(f"network config {p} is not valid JSON: {exc}") from exc
    check(conf, p)
    return conf


def check(conf: Any, where: Path | str) -> None:
    """A conflist read back: its names reach paths and commands (the lease
    folder, `ip link delete <bridge>`), so they are checked as CNI and the
    kernel would."""
    plugins = conf.get("plugins") if isinstance(conf, dict) else None
    if (not isinstance(conf, dict) or not isinstance(conf.get("name"), str) or not conf["name"]
            or not isinstance(plugins, list) or not plugins
            or not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in plugins)):
        raise InvalidInput(f"network config {where} is not a CNI conflist",
                           hint="it needs a name and a list of plugins, each with a type")
    if not CNI_NAME.fullmatch(conf["name"]):
        raise InvalidInput(f"network config {where}: invalid network name {conf['name']!r}",
                           hint="CNI names are letters, digits, '_', '.' and '-', "
                           "starting with a letter or digit")
    for p in plugins:
        if p["type"] == "bridge" and "bridge" in p and not (
                isinstance(p["bridge"], str) and is_link_name(p["bridge"])):
            raise InvalidInput(f"network config {where}: invalid bridge name {p['bridge']!r}",
                               hint="a link name is 1 to 15 letters, digits, '_', '.' or '-'")
        if p.get("ipam") is not None and not _ipam_ok(p["ipam"]):
            raise InvalidInput(f"network config {where} is not a CNI conflist: the ipam of "
                               f"its {p['type']!r} plugin is malformed",
                               hint='ipam.ranges is a list of lists of ranges, each like '
                               '{"subnet": "10.77.0.0/24", "gateway": "10.77.0.1"}')


def _ipam_ok(ipam: object) -> bool:
    """An ipam section as host-local reads it (other IPAM types: only its shape):
    ``ranges`` a list of lists of objects; each ``subnet`` a network, each
    ``gateway`` an address (they are read for checks and messages)."""
    import ipaddress

    if not isinstance(ipam, dict):
        return False
    ranges = ipam.get("ranges") or []
    if not isinstance(ranges, list) or not all(
            isinstance(rs, list) and all(isinstance(r, dict) for r in rs) for rs in ranges):
        return False
    for r in [ipam, *(r for rs in ranges for r in rs)]:
        try:
            if "subnet" in r:
                ipaddress.ip_network(r["subnet"] if isinstance(r["subnet"], str) else "-",
                                     strict=False)
            if r.get("gateway") not in (None, ""):
                ipaddress.ip_address(r["gateway"] if isinstance(r["gateway"], str) else "-")
        except ValueError:
            return False
    return True


def subnets(conf: dict[str, Any]) -> list[str]:
    """The host-local subnets a conflist hands out (for messages and checks)."""
    out = []
    for p in conf["plugins"]:
        ipam = p.get("ipam") or {}
        for rs in ipam.get("ranges") or []:
            out += [r["subnet"] for r in rs if isinstance(r, dict) and "subnet" in r]
        if "subnet" in ipam:
            out.append(ipam["subnet"])
    return out
