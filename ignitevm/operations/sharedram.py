"""A snapshot's RAM, shared by its clones' QEMUs through the page cache.

Each clone maps the snapshot's ``memory`` file privately (``share=off``):
they all read the same page-cache pages and copy only the pages they write.
QEMU 7.2 opens that file read-write even for a private mapping (8.1 falls
back to read-only, 8.2 has ``rom=off``), so whoever may open it may also
write it, and with it every other clone's memory. A jailed clone runs under
a uid that must never write the template; it therefore restores from the
state with RAM inside (``state``), unshared. Unconfined clones
(``--sandbox=none``, root or the store's owner) map ``memory`` directly.

The memory file's digest is checked once (then again only if the file's
inode, size, mtime or ctime change: a root-only folder, so no one else can
touch it without the ctime moving).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.errors import InvalidInput

if TYPE_CHECKING:
    from ignitevm.api.types import Snapshot
    from ignitevm.operations.context import Context

MEMORY = "memory"
VERIFIED = ".memory.verified"


def _stamp(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"


def template(ctx: Context, snap: Snapshot) -> Path:
    """The RAM file clones of ``snap`` map privately, its digest checked."""
    from ignitevm.operations.snapshots import check_files, folder
    from ignitevm.util.fs import atomic_write

    d = folder(ctx, snap)
    path = d / MEMORY
    try:
        stamp = _stamp(path)
    except FileNotFoundError:
        raise InvalidInput(f"snapshot {snap.metadata.name!r} is damaged: its RAM file is "
                           "missing", hint=f"remove it (ignite snapshot rm "
                           f"{snap.metadata.name}) and save the VM again") from None
    try:
        if (d / VERIFIED).read_text() == stamp:
            return path
    except OSError:
        pass
    check_files(ctx, snap, (MEMORY,))
    atomic_write(d / VERIFIED, stamp.encode())
    return path


def release(snapdir: Path) -> None:
    """Nothing is held for a snapshot's RAM outside its folder."""
