"""Saving and restoring a VM's state (RAM and devices) over QMP migration.

QEMU 7.2 has no ``file:`` URI, and a jailed QEMU may not run ``exec:``
commands (its seccomp filter forbids fork/exec): the host opens the state
file and hands its descriptor over QMP (``getfd``), so the same path serves
both modes. ``x-ignore-shared`` leaves out RAM mapped shared from a file
(a snapshot's template, which clones map privately).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ignitevm.errors import IgniteError

if TYPE_CHECKING:
    from ignitevm.providers.vmm.qemu.qmp import Monitor

BANDWIDTH = 32 << 30  # bytes/s: QEMU's default (128 MiB/s) would take seconds
FD_NAME = "ignite-state"


def _capabilities(mon: Monitor, ignore_shared: bool) -> None:
    caps = [{"capability": "events", "state": True},
            {"capability": "x-ignore-shared", "state": ignore_shared}]
    mon.cmd("migrate-set-capabilities", capabilities=caps)


def _wait(mon: Monitor, timeout: float, what: str) -> None:
    data = mon.wait_event("MIGRATION", lambda d: d.get("status") in ("completed", "failed",
                                                                      "cancelled"), timeout)
    if data.get("status") != "completed":
        info = {}
        try:
            info = mon.cmd("query-migrate")
        except Exception:  # (only for the message)
            pass
        why = info.get("error-desc") if isinstance(info, dict) else None
        raise IgniteError(f"QEMU could not {what}: {why or data.get('status')}")


def save(mon: Monitor, fd: int, *, ignore_shared: bool = False, timeout: float = 120.0) -> None:
    """Write the stopped VM's state to ``fd``; returns when QEMU is done."""
    _capabilities(mon, ignore_shared)
    mon.cmd("migrate-set-parameters", **{"max-bandwidth": BANDWIDTH, "downtime-limit": 2000})
    mon.cmd("getfd", fd=fd, fdname=FD_NAME)
    mon.cmd("migrate", uri=f"fd:{FD_NAME}")
    try:
        _wait(mon, timeout, "save the VM's state")
    except TimeoutError:
        mon.cmd("migrate_cancel")
        raise IgniteError(f"QEMU did not save the VM's state within {timeout:.0f}s") from None


def load(mon: Monitor, fd: int, *, ignore_shared: bool = False, timeout: float = 120.0) -> None:
    """Read a state into a QEMU started with ``-incoming defer``; it is then paused."""
    _capabilities(mon, ignore_shared)
    # No self-announcement once loaded: the guest still has the source's MAC
    # and address until RESTORE, and would announce them on the clone's network.
    mon.cmd("migrate-set-parameters", **{"announce-rounds": 0})
    mon.cmd("getfd", fd=fd, fdname=FD_NAME)
    mon.cmd("migrate-incoming", uri=f"fd:{FD_NAME}")
    try:
        _wait(mon, timeout, "restore the snapshot's state")
    except TimeoutError:
        raise IgniteError(f"QEMU did not restore the state within {timeout:.0f}s") from None
