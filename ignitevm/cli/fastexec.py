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

Built-in modules only on the way to the guest's answer (no ``pathlib``,
``socket``, ``json``, ``enum``, ``contextlib``, ``collections``, ``typing``):
the store is read by cli/fastvm.py, the VM's QEMU and its channels' peer
checked by providers/vmm/qemu/running.py (as QemuVMM checks them), and the
channel is a ``_socket.socket`` (agent/client.py, agent/session.py).
tests/unit/test_fastexec.py holds what is loaded.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:
    from _socket import socket
    from collections.abc import Sequence

    from ignitevm.agent.client import AgentError
    from ignitevm.store import lookup

# exec's flags that take a value, as the full parser spells them (cli/parser.py)
_VALUE_FLAGS = {"-e": "env", "--env": "env", "-w": "workdir", "--workdir": "workdir",
                "-u": "user", "--user": "user", "--timeout": "timeout", "--root": "root"}


class Request:
    """What the words ask for. (A plain class: typing.NamedTuple and
    collections.namedtuple cost this path ~3 ms and ~1.5 ms.)"""

    __slots__ = ("command", "env", "root", "timeout", "user", "vm", "workdir")

    def __init__(self, vm: str, command: list[str], env: list[str], workdir: str, user: str,
                 timeout: float, root: str | None):
        self.vm, self.command, self.env, self.workdir = vm, command, env, workdir
        self.user, self.timeout, self.root = user, timeout, root


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
    from ignitevm.agent.client import AgentError, Channel
    from ignitevm.store import layout

    root = req.root or layout.root_text()
    try:
        found = _take(root, req.vm)
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
        ch = Channel.open(_Ports(d), *taken, deadline, what, req.timeout)
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


def _take(root: str, query: str) -> tuple[lookup.Header, str, tuple[int, str]] | None:
    """The VM ``query`` names, its folder and a free agent channel, locked; None
    unless it is the plain case (running, not paused, a channel free, none being
    added)."""
    from ignitevm.agent.client import GROW_MARK, lock_free
    from ignitevm.cli.fastvm import find, qemu_pid
    from ignitevm.providers.vmm.qemu import running

    found = find(root, query)
    if found is None:
        return None
    vm, d = found
    if vm.paused or qemu_pid(d) is None:
        return None
    sockets = running.agent_sockets(d)
    if not sockets or os.path.exists(os.path.join(d, GROW_MARK)):
        return None
    taken = lock_free(sockets)
    return None if taken is None else (vm, d, taken)


def _explain(root: str, uid: str, exc: AgentError) -> None:
    """What the full path says when the agent does not answer (operations/guest.py)."""
    from pathlib import Path

    from ignitevm.api.types import VM
    from ignitevm.errors import IgniteError
    from ignitevm.operations import guest
    from ignitevm.operations.context import Context

    ctx = Context(Path(root))
    try:
        vm = ctx.store.get(VM, uid)
    except IgniteError:
        return
    guest.explain(ctx, vm, exc)


class _Ports:
    """A VM's agent channels (operations/vms.py: AgentPorts, without a Context;
    QemuVMM's steps, providers/vmm/qemu/running.py)."""

    def __init__(self, workdir: str):
        self.workdir = workdir

    def sockets(self) -> list[str]:
        from ignitevm.providers.vmm.qemu import running

        return running.agent_sockets(self.workdir)

    def grow(self) -> str | None:
        return None   # (never asked: a free channel is taken before)

    def repair(self, path: str) -> None:
        pass

    def connect(self, path: str) -> socket:
        """QemuVMM.connect_socket: the VM's QEMU running, and its peer checked."""
        import errno

        from ignitevm.cli.fastvm import qemu_pid
        from ignitevm.providers.vmm.qemu import running

        pid = qemu_pid(self.workdir)
        if pid is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "the VM is not running")
        return running.connect(pid, path)
