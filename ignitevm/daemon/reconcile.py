"""Keep the host's VMs in line with a set of desired VM objects.

The desired set comes from a source (a folder, a Git repository). For each
desired VM, by UID: ``status.running: true`` means it must exist and run
(it is created from its spec if missing, started if stopped); ``false``
means it must not run (a graceful stop, killed after a timeout). A VM this
source made whose object is gone from the source is stopped and removed.
VMs made by hand, or by another source, are never touched.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

from ignitevm.api.types import VM
from ignitevm.errors import IgniteError
from ignitevm.log import log
from ignitevm.operations import vms
from ignitevm.operations.context import Context

MANAGED_BY = "ignite.weave.works/managed-by"


class Reconciler:
    def __init__(self, ctx: Context, source: str):
        self.ctx = ctx
        self.source = source
        self._failed: dict[str, str] = {}  # uid -> last error said (not repeated)

    def managed(self) -> dict[str, VM]:
        return {vm.metadata.uid: vm for vm in self.ctx.store.list(VM)
                if (vm.metadata.annotations or {}).get(MANAGED_BY) == self.source}

    def sync(self, desired: dict[str, VM]) -> None:
        for uid, want in desired.items():
            with self._attempt(uid, want.metadata.name):
                self._one(want)
        for uid, vm in self.managed().items():
            if uid not in desired:
                with self._attempt(uid, vm.metadata.name):
                    log.info("VM %r (%s) left %s: removing it", vm.metadata.name, uid,
                             self.source)
                    vms.remove(self.ctx, vm, force=True)

    def _one(self, want: VM) -> None:
        uid = want.metadata.uid
        have = next((vm for vm in self.ctx.store.list(VM) if vm.metadata.uid == uid), None)
        if have is None:
            if not want.status.running:
                return  # recorded in the source only; made when it should run
            vm = copy.deepcopy(want)
            vm.status = VM().status
            vm.metadata.annotations = {**(vm.metadata.annotations or {}),
                                       MANAGED_BY: self.source}
            have = vms.create(self.ctx, vm)
        running = vms.is_running(self.ctx, have)
        if want.status.running and not running:
            vms.start(self.ctx, have)
        elif not want.status.running and running:
            vms.stop(self.ctx, have)

    @contextmanager
    def _attempt(self, uid: str, name: str) -> Iterator[None]:
        """Run one VM's step; a failure is logged (once until it changes) and
        the other VMs go on."""
        try:
            yield
        except IgniteError as exc:
            said = exc.brief + (f" ({exc.hint})" if exc.hint else "")
            if self._failed.get(uid) != said:
                log.error("VM %r (%s): %s", name, uid, said)
            self._failed[uid] = said
        else:
            self._failed.pop(uid, None)
