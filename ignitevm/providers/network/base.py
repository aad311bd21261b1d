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

    @property
    def address(self) -> str:
        return self.guest_ip.split("/")[0]

    @property
    def ssh_host(self) -> str:
        """Where the host reaches the guest's sshd: its own address on a
        bridge, the loopback forward in user mode."""
        return self.address if self.plugin == "cni" else "127.0.0.1"
