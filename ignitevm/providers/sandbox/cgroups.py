"""Each VM's cgroups: memory (guest RAM + a bounded overhead), CPU and pids.

Works on cgroup v1 (one hierarchy per controller), on a pure v2 host (one
unified hierarchy) and on hybrid hosts (v1 controllers plus an empty v2
tree): each controller is taken from the v1 hierarchy that has it, else from
the v2 one when it offers it. A VM's group is ``<hierarchy>/ignite/<vm uid>``;
the jail helper joins it before exec, and it is removed (``release``) by the
next command that finds the VM stopped — the kernel refuses to remove a
group that still has processes, so a running VM's group is never lost.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import time
from pathlib import Path
from typing import NamedTuple

from ignitevm.log import log

CONTROLLERS = ("memory", "cpu", "pids")
PARENT = "ignite"
OVERHEAD_MIB = 256  # the VMM's own memory beyond guest RAM (TCG cache, heap, I/O buffers)
PIDS_MAX = 128  # VMM threads: vCPUs, main loop, RCU, an I/O pool of up to 64
PERIOD_US = 100_000


class Limits(NamedTuple):
    memory_bytes: int
    cpu_quota_us: int  # per PERIOD_US: the vCPUs plus one core for the VMM's own threads
    cpu_weight: int  # v2 weight (1..10000); v1 shares are 1024 * weight / 100
    pids: int


def limits(cpus: int, memory_mib: int) -> Limits:
    return Limits(memory_bytes=(memory_mib + OVERHEAD_MIB) << 20,
                  cpu_quota_us=(cpus + 1) * PERIOD_US,
                  cpu_weight=min(100 * cpus, 10000),
                  pids=PIDS_MAX + cpus)


class Hierarchy(NamedTuple):
    path: Path
    v2: bool
    controllers: tuple[str, ...]  # of CONTROLLERS, served here


def hierarchies(mounts: str | None = None) -> list[Hierarchy]:
    """Where each controller lives, from /proc/self/mounts (or ``mounts``' text)."""
    if mounts is None:
        mounts = Path("/proc/self/mounts").read_text()
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        path = Path(fields[1].replace("\\040", " "))
        if fields[2] == "cgroup2" and v2 is None:
            v2 = path
        elif fields[2] == "cgroup":
            for opt in fields[3].split(","):
                if opt in CONTROLLERS:
                    v1.setdefault(opt, path)
    out: dict[Path, list[str]] = {}
    for c in CONTROLLERS:
        if c in v1:
            out.setdefault(v1[c], []).append(c)
    if v2 is not None:
        try:
            offered = (v2 / "cgroup.controllers").read_text().split()
        except OSError:
            offered = []
        # (kept with no controller too: a VM's v2 group carries the programs
        # that close the host's loopback to it, see loopback.py)
        out[v2] = [c for c in CONTROLLERS if c not in v1 and c in offered]
    return [Hierarchy(p, p == v2, tuple(cs)) for p, cs in out.items()]


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _enable(h: Hierarchy) -> None:
    """v2: let the groups below the root and ``PARENT`` use our controllers
    (one at a time: the kernel refuses a whole line for one it cannot enable)."""
    for d in (h.path, h.path / PARENT):
        for c in h.controllers:
            try:
                _write(d / "cgroup.subtree_control", f"+{c}")
            except OSError as exc:
                log.debug("cgroup: enabling %s in %s: %s", c, d, exc)


def _apply(h: Hierarchy, d: Path, lim: Limits) -> None:
    for c in h.controllers:
        if c == "memory":
            _write(d / ("memory.max" if h.v2 else "memory.limit_in_bytes"),
                   str(lim.memory_bytes))
        elif c == "cpu" and h.v2:
            _write(d / "cpu.max", f"{lim.cpu_quota_us} {PERIOD_US}")
            _write(d / "cpu.weight", str(lim.cpu_weight))
        elif c == "cpu":
            _write(d / "cpu.cfs_period_us", str(PERIOD_US))
            _write(d / "cpu.cfs_quota_us", str(lim.cpu_quota_us))
            _write(d / "cpu.shares", str(1024 * lim.cpu_weight // 100))
        elif c == "pids":
            _write(d / "pids.max", str(lim.pids))


def create(name: str, lim: Limits, found: list[Hierarchy] | None = None) -> list[Path]:
    """Make (or reset) the VM's groups with ``lim``; return the cgroup.procs
    files the VMM must join. On failure, nothing made here is left."""
    made: list[Path] = []
    procs: list[Path] = []
    try:
        for h in hierarchies() if found is None else found:
            (h.path / PARENT).mkdir(exist_ok=True)
            if h.v2:
                _enable(h)
            d = h.path / PARENT / name
            try:
                d.mkdir()
                made.append(d)
            except FileExistsError:
                pass
            _apply(h, d, lim)
            procs.append(d / "cgroup.procs")
    except OSError:
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return procs


def v2_group(name: str, found: list[Hierarchy] | None = None) -> Path | None:
    """The VM's group in the v2 hierarchy, if this host has one."""
    return next((h.path / PARENT / name for h in (hierarchies() if found is None else found)
                 if h.v2), None)


def paths(name: str, found: list[Hierarchy] | None = None) -> list[Path]:
    return [h.path / PARENT / name for h in (hierarchies() if found is None else found)]


def release(name: str, found: list[Hierarchy] | None = None) -> bool:
    """Remove the VM's groups; False if one still holds processes (kept)."""
    ok = True
    for d in paths(name, found):
        try:
            d.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            ok = False
    return ok


def clear(name: str, grace: float = 5.0, found: list[Hierarchy] | None = None) -> bool:
    """Remove the groups of a VM that is stopped. A process still in them is
    its VMM on the way out (QEMU removes its pid file before it is gone) or
    one that must not outlive the VM: wait up to ``grace`` seconds for them
    to exit, kill what is left, then remove the groups. False if that failed."""
    found = hierarchies() if found is None else found
    if release(name, found):
        return True
    deadline = time.monotonic() + grace
    for pid in members(name, found):
        _wait_exit(pid, deadline - time.monotonic())
    for pid in members(name, found):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    for pid in members(name, found):
        _wait_exit(pid, deadline - time.monotonic())
    return release(name, found)


def _wait_exit(pid: int, timeout: float) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.poll(max(timeout, 0) * 1000)
    finally:
        os.close(fd)


def members(name: str, found: list[Hierarchy] | None = None) -> set[int]:
    """Process ids in the VM's groups (any hierarchy)."""
    pids: set[int] = set()
    for d in paths(name, found):
        with contextlib.suppress(FileNotFoundError):
            pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
    return pids


def available() -> bool:
    return any(h.controllers for h in hierarchies()) and os.geteuid() == 0
