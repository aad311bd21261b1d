"""passt: user-mode networking for users without root, faster than slirp.

One ``passt`` per VM start, joined to QEMU by a socket pair made here: passt
gets one end (``--fd``), QEMU the other (``-netdev stream`` on an inherited
fd, QEMU 7.2). passt quits when QEMU's end closes, so a stopped, killed or
crashed VM (or a start that failed) leaves no passt behind, and no socket
path is needed (passt started as root becomes nobody, who may not reach the
VM's folder). The guest gets the same fixed addresses as in user mode
(10.0.2.15, gateway 10.0.2.2, name server 10.0.2.3 mapped to the host's);
``-p`` and SSH become passt's port forwards.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

from ignitevm.errors import IgniteError
from ignitevm.providers.network.base import Forward, NetPlan
from ignitevm.providers.network.usermode import free_port, random_mac

GUEST, GATEWAY, DNS = "10.0.2.15", "10.0.2.2", "10.0.2.3"
# passt sends the guest frames of up to 65520 bytes (what it would announce
# by DHCP): a guest left at 1500 drops them and host -> guest crawls.
MTU = 65520
# The socket pair's buffers: at the default (~208 KB) passt stalls on its end
# and host -> guest runs at a third of what it does with 4 MiB (TCG, iperf3).
BUFFER = 4 << 20
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # (root may exceed net.core.[wr]mem_max)


def _widen(sk: socket.socket) -> None:
    for force, plain in ((SO_SNDBUFFORCE, socket.SO_SNDBUF),
                         (SO_RCVBUFFORCE, socket.SO_RCVBUF)):
        try:
            sk.setsockopt(socket.SOL_SOCKET, force, BUFFER)
        except PermissionError:  # (without root: as much as the host allows)
            sk.setsockopt(socket.SOL_SOCKET, plain, BUFFER)


def _ports(forwards: tuple[Forward, ...], proto: str) -> str:
    specs = []
    for f in forwards:
        if f.proto != proto:
            continue
        bind = f"{f.host_ip}/" if f.host_ip not in ("", "0.0.0.0") else ""
        specs.append(f"{bind}{f.host_port}:{f.guest_port}")
    return ",".join(specs)


def argv(fd: int, forwards: tuple[Forward, ...]) -> list[str]:
    args = ["passt", "--quiet", "--fd", str(fd), "--mtu", str(MTU), "--address", GUEST,
            "--netmask", "24",
            # --no-map-gw: the gateway is not the host's loopback (services bound
            # to 127.0.0.1 are not the guest's to reach), as rootless Docker does.
            "--gateway", GATEWAY, "--no-map-gw", "--dns-forward", DNS, "--no-dhcp", "--no-ndp",
            "--no-dhcpv6", "--no-ra"]
    for proto, flag in (("tcp", "--tcp-ports"), ("udp", "--udp-ports")):
        args += [flag, _ports(forwards, proto) or "none"]
    return args


def ipv4_routable(table: Path = Path("/proc/net/route")) -> bool:
    """Whether the host has an IPv4 default route: passt takes its template
    interface from it and turns IPv4 off (the guest's only protocol here)
    without one."""
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return True  # (cannot tell: let passt say)
    return any(len(w) > 3 and w[1] == "00000000" and int(w[3], 16) & 1
               for w in (line.split() for line in lines))


@contextlib.contextmanager
def attached(ports: list[tuple[str, str, int, int]], ssh: bool) -> Iterator[NetPlan]:
    from ignitevm.util.proc import run

    if not ipv4_routable():
        raise IgniteError("passt cannot serve this VM: the host has no IPv4 default route, "
                          "and passt turns IPv4 off without one",
                          hint="use --network-plugin user (or cni, as root)")
    forwards = tuple(Forward(proto, ip or "0.0.0.0", hp, gp) for proto, ip, hp, gp in ports)
    ssh_port = free_port() if ssh else 0
    extra = (Forward("tcp", "127.0.0.1", ssh_port, 22),) if ssh else ()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for sk in (ours, theirs):
        _widen(sk)
    with ours:
        with theirs:
            res = run(argv(theirs.fileno(), forwards + extra), check=False,
                      pass_fds=(theirs.fileno(),))
        if res.returncode != 0:
            why = (res.stderr or res.stdout).strip().splitlines()
            raise IgniteError(f"passt failed to start: {why[-1] if why else res.returncode}",
                              hint="a host port given with -p may be in use")
        # (QEMU inherits our end at launch; closing it here ends passt if the
        # start fails before that)
        yield NetPlan(plugin="passt", mac=random_mac(), guest_ip=f"{GUEST}/24",
                      gateway=GATEWAY, dns=DNS, forwards=forwards, ssh_port=ssh_port,
                      tap_fd=ours.fileno(), mtu=MTU)
