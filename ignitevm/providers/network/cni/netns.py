"""Named network namespaces (``/run/netns/NAME``, as ``ip netns`` makes them):
one per VM, made before CNI ADD and removed after DEL. A named namespace is
held by its bind mount, not by a process, so it outlives a killed QEMU.

Made in-process (unshare this thread's network namespace, bind-mount it,
return) once ``ip netns`` has prepared /run/netns as a shared mount: the
``ip`` program costs ~30 ms a call, a tenth of a whole CNI ADD.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MNT_DETACH = 0x2


def path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return path(name).exists()


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _prepared() -> bool:
    """Is /run/netns the shared mount ``ip netns`` makes (a bind mount of
    itself, which os.path.ismount does not see on one file system)?"""
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(NETNS_DIR) for line in f)


def create(name: str) -> None:
    from ignitevm.util.proc import run

    if not _prepared():
        run(["ip", "netns", "add", name])  # (also makes /run/netns a shared mount)
        return
    target = path(name)
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0)
    os.close(fd)
    libc = _libc()
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(libc.unshare(CLONE_NEWNET), "unshare")
        try:
            _check(libc.mount(b"/proc/thread-self/ns/net", str(target).encode(), b"none",
                              MS_BIND, None), "mount")
        finally:
            _setns(here)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        os.close(here)


def delete(name: str) -> None:
    """Remove the namespace; nothing to do if it is gone (safe to repeat)."""
    target = path(name)
    if not target.exists():
        return
    _libc().umount2(str(target).encode(), MNT_DETACH)  # (not mounted after a reboot: fine)
    target.unlink(missing_ok=True)


def _setns(fd: int) -> None:
    _check(_libc().setns(fd, CLONE_NEWNET), "setns")


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
