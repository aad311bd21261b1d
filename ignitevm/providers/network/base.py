"""What a network provider hands to the VMM and to the guest."""

from __future__ import annotations

from typing import NamedTuple


class Forward(NamedTuple):
    proto: str  # tcp | udp
    host_ip: str
    host_port: int
    guest_port: int


class NetPlan(NamedTuple):
    plugin: str
    mac: str
    guest_ip: str  # with prefix, e.g. 10.0.2.15/24
    gateway: str
    dns: str  # name servers, space-separated
    forwards: tuple[Forward, ...] = ()
    ssh_port: int = 0  # where the host reaches the guest's sshd (at ssh_host), 0 = none
    tap_fd: int = -1  # an fd QEMU takes over: cni's tap, passt's end of a socket pair
    dns_search: str = ""  # search domains, space-separated
    more: tuple[NetPlan, ...] = ()  # cni: eth1, eth2, … on further networks
    mtu: int = 0  # the guest's eth0 MTU, 0 = its default
    # beyond the default route: (destination/prefix, gateway or "" for on the link)
    routes: tuple[tuple[str, str], ...] = ()

    @property
    def address(self) -> str:
        return self.guest_ip.split("/")[0]

    @property
    def ssh_host(self) -> str:
        """Where the host reaches the guest's sshd: its own address on a
        bridge, the loopback forward in user mode."""
        return self.address if self.plugin == "cni" else "127.0.0.1"


def guest_lines(net: NetPlan) -> list[tuple[str, str]]:
    """The guest's network as ``key=value`` lines: the init reads them from the
    config disk at boot, a clone's agent in RESTORE (docs/agent-protocol.md).
    ``dns`` is always there: with no servers (an --internal network) the
    guest's resolv.conf names none rather than keeping what it had. What the
    guest could not take whole (api/validation.py GUEST_*: name servers and
    search domains a conflist gives, its routes) is refused, not cut there."""
    from ignitevm.api import validation as v
    from ignitevm.errors import InvalidInput

    nics = (net, *net.more)
    if len(nics) > v.GUEST_NICS:
        raise InvalidInput(f"a VM can join at most {v.GUEST_NICS} networks ({len(nics)} given)")
    routes = sum(len(nic.routes) for nic in nics)
    if routes > v.GUEST_ROUTES:
        raise InvalidInput(f"the networks give the VM {routes} routes besides the default "
                           f"one; the guest takes at most {v.GUEST_ROUTES}",
                           hint="name fewer routes in the networks' conflists (ipam routes)")
    v.check_guest_dns(net.dns.split(), net.dns_search.split(),
                      "refusing the network's name servers", "refusing its search domains")
    lines = []
    for i, nic in enumerate((net, *net.more)):
        words = [f"eth{i}", nic.mac or "-", nic.guest_ip or "-"]
        if nic.mtu:
            words.append(str(nic.mtu))
        lines.append(("net", " ".join(words)))
        lines += [("route", f"eth{i} {dst} {gw}".rstrip()) for dst, gw in nic.routes]
    if net.gateway:
        lines.append(("gw", net.gateway))
    lines.append(("dns", net.dns))
    if net.dns_search:
        lines.append(("search", net.dns_search))
    for key, value in lines:
        if any(ord(c) < 0x20 for c in value):
            raise InvalidInput(f"refusing the guest's network line {key}={value!r}: "
                               "control character")
        if key in ("net", "route") and any(len(w) > v.GUEST_WORD for w in value.split()):
            raise InvalidInput(f"refusing the guest's network line {key}={value!r}: a word "
                               f"longer than {v.GUEST_WORD} characters")
    if len("".join(f"{k}={val}\n" for k, val in lines)) > v.GUEST_NET_TEXT:
        raise InvalidInput(f"the guest's network config is longer than {v.GUEST_NET_TEXT} "
                           "bytes")
    return lines


def check_port_free(f: Forward) -> None:
    """A bind test: can this host port be listened on here? Refused when some
    process on the host uses it, when its address is not one of the host's,
    and when it is a privileged port and this is not root."""
    import errno
    import socket

    from ignitevm.errors import Conflict, InvalidInput

    ip = f.host_ip if f.host_ip not in ("", "0.0.0.0") else "0.0.0.0"
    kind = socket.SOCK_STREAM if f.proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, f.host_port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InvalidInput(
                    f"cannot forward {ip}:{f.host_port}/{f.proto}: {ip} is not an address "
                    "of this host",
                    hint=f"give one of its addresses (ip -4 addr), or none: "
                    f"-p {f.host_port}:{f.guest_port}") from None
            if exc.errno == errno.EACCES:
                raise InvalidInput(
                    f"host port {f.host_port}/{f.proto} is a privileged port: only root may "
                    "listen on it here",
                    hint="choose a host port of 1024 or more with -p, or run as root") from None
            raise Conflict(f"host port {f.host_port}/{f.proto} is already in use on this host "
                           f"({exc.strerror})",
                           hint="choose another host port with -p, or stop what uses it") from None
