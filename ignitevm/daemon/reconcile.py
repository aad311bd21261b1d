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
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ignitevm.api.defaults import default_vm, validate_vm
from ignitevm.api.types import VM
from ignitevm.api.validation import printable
from ignitevm.daemon.policy import ManifestPolicy
from ignitevm.errors import Conflict, IgniteError
from ignitevm.log import log
from ignitevm.operations import vms
from ignitevm.operations.context import Context
from ignitevm.store.store import Damaged

MANAGED_BY = "ignite.weave.works/managed-by"
# A VM that keeps stopping by itself is started again after a growing pause.
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 2.0, 300.0, 60.0


class Reconciler:
    def __init__(self, ctx: Context, source: str, policy: ManifestPolicy | None = None):
        self.ctx = ctx
        self.source = source
        self.policy = policy or ManifestPolicy()  # default: no host file, no device
        self._damaged: dict[str, str] = {}  # uid -> what was said about its damage
        self._failed: dict[str, str] = {}  # uid -> last error said (not repeated)
        self._started: dict[str, float] = {}  # uid -> when this reconciler last started it
        self._pause: dict[str, float] = {}  # uid -> the last pause before a restart
        self._wait_until: dict[str, float] = {}  # uid -> no restart before then

    def sync(self, desired: dict[str, VM]) -> None:
        """One pass. A failure with one VM is logged and the others go on; it
        is tried again at the next pass."""
        try:
            existing = {vm.metadata.uid: vm for vm in self.ctx.store.list(VM)}
            damaged = {d.uid: d for d in self.ctx.store.damaged(VM, existing)}
        except Exception as exc:  # the store itself cannot be read: try next pass
            self._say("store", "", f"cannot list VMs: {describe(exc)}")
            return
        self._failed.pop("store", None)
        self._report_damaged(damaged)
        for uid, want in desired.items():
            with self._attempt(uid, want.metadata.name):
                if uid in damaged:
                    raise Conflict(f"its stored object is damaged ({damaged[uid].reason})",
                                   hint=f"remove it with: ignite rm -f {uid}")
                self._one(want, existing.get(uid))
        for uid, vm in existing.items():
            if uid not in desired and \
                    (vm.metadata.annotations or {}).get(MANAGED_BY) == self.source:
                with self._attempt(uid, vm.metadata.name):
                    log.info("VM %r (%s) left %s: removing it", vm.metadata.name, uid,
                             self.source)
                    vms.remove(self.ctx, vm, force=True)
        self._spares()

    def _spares(self) -> None:
        """Start filling the pools of snapshots short of spares (after the
        host's restart their spares are dead: the fill removes them, freeing
        their leases, and makes new ones). A fill that fails is not started
        again for a minute (operations/sparefill.py)."""
        from ignitevm.api.types import Snapshot
        from ignitevm.operations import sparefill

        with self._attempt("spares", ""):
            for snap in self.ctx.store.list(Snapshot):
                if snap.spec.spares:
                    sparefill.fill_later(self.ctx, snap, delay=0.0)

    def _report_damaged(self, damaged: dict[str, Damaged]) -> None:
        """Say once (until the reason changes) which VM folders cannot be read;
        they stay where they are (their QEMU may run) for a person to look at."""
        for uid, d in damaged.items():
            said = f"{d.reason} (folder {d.folder})"
            if self._damaged.get(uid) != said:
                running = self.ctx.vmm.pid(d.folder) is not None
                log.error("VM %s is damaged: %s%s; remove it with: ignite rm -f %s", uid, said,
                          ", its QEMU is running" if running else "", uid)
            self._damaged[uid] = said
        for uid in set(self._damaged) - set(damaged):
            del self._damaged[uid]

    def _one(self, want: VM, have: VM | None) -> None:
        uid = want.metadata.uid
        if have is not None and (have.metadata.annotations or {}).get(MANAGED_BY) != self.source:
            raise Conflict(f"a VM with this UID exists that was not made from {self.source}; "
                           "it is left alone", hint="give the manifest another metadata.uid")
        if have is None:
            if not want.status.running:
                return  # recorded in the source only; made when it should run
            vm = copy.deepcopy(want)
            validate_vm(default_vm(vm))  # before any path in it is looked at
            self.policy.check(vm)
            vm.status = VM().status
            vm.metadata.annotations = {**(vm.metadata.annotations or {}),
                                       MANAGED_BY: self.source}
            have = vms.create(self.ctx, vm)
        running = vms.is_running(self.ctx, have)
        if not running:
            vms.release_network_if_dead(self.ctx, have)  # its QEMU died: free its network
        if want.status.running and not running:
            if not self._may_restart(uid, have.metadata.name):
                return
            self.policy.check(have)
            self._started[uid] = time.monotonic()
            vms.start(self.ctx, have)
        elif not want.status.running and running:
            for state in (self._started, self._pause, self._wait_until):
                state.pop(uid, None)
            vms.stop(self.ctx, have)

    def _may_restart(self, uid: str, name: str) -> bool:
        """Whether to start a VM that should run and does not: at once the first
        time or after it ran a while; when it keeps stopping soon after a
        start, after a pause that doubles each time (up to 5 minutes)."""
        now = time.monotonic()
        started = self._started.get(uid)
        if started is None:
            return True
        wait_until = self._wait_until.get(uid)
        if wait_until is not None:
            if now < wait_until:
                return False
            del self._wait_until[uid]
            return True
        if now - started >= STABLE_AFTER:
            self._pause.pop(uid, None)
            return True
        pause = min(max(2 * self._pause.get(uid, 0.0), BACKOFF_FIRST), BACKOFF_MAX)
        self._pause[uid] = pause
        self._wait_until[uid] = now + pause
        log.warning("VM %r (%s) stopped %.0fs after it was started; starting it again "
                    "in %.0fs", name, uid, now - started, pause)
        return False

    @contextmanager
    def _attempt(self, uid: str, name: str) -> Iterator[None]:
        """Run one VM's step; a failure is logged (once until it changes) and
        the other VMs go on."""
        try:
            yield
        except Exception as exc:
            if not isinstance(exc, IgniteError):
                log.debug("VM %s", uid, exc_info=True)
            self._say(uid, name, describe(exc))
        else:
            self._failed.pop(uid, None)

    def _say(self, uid: str, name: str, said: str) -> None:
        if self._failed.get(uid) != said:
            if name:
                log.error("VM %r (%s): %s", name, printable(uid), printable(said))
            else:
                log.error("%s", printable(said))
        self._failed[uid] = said


def describe(exc: BaseException) -> str:
    if isinstance(exc, IgniteError):
        return exc.brief + (f" ({exc.hint})" if exc.hint else "")
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"unexpected {type(exc).__name__}: {exc}"
