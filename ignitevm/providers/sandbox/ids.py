"""Per-VM host identities: each VM's VMM runs as its own uid and gid.

They come from a range kept for ignitevm (``BASE`` .. ``BASE + SLOTS``, in
the span of ids systemd leaves unused). Slot 0 is the group every VMM is a
member of, which may read the shared images and kernels. A VM's slot starts
at a hash of its uid (so VMs of different state roots rarely meet) and moves
on past slots taken by another VM of this root or by a user or group of this
host; it is recorded in the VM's folder (``ID_FILE``) and kept for its life.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import os
import pwd
from collections.abc import Callable, Iterable
from pathlib import Path

BASE = 0x70000000  # 1879048192
SLOTS = 1 << 24
SHARED_GID = BASE
ID_FILE = "sandbox-id"


def read(vmdir: Path) -> int | None:
    try:
        value = int((vmdir / ID_FILE).read_text().strip())
    except (OSError, ValueError):  # (none, or not a VM's folder)
        return None
    return value if BASE < value < BASE + SLOTS else None


def host_has(ident: int) -> bool:
    """True if this host's users or groups already use ``ident``."""
    for lookup in (pwd.getpwuid, grp.getgrgid):
        with contextlib.suppress(KeyError):
            lookup(ident)
            return True
    return False


def pick(vm_uid: str, taken: Iterable[int],
         in_use: Callable[[int], bool] = host_has) -> int:
    """The first free id from the VM's hashed slot on (slot 0 is never given)."""
    busy = set(taken)
    start = int.from_bytes(hashlib.sha256(vm_uid.encode()).digest()[:8], "big") % (SLOTS - 1)
    for step in range(SLOTS - 1):
        ident = BASE + 1 + (start + step) % (SLOTS - 1)
        if ident not in busy and not in_use(ident):
            return ident
    raise RuntimeError("no free VM id left")  # 16 million VMs on one root


def allocate(vmdir: Path) -> int:
    """The VM's id, allocated and recorded on first use. Siblings of ``vmdir``
    are the other VMs of the same root; their folder holds the lock."""
    ident = read(vmdir)
    if ident is not None:
        return ident
    fd = os.open(vmdir.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        ident = read(vmdir)
        if ident is None:
            taken = [i for d in vmdir.parent.iterdir()
                     if d != vmdir and (i := read(d)) is not None]
            ident = pick(vmdir.name, taken)
            tmp = vmdir / f".{ID_FILE}.tmp"
            tmp.write_text(f"{ident}\n")
            os.replace(tmp, vmdir / ID_FILE)
    finally:
        os.close(fd)
    return ident
