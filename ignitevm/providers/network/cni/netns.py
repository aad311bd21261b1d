"""Named network namespaces (``/run/netns/NAME``, as ``ip netns`` makes them):
one per VM, made before CNI ADD and removed after DEL. A named namespace is
held by its bind mount, not by a process, so it outlives a killed QEMU."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000


def path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return path(name).exists()


def create(name: str) -> None:
    from ignitevm.util.proc import run

    run(["ip", "netns", "add", name])


def delete(name: str) -> None:
    """Remove the namespace; nothing to do if it is gone (safe to repeat)."""
    from ignitevm.util.proc import run

    if exists(name):
        run(["ip", "netns", "delete", name])


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with this thread in namespace ``name``; sockets and
    devices opened there stay bound to it after the body."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        there = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(there)
        finally:
            os.close(there)
        try:
            yield
        finally:
            _setns(here)
    finally:
        os.close(here)
