"""passt: user-mode networking for users without root, faster than slirp.

One ``passt`` per VM start, listening on a unix socket in the VM's folder;
QEMU connects to it (``-netdev stream``, QEMU 7.2). passt runs with
``--one-off``: it quits when QEMU closes the socket, so a stopped, killed or
crashed VM leaves no passt behind. The guest gets the same fixed addresses
as in user mode (10.0.2.15, gateway 10.0.2.2, name server 10.0.2.3 mapped to
the host's); ``-p`` and SSH become passt's port forwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from ignitevm.errors import IgniteError
from ignitevm.log import log
from ignitevm.providers.network.base import Forward, NetPlan
from ignitevm.providers.network.usermode import free_port, random_mac

SOCKET = "passt.sock"
PIDFILE = "passt.pid"
GUEST, GATEWAY, DNS = "10.0.2.15", "10.0.2.2", "10.0.2.3"


def _ports(forwards: tuple[Forward, ...], proto: str) -> str:
    specs = []
    for f in forwards:
        if f.proto != proto:
            continue
        bind = f"{f.host_ip}/" if f.host_ip not in ("", "0.0.0.0") else ""
        specs.append(f"{bind}{f.host_port}:{f.guest_port}")
    return ",".join(specs)


def argv(workdir: Path, forwards: tuple[Forward, ...]) -> list[str]:
    args = ["passt", "--one-off", "--quiet", "--socket", str(workdir / SOCKET),
            "--pid", str(workdir / PIDFILE), "--address", GUEST, "--netmask", "24",
            "--gateway", GATEWAY, "--dns-forward", DNS, "--no-dhcp", "--no-ndp",
            "--no-dhcpv6", "--no-ra"]
    for proto, flag in (("tcp", "--tcp-ports"), ("udp", "--udp-ports")):
        spec = _ports(forwards, proto)
        args += [flag, spec or "none"]
    return args


def kill(workdir: Path) -> None:
    """End the VM's passt if it still waits for a QEMU that never came."""
    try:
        pid = int((workdir / PIDFILE).read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return
    if str(workdir / SOCKET).encode() in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    (workdir / PIDFILE).unlink(missing_ok=True)


@contextlib.contextmanager
def attached(workdir: Path, ports: list[tuple[str, str, int, int]],
             ssh: bool) -> Iterator[NetPlan]:
    from ignitevm.util.proc import run

    forwards = tuple(Forward(proto, ip or "0.0.0.0", hp, gp) for proto, ip, hp, gp in ports)
    ssh_port = free_port() if ssh else 0
    extra = (Forward("tcp", "127.0.0.1", ssh_port, 22),) if ssh else ()
    kill(workdir)  # (a passt an earlier, failed start left)
    (workdir / SOCKET).unlink(missing_ok=True)
    res = run(argv(workdir, forwards + extra), check=False)
    if res.returncode != 0:
        why = (res.stderr or res.stdout).strip().splitlines()
        raise IgniteError(f"passt failed to start: {why[-1] if why else res.returncode}",
                          hint="a host port given with -p may be in use")
    try:
        yield NetPlan(plugin="passt", mac=random_mac(), guest_ip=f"{GUEST}/24",
                      gateway=GATEWAY, dns=DNS, forwards=forwards, ssh_port=ssh_port,
                      socket=str(workdir / SOCKET))
    except BaseException:
        log.debug("start failed: stopping passt")
        kill(workdir)
        raise
