"""The VM's side of its namespace: a tap whose fd QEMU gets at launch, joined
to the interface CNI made by tc ingress + mirred redirect both ways (what one
side receives leaves by the other). The guest takes that interface's MAC and
address, so no DHCP server and no second bridge are needed.

The tap is made by opening /dev/net/tun inside the namespace and not made
persistent: it lives as long as an fd to it is open (QEMU's), and goes with
QEMU. The fd is passed to QEMU (``-netdev tap,fd=N``), so QEMU needs neither
the namespace nor any privilege to get its network.
"""

from __future__ import annotations

import fcntl
import os
import struct
from typing import NamedTuple

from ignitevm.providers.network.cni import netns

TAP = "tap0"
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
ETH_P_ALL = 0x0003


class Tap(NamedTuple):
    fd: int
    mac: str  # the CNI interface's MAC, which the guest takes
    mtu: int


def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(),
                                               IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_tap(ns: str, ifname: str) -> Tap:
    """Make the tap in namespace ``ns`` and redirect it to and from ``ifname``."""
    from pyroute2 import IPRoute

    with netns.entered(ns):
        fd = _open_tun(TAP)
        ipr = IPRoute()  # its netlink socket stays in the namespace
    try:
        with ipr:
            link = ipr.link("get", ifname=ifname)[0]
            dev, mac, mtu = link["index"], link.get_attr("IFLA_ADDRESS"), link.get_attr("IFLA_MTU")
            tap = ipr.link_lookup(ifname=TAP)[0]
            ipr.link("set", index=tap, mtu=mtu, state="up")
            for src, dst in ((dev, tap), (tap, dev)):
                ipr.tc("add", "ingress", index=src, handle="ffff:")
                # (u32 matching everything: some kernels lack matchall)
                ipr.tc("add-filter", "u32", index=src, parent="ffff:", protocol=ETH_P_ALL,
                       keys=["0x0/0x0+0"], target=0x10001,
                       action={"kind": "mirred", "direction": "egress",
                               "action": "redirect", "ifindex": dst})
    except BaseException:
        os.close(fd)
        raise
    return Tap(fd, str(mac), int(mtu))
