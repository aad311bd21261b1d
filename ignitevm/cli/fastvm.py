"""Plain commands on one VM without the command tree (CLI start-up is a
measured figure): finding the VM for ``exec``'s fast path (cli/fastexec.py),
and ``ignite pause VM`` / ``ignite resume VM``.

Only the plain form is read here (one VM named, no flag); anything else, and
every case that is not the plain one (the VM not found, not running, already
paused or not paused, QEMU in another state), returns None before anything is
changed, and the full path runs and says what it always says. The steps are
the full path's (operations/vms.py: pause, resume): the VM's lock, the same
QMP exchange (providers/vmm/qemu/running.py, which QemuVMM runs too), the
record saved with its new ``paused``, the same message.

Built-in modules only, as cli/fastpull.py: no ``pathlib``, ``socket``,
``json`` (util/jsonlite.py reads and writes the record as ``json`` does),
``contextlib`` or ``collections``; tests/unit/test_fastexec.py holds that.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:
    from collections.abc import Sequence

    from ignitevm.store import lookup


def debugging() -> bool:
    """IGNITE_DEBUG=1: tracebacks are the full path's."""
    return os.environ.get("IGNITE_DEBUG") == "1"


def finish(code: int) -> int:
    """End a fast path's process at once with ``code``, once what it wrote is
    out: the interpreter's own teardown (its modules, objects and caches
    freed one by one) is ~10-20 ms after the work is done, the last part of a
    measured command. Returns (the normal exit then) when stdout or stderr
    cannot be flushed, or when the logging module was loaded (its handlers
    are flushed at exit)."""
    if "logging" in sys.modules:
        return code
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:   # (a closed pipe: the normal exit says what it says)
        return code
    os._exit(code)


def find(root: str, query: str) -> tuple[lookup.Header, str] | None:
    """The VM ``query`` names (its record's header) and its folder; None when
    the records cannot say for sure or none or several match (the full path
    tells). OSError where the store cannot be read."""
    from ignitevm.errors import IgniteError
    from ignitevm.store import layout, lookup

    layout.secure(root)
    headers = lookup.read_headers(os.path.join(root, "vm"))
    if headers is None:
        return None
    try:
        vm = headers[lookup.pick([(h.uid, h.name) for h in headers], query, "vm")]
    except IgniteError:
        return None
    return vm, os.path.join(root, "vm", vm.uid)


def qemu_pid(d: str) -> int | None:
    """QemuVMM.pid: the VM's QEMU, and a look at its console log where it may be
    past its limit (then with QemuVMM itself)."""
    from ignitevm.providers.vmm.qemu import running

    pid = running.pid(d)
    if pid is not None and running.log_looked_at(d):
        from pathlib import Path

        from ignitevm.providers.vmm.qemu.machine import QemuVMM

        pid = QemuVMM().pid(Path(d))
    return pid


def switch(op: str, words: Sequence[str]) -> int | None:
    """``pause VM`` or ``resume VM`` (``op``; ``words``: what follows it);
    None when the full path must (nothing was done)."""
    if len(words) != 1 or words[0].startswith("-") or debugging():
        return None
    from ignitevm.store import layout
    from ignitevm.util.files import lock

    root = layout.root_text()
    try:
        found = find(root, words[0])
    except OSError:
        return None
    if found is None:
        return None
    vm, d = found
    if vm.paused != (op == "resume") or not os.path.isdir(d):
        return None
    fd = lock(os.path.join(d, ".lock"))  # (operations/vms.py: vm_lock)
    try:
        return _switch(op, root, vm, d)
    finally:
        os.close(fd)


def _switch(op: str, root: str, vm: lookup.Header, d: str) -> int | None:
    from ignitevm.providers.vmm.qemu import running
    from ignitevm.store import lookup
    from ignitevm.store.layout import METADATA
    from ignitevm.util import jsonlite
    from ignitevm.util.files import atomic_write, no_space

    meta = os.path.join(d, METADATA)
    try:
        with open(meta, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    if lookup.read_header(raw) != vm or qemu_pid(d) is None:
        return None   # (changed meanwhile, or not running: the full path tells)
    pause = op == "pause"
    # QEMU's state before; the command was sent only if it was the one named
    state = running.pause(d) if pause else running.resume(d)
    if state != ("running" if pause else "paused"):
        return None   # (nothing sent: the full path asks again and says why)
    data = jsonlite.loads(raw)
    data["status"]["paused"] = pause  # type: ignore[index]
    try:  # (util/fs.py: no_space_errors)
        atomic_write(meta, jsonlite.dumps(data) + "\n")
    except OSError as exc:
        error = no_space(root, exc)
        if error is None:
            raise
        raise error from None
    print(f"{'Paused' if pause else 'Resumed'} VM with name {vm.name!r} and ID {vm.uid!r}",
          file=sys.stderr)
    return 0
