"""What this test process holds: its open descriptors and child processes
(for tests that check a failed launch keeps nothing)."""

from __future__ import annotations

import os


def open_fds() -> set[str]:
    """The descriptors this process has open."""
    return set(os.listdir("/proc/self/fd"))


def children() -> set[int]:
    """This process's children, from every one of its threads."""
    me = os.getpid()
    found = set()
    for task in os.listdir(f"/proc/{me}/task"):
        with open(f"/proc/{me}/task/{task}/children") as f:
            found |= {int(p) for p in f.read().split()}
    return found
