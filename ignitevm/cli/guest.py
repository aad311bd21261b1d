"""``ignite exec`` and ``ignite cp``: into a running VM through its guest agent."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ignitevm.api.types import VM
from ignitevm.cli.common import context
from ignitevm.errors import InvalidInput


def _fix_identity_clash(args: argparse.Namespace, command: list[str], dashdash: bool
                        ) -> list[str]:
    """``-i`` is Ignite's --identity FILE, and Docker's interactive flag.

    ``ignite exec -i web -- cmd`` means interactive when ``web`` is no file: the
    VM's name was read as the identity. Without ``--`` the first word of the
    command was read as the VM's name: the words shift back into place.
    Returns the command.
    """
    ident = args.identity
    if ident == "t" and not os.path.isfile(ident):
        # Docker's `-it`: argparse read it as `-i t`.
        args.identity, args.interactive, args.tty = None, True, True
        return command
    if not ident or os.path.isfile(ident):
        return command
    if args.vm is None:
        args.vm = ident
    elif dashdash:
        raise InvalidInput(f"-i {ident}: no such identity file",
                           hint="-i means --interactive only right before the VM: "
                           "ignite exec -i VM -- COMMAND")
    else:
        command = [args.vm, *command]
        args.vm = ident
    args.identity = None
    args.interactive = True
    return command


def exec_command(args: argparse.Namespace) -> list[str]:
    """The command to run, from the words around ``--`` (``args`` is completed)."""
    dashdash = bool(args.exec_dashdash)
    command = list(args.command)
    after = [w[1:] for w in args.exec_argv or []]
    if dashdash and command and not command[0].startswith("-"):
        # `exec vm ls -l -- x`: that `--` is the command's own.
        command, dashdash = [*command, "--", *after], False
    elif dashdash:
        # Flags between the VM and `--` are ours, as with Ignite's interspersed flags.
        if command:
            from ignitevm.cli.parser import Parser, exec_flags

            flags = Parser(prog="ignite exec", add_help=False)
            exec_flags(flags)
            for action in flags._actions:
                action.default = argparse.SUPPRESS
            flags.parse_args(command, namespace=args)
        command = after
    if not args.ssh:
        command = _fix_identity_clash(args, command, dashdash)
    if args.vm is None:
        raise InvalidInput("no VM named", hint="ignite exec <vm> -- <command> [args...]")
    if not command:
        raise InvalidInput("no command given", hint="ignite exec <vm> -- <command> [args...]")
    return command


def cmd_exec(args: argparse.Namespace) -> int:
    from ignitevm.agent import session
    from ignitevm.operations import guest

    command = exec_command(args)
    if args.ssh:
        from ignitevm.cli.ssh import exec_over_ssh

        return exec_over_ssh(args, command)
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
                return session.run_exec(ch, req, stdin_fd, frame_timeout=args.timeout)
        return session.run_exec(ch, req, stdin_fd if forward else None,
                                frame_timeout=args.timeout)


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
    limits = None
    if src_vm:
        from ignitevm.agent.untar import Limits
        from ignitevm.util.sizes import parse_size

        if args.max_files < 1:
            raise InvalidInput(f"--max-files {args.max_files}: must be at least 1")
        limits = Limits(max_bytes=parse_size(args.max_size, "--max-size"),
                        max_entries=args.max_files)
    with progress("copying", size, min_total=32 << 20) as callback:
        if dst_vm:
            guest.copy_in(ctx, vm, Path(src), dst, args.timeout, callback)
        else:
            guest.copy_out(ctx, vm, src, dst, args.timeout, callback, limits)
    return 0

