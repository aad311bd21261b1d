"""The VM's side of its namespace: a tap whose fd QEMU gets at launch, joined
to the interface CNI made by tc ingress + mirred redirect both ways (what one
side receives leaves by the other). The guest takes that interface's MAC and
address, so no DHCP server and no second bridge are needed.

The tap is made by opening /dev/net/tun inside the namespace and made
persistent: it lives as long as the namespace, and goes with it when the
release deletes the namespace (the kernel then removes every device in it,
in the background). A tap that went with its last fd instead would cost
whoever closes that fd (QEMU at its exit, or the CLI on a failed start) an
unregistration the kernel waits ~14 ms for; and the namespace is deleted on
every path anyway (it is what the record and the sweep are about). The fd is
passed to QEMU (``-netdev tap,fd=N``), so QEMU needs neither the namespace
nor any privilege to get its network.

Interface settings go through ioctls on a socket made in the namespace and
the filters through one ``tc -batch``: a netlink library costs more to
import (0.15-0.3 s) than the whole CNI ADD takes.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from typing import NamedTuple

from ignitevm.providers.network.cni import netns

TAP = "tap0"
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_UP = 0x1
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
SIOCGIFMTU, SIOCSIFMTU = 0x8921, 0x8922
SIOCGIFHWADDR, SIOCSIFHWADDR = 0x8927, 0x8924
ARPHRD_ETHER = 1


class Tap(NamedTuple):
    fd: int
    mac: str  # the CNI interface's MAC, which the guest takes
    mtu: int


def _ifreq(name: str, fmt: str = "", *values: int) -> bytes:
    data = struct.pack(fmt, *values) if fmt else b""
    return struct.pack("16s", name.encode()) + data.ljust(24, b"\0")


def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, "H", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _configure(ifname: str, tap: str, mac: str) -> tuple[str, int]:
    """In the namespace: give ``ifname`` the MAC asked for (if any), read its
    MAC and MTU, bring the tap up with that MTU."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        if mac:
            addr = bytes(int(x, 16) for x in mac.split(":"))
            fcntl.ioctl(s, SIOCSIFHWADDR, _ifreq(ifname, "H6s", ARPHRD_ETHER, addr))
        hw = fcntl.ioctl(s, SIOCGIFHWADDR, _ifreq(ifname))
        mac = ":".join(f"{b:02x}" for b in hw[18:24])
        mtu = struct.unpack("i", fcntl.ioctl(s, SIOCGIFMTU, _ifreq(ifname))[16:20])[0]
        fcntl.ioctl(s, SIOCSIFMTU, _ifreq(tap, "i", mtu))
        flags = struct.unpack("H", fcntl.ioctl(s, SIOCGIFFLAGS, _ifreq(tap))[16:18])[0]
        fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq(tap, "H", flags | IFF_UP))
    return mac, mtu


def redirect_script(a: str, b: str, mac: str = "", ip: str = "") -> str:
    """tc commands: what ``a`` receives leaves by ``b``, and the other way.

    With the guest's ``mac`` and ``ip``, what the guest sends (``b``, its tap)
    goes on only if it is IPv4 from that address or ARP for it, from that MAC:
    a guest cannot take another VM's address or poison the bridge's ARP."""
    # (u32 matching everything: some kernels lack matchall; at ingress the
    # packet starts at its network header, the Ethernet source is at -8)
    lines = [f"qdisc add dev {a} ingress",
             f"filter add dev {a} parent ffff: protocol all u32 match u32 0 0 "
             f"action mirred egress redirect dev {b}",
             f"qdisc add dev {b} ingress"]
    if not (mac and ip):
        lines.append(f"filter add dev {b} parent ffff: protocol all u32 match u32 0 0 "
                     f"action mirred egress redirect dev {a}")
        return "\n".join(lines) + "\n"
    hexmac = mac.replace(":", "").lower()
    src = f"match u32 0x{hexmac[:8]} 0xffffffff at -8 match u16 0x{hexmac[8:]} 0xffff at -4"
    hexip = "".join(f"{int(x):02x}" for x in ip.split("."))
    lines += [f"filter add dev {b} parent ffff: prio 1 protocol ip u32 {src} "
              f"match ip src {ip}/32 action mirred egress redirect dev {a}",
              # (the ARP sender's address is at 14: u32 keys are 4-aligned, so two u16)
              f"filter add dev {b} parent ffff: prio 2 protocol arp u32 {src} "
              f"match u16 0x{hexip[:4]} 0xffff at 14 match u16 0x{hexip[4:]} 0xffff at 16 "
              f"action mirred egress redirect dev {a}"]
    # Anything else is not redirected: it reaches only the namespace's own stack
    # through the tap, which has no address and forwards nothing. (No drop
    # action: Debian's kernel may lack act_gact.)
    return "\n".join(lines) + "\n"


def open_tap(ns: str, ifname: str, tap: str = TAP, mac: str = "", ip: str = "") -> Tap:
    """Make ``tap`` in namespace ``ns`` and redirect it to and from ``ifname``
    (which takes ``mac`` first, if one is given); with the guest's ``ip``, only
    its own traffic leaves the tap (see redirect_script)."""
    from ignitevm.util.proc import run

    with netns.entered(ns):
        fd = _open_tun(tap)
        try:
            fcntl.ioctl(fd, TUNSETPERSIST, 1)  # (it goes with the namespace: see above)
            mac, mtu = _configure(ifname, tap, mac)
        except BaseException:
            os.close(fd)
            raise
    try:
        run(["tc", "-netns", ns, "-batch", "-"], input=redirect_script(ifname, tap, mac, ip))
    except BaseException:
        os.close(fd)
        raise
    return Tap(fd, mac, mtu)
