"""The cgroup-BPF programs that close the host's loopback to a VM's QEMU
(providers/sandbox/loopback.py), on a real cgroup with real sockets."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ignitevm.providers.sandbox import cgroups
from ignitevm.providers.sandbox.loopback import close_loopback


def _v2() -> Path | None:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    return None


pytestmark = pytest.mark.skipif(os.geteuid() != 0 or _v2() is None,
                                reason="needs root and a cgroup v2 hierarchy")

PROBE = r"""
import errno, socket, sys
out = []
for fam, addr, kind in [(socket.AF_INET, ("127.0.0.1", int(sys.argv[1])), "tcp"),
                        (socket.AF_INET, ("127.1.2.3", int(sys.argv[1])), "tcp"),
                        (socket.AF_INET, ("0.0.0.0", int(sys.argv[1])), "tcp"),
                        (socket.AF_INET6, ("::1", int(sys.argv[2])), "tcp"),
                        (socket.AF_INET6, ("::ffff:127.0.0.1", int(sys.argv[1])), "tcp"),
                        (socket.AF_INET, ("127.0.0.1", int(sys.argv[1])), "udp"),
                        (socket.AF_INET, ("127.0.0.53", 53), "udp"),
                        (socket.AF_INET, (sys.argv[3], int(sys.argv[4])), "tcp")]:
    s = socket.socket(fam, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    try:
        if kind == "tcp":
            s.settimeout(5)
            s.connect(addr)
        else:
            s.sendto(b"x", addr)
        out.append("ok")
    except PermissionError:
        out.append("refused")
    except OSError as exc:
        out.append(errno.errorcode.get(exc.errno, str(exc.errno)))
    finally:
        s.close()
print(" ".join(out))
"""


@pytest.fixture
def group() -> Iterator[Path]:
    v2 = _v2()
    assert v2 is not None
    d = v2 / cgroups.PARENT / f"test-loopback-{os.getpid()}"
    d.mkdir(parents=True)
    try:
        yield d
    finally:
        with contextlib.suppress(OSError):
            d.rmdir()


def _host_address() -> str:
    """An address of this host that is not loopback (the default route's source)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent
            return str(s.getsockname()[0])
        except OSError:
            pytest.skip("no non-loopback address on this host")


def test_loopback_is_refused_and_the_rest_is_not(group: Path) -> None:
    close_loopback(group)
    with socket.socket() as srv, socket.socket(socket.AF_INET6) as srv6, \
            socket.socket() as other:
        srv.bind(("0.0.0.0", 0))
        srv.listen()
        srv6.bind(("::1", 0))
        srv6.listen()
        addr = _host_address()
        other.bind((addr, 0))
        other.listen()
        port, port6, oport = srv.getsockname()[1], srv6.getsockname()[1], other.getsockname()[1]
        procs = group / "cgroup.procs"
        res = subprocess.run(
            [sys.executable, "-c", PROBE, str(port), str(port6), addr, str(oport)],
            preexec_fn=lambda: procs.write_text(str(os.getpid())),
            capture_output=True, text=True, check=True)
        # 127.0.0.1, 127.1.2.3, 0.0.0.0, ::1, ::ffff:127.0.0.1 by TCP and 127.0.0.1 by
        # UDP: refused; DNS to 127.0.0.53 and the host's own address: allowed
        assert res.stdout.split() == ["refused"] * 6 + ["ok", "ok"], res.stdout
        # The same program outside the cgroup: everything connects.
        res = subprocess.run([sys.executable, "-c", PROBE, str(port), str(port6), addr,
                              str(oport)], capture_output=True, text=True, check=True)
        assert res.stdout.split() == ["ok"] * 8, res.stdout
