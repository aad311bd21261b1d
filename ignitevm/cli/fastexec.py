"""``ignite exec VM -- CMD`` without building the command tree (a measured figure).

The common form of ``exec`` is read here with the few modules it needs; the
rest of the CLI (argparse, logging, the operations layer) is not loaded. What
this cannot read as the full parser would (any other flag or form: ``-i``,
``-t``, ``--ssh``, ``--help``, no ``--``...) and every case that is not the
plain one (the VM not found or not running, paused, all agent channels busy,
a channel being added) returns None before anything is changed: the full
path then runs and says what it always says. From the taking of a channel on,
the work is the full path's own code (the same channel, handshake and
session), and so are its errors.
"""

from __future__ import annotations

import os
import sys
import time
from collections import namedtuple
from collections.abc import Sequence

from ignitevm.errors import IgniteError

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:
    import socket
    from pathlib import Path

    from ignitevm.agent.client import AgentError
    from ignitevm.providers.vmm.qemu.machine import QemuVMM
    from ignitevm.store import lookup

# exec's flags that take a value, as the full parser spells them (cli/parser.py)
_VALUE_FLAGS = {"-e": "env", "--env": "env", "-w": "workdir", "--workdir": "workdir",
                "-u": "user", "--user": "user", "--timeout": "timeout", "--root": "root"}


# (collections.namedtuple, not typing.NamedTuple: typing would cost this path ~3 ms)
class Request(namedtuple("Request", "vm command env workdir user timeout root")):
    __slots__ = ()
    vm: str
    command: list[str]
    env: list[str]
    workdir: str
    user: str
    timeout: float
    root: str | None


def parse(words: Sequence[str]) -> Request | None:
    """``[FLAG VALUE]... VM -- COMMAND...`` (the words after ``exec``), or None
    for anything else."""
    from ignitevm.cli.fastvm import debugging

    if debugging():
        return None   # (tracebacks are the full path's)
    values: dict[str, str] = {}
    env: list[str] = []
    i = 0
    while i < len(words) and words[i].startswith("-"):
        flag, eq, value = words[i].partition("=")
        name = _VALUE_FLAGS.get(flag)
        if name is None or (eq and not flag.startswith("--")):
            return None
        if not eq:
            if i + 1 >= len(words):
                return None
            value = words[i + 1]
            i += 1
        if value.startswith("-") or value == "":
            return None   # (argparse reads such words its own way)
        if name == "env":
            env.append(value)
        elif name in values:
            return None
        else:
            values[name] = value
        i += 1
    if len(words) < i + 3 or words[i + 1] != "--" or words[i].startswith("-"):
        return None
    try:
        timeout = float(values.get("timeout", "30"))
    except ValueError:
        return None
    return Request(words[i], list(words[i + 2:]), env, values.get("workdir", ""),
                   values.get("user", ""), timeout, values.get("root"))


def run(words: Sequence[str]) -> int | None:
    """Run the exec; None when the full path must (nothing was done)."""
    req = parse(words)
    if req is None:
        return None
    from pathlib import Path

    from ignitevm.agent.client import AgentError, Channel
    from ignitevm.providers.vmm.qemu.machine import QemuVMM
    from ignitevm.store import layout

    root = Path(req.root) if req.root else layout.default_root()
    vmm = QemuVMM()
    try:
        found = _take(root, req.vm, vmm)
    except OSError:
        return None   # (a folder it may not read, say: the full path's to tell)
    if found is None:
        return None
    vm, d, taken = found
    deadline = time.monotonic() + req.timeout
    # From here on this is the exec (cli/guest.py: cmd_exec, the same steps).
    from ignitevm.agent import session

    what = f"VM {vm.name!r}"
    try:
        ch = Channel.open(_Ports(vmm, d), *taken, deadline, what, req.timeout)
    except AgentError as exc:
        _explain(root, vm.uid, exc)
        raise
    with ch:
        stdin_fd = sys.stdin.fileno() if not sys.stdin.closed else None
        forward = stdin_fd is not None and not os.isatty(stdin_fd)
        request = session.ExecRequest(req.command, req.env, req.workdir, req.user, None,
                                      forward)
        code = session.run_exec(ch, request, stdin_fd if forward else None,
                                frame_timeout=req.timeout)
    from ignitevm.cli.fastvm import finish

    return finish(code)


def _take(root: Path, query: str, vmm: QemuVMM
          ) -> tuple[lookup.Header, Path, tuple[int, Path]] | None:
    """The VM ``query`` names, its folder and a free agent channel, locked; None
    unless it is the plain case (running, not paused, a channel free, none being
    added)."""
    from ignitevm.agent.client import GROW_MARK, lock_free
    from ignitevm.cli.fastvm import find

    found = find(root, query)
    if found is None:
        return None
    vm, d = found
    if vm.paused or vmm.pid(d) is None:
        return None
    sockets = vmm.agent_sockets(d)
    if not sockets or (d / GROW_MARK).exists():
        return None
    taken = lock_free(sockets)
    return None if taken is None else (vm, d, taken)


def _explain(root: Path, uid: str, exc: AgentError) -> None:
    """What the full path says when the agent does not answer (operations/guest.py)."""
    from ignitevm.api.types import VM
    from ignitevm.operations import guest
    from ignitevm.operations.context import Context

    ctx = Context(root)
    try:
        vm = ctx.store.get(VM, uid)
    except IgniteError:
        return
    guest.explain(ctx, vm, exc)


class _Ports:
    """A VM's agent channels (operations/vms.py: AgentPorts, without a Context)."""

    def __init__(self, vmm: QemuVMM, workdir: Path):
        self.vmm, self.workdir = vmm, workdir

    def sockets(self) -> list[Path]:
        return self.vmm.agent_sockets(self.workdir)

    def grow(self) -> Path | None:
        return None   # (never asked: a free channel is taken before)

    def repair(self, path: Path) -> None:
        pass

    def connect(self, path: Path) -> socket.socket:
        return self.vmm.connect_socket(self.workdir, path)
