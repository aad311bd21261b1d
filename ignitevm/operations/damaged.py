"""VMs whose stored object cannot be read (a damaged ``metadata.json``).

The store leaves them out of its listings so that one bad file breaks
nothing else; this module keeps them in sight: ``ps`` shows them, ``rm`` (by
UID) removes them and kills their QEMU, ``ignited`` reports them.
"""

from __future__ import annotations

from collections.abc import Collection

from ignitevm.api.types import VM, ObjectMeta
from ignitevm.errors import Conflict
from ignitevm.log import log
from ignitevm.operations.context import Context
from ignitevm.store.store import Damaged


def listing(ctx: Context, known: Collection[str] = ()) -> list[tuple[Damaged, bool]]:
    """Every damaged VM (``known``: UIDs just listed fine), with whether its QEMU runs."""
    return [(d, ctx.vmm.pid(d.folder) is not None) for d in ctx.store.damaged(VM, known)]


def find(ctx: Context, query: str) -> Damaged | None:
    """The damaged VM whose UID is ``query``, or starts with it (if only one does)."""
    found = [d for d in ctx.store.damaged(VM) if d.uid.startswith(query)] if query else []
    exact = [d for d in found if d.uid == query]
    return (exact or found)[0] if len(exact or found) == 1 else None


def warn(d: Damaged, running: bool) -> None:
    log.warning("VM %s is damaged: %s (folder %s%s); remove it with: ignite rm -f %s",
                d.uid, d.reason, d.folder, ", QEMU running" if running else "", d.uid)


def remove(ctx: Context, d: Damaged, *, force: bool = False) -> None:
    """Remove a damaged VM's folder; with ``force`` kill its QEMU first."""
    from ignitevm.operations.vms import vm_lock

    stub = VM(metadata=ObjectMeta(uid=d.uid))
    with vm_lock(ctx, stub):
        if ctx.vmm.pid(d.folder) is not None:
            if not force:
                raise Conflict(f"damaged VM {d.uid} is running", hint="use rm -f to kill it")
            ctx.vmm.kill(d.folder)
        ctx.store.delete(stub)
    log.info("Removed damaged VM with ID %r", d.uid)
