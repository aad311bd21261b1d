"""User-mode networking: QEMU's built-in NAT (slirp). No root, no bridge, no iptables.

The guest gets 10.0.2.15/24 with the gateway 10.0.2.2 and DNS 10.0.2.3;
host ports reach it through forwards. SSH gets a loopback port of its own.
"""

from __future__ import annotations

import os

from ignitevm.providers.network.base import Forward, NetPlan


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def random_mac() -> str:
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02  # locally administered, unicast
    return ":".join(f"{x:02x}" for x in b)


def plan(ports: list[tuple[str, str, int, int]], ssh: bool) -> NetPlan:
    forwards = tuple(Forward(proto, ip or "0.0.0.0", hp, gp) for proto, ip, hp, gp in ports)
    return NetPlan(plugin="user", mac=random_mac(), guest_ip="10.0.2.15/24",
                   gateway="10.0.2.2", dns="10.0.2.3", forwards=forwards,
                   ssh_port=free_port() if ssh else 0)
