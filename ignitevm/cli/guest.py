"""``ignite exec`` and ``ignite cp``: into a running VM through its guest agent."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ignitevm.api.types import VM
from ignitevm.cli.common import context
from ignitevm.errors import InvalidInput


def _fix_identity_clash(args: argparse.Namespace) -> None:
    """``-i`` is Ignite's --identity FILE, and Docker's interactive flag.

    ``ignite exec -i web -- cmd`` means interactive when ``web`` is no file:
    then the words shift back into place.
    """
    ident = args.identity
    if ident == "t" and not os.path.isfile(ident):
        # Docker's `-it`: argparse read it as `-i t`.
        args.identity, args.interactive, args.tty = None, True, True
        return
    if ident and not os.path.isfile(ident):
        args.command = [args.vm, *args.command]
        args.vm = ident
        args.identity = None
        args.interactive = True


def cmd_exec(args: argparse.Namespace) -> int:
    from ignitevm.agent import session
    from ignitevm.operations import guest

    command = list(args.command)
    if "--" in command:
        # Flags between the VM and `--` are ours, as with Ignite's interspersed flags.
        cut = command.index("--")
        if cut:
            from ignitevm.cli.parser import Parser, exec_flags

            flags = Parser(prog="ignite exec", add_help=False)
            exec_flags(flags)
            for action in flags._actions:
                action.default = argparse.SUPPRESS
            flags.parse_args(command[:cut], namespace=args)
        command = command[cut + 1:]
    if args.ssh:
        if not command:
            raise InvalidInput("no command given", hint="ignite exec --ssh <vm> -- <command>")
        from ignitevm.cli.ssh import exec_over_ssh

        return exec_over_ssh(args, command)
    _fix_identity_clash(args)
    if not command:
        raise InvalidInput("no command given", hint="ignite exec <vm> -- <command> [args...]")
    ctx = context(args)
    vm = ctx.store.resolve(VM, args.vm)
    stdin_fd = sys.stdin.fileno() if not sys.stdin.closed else None
    # Piped stdin is forwarded (as Ignite did); a terminal only with -i or -t.
    forward = stdin_fd is not None and (args.interactive or args.tty
                                        or not os.isatty(stdin_fd))
    tty = session.terminal_size() if args.tty else None
    req = session.ExecRequest(command, list(args.env), args.workdir or "", args.user or "",
                              tty, forward)
    with guest.channel(ctx, vm, args.timeout) as ch:
        if args.tty and stdin_fd is not None and os.isatty(stdin_fd):
            from ignitevm.cli.attach import raw_terminal

            with raw_terminal(stdin_fd):
                return session.run_exec(ch, req, stdin_fd)
        return session.run_exec(ch, req, stdin_fd if forward else None)


def _split(spec: str) -> tuple[str | None, str]:
    head, sep, tail = spec.partition(":")
    if sep and "/" not in head and head:
        return head, tail
    return None, spec


def cmd_cp(args: argparse.Namespace) -> int:
    from ignitevm.operations import guest
    from ignitevm.util.progress import progress

    src_vm, src = _split(args.source)
    dst_vm, dst = _split(args.dest)
    if src_vm and dst_vm:
        raise InvalidInput("both source and destination name a VM",
                           hint="copy between the host and one VM: ignite cp ./f vm:/path")
    if not src_vm and not dst_vm:
        raise InvalidInput("neither source nor destination names a VM",
                           hint="write the VM side as <vm>:<path>, e.g. ignite cp ./f web:/tmp/")
    ctx = context(args)
    vm = ctx.store.resolve(VM, (src_vm or dst_vm))  # type: ignore[arg-type]
    size = 0
    if dst_vm:
        path = Path(src)
        size = path.stat().st_size if path.is_file() else 0
    with progress("copying", size, min_total=32 << 20) as callback:
        if dst_vm:
            guest.copy_in(ctx, vm, Path(src), dst, args.timeout, callback)
        else:
            guest.copy_out(ctx, vm, src, Path(dst), args.timeout, callback)
    return 0

