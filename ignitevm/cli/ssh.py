"""``ignite ssh`` and ``ignite exec --ssh``: the system OpenSSH client, with the
VM's key, its pinned host key and its forwarded port."""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from ignitevm.api.types import VM
from ignitevm.cli.common import context
from ignitevm.errors import IgniteError
from ignitevm.operations.context import Context


def wait_for_sshd(port: int, timeout: float, host: str = "127.0.0.1") -> None:
    """Wait until the guest's sshd sends its banner (on its address, or through
    the forwarded port)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.settimeout(max(0.5, min(5.0, deadline - time.monotonic())))
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise IgniteError(f"the VM's SSH server did not answer within {timeout:.0f}s",
                              hint="does the image run sshd? check: ignite logs")
        time.sleep(0.2)


def ssh_argv(ctx: Context, vm: VM, identity: str | None, tty: bool, timeout: float) -> list[str]:
    from ignitevm.operations import sshkeys, vms

    d = vms.workdir(ctx, vm)
    uid = vm.metadata.uid
    if ctx.vmm.pid(d) is None:
        raise IgniteError(f"VM {uid!r} is not running")
    if vm.status.paused:
        raise vms.paused_error(vm)
    try:
        port = int((d / vms.SSH_PORT_FILE).read_text())
    except (OSError, ValueError):
        raise IgniteError(f"VM {vm.metadata.name!r} was started without --ssh",
                          hint="create it with --ssh to reach it over SSH") from None
    key = Path(identity) if identity else sshkeys.client_key(d, uid)
    if not key.exists():
        raise IgniteError(f"no private key found for VM {uid!r}",
                          hint="give one with -i/--identity")
    # On a CNI bridge the VM's own address; in user mode a loopback forward.
    host = "127.0.0.1"
    if vm.status.network.plugin == "cni" and vm.status.network.ip_addresses:
        host = vm.status.network.ip_addresses[0]
    wait_for_sshd(port, timeout, host)
    return ["ssh", "-i", str(key), "-p", str(port),
            "-o", f"UserKnownHostsFile={d / sshkeys.KNOWN_HOSTS}",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
            "-o", "LogLevel=ERROR", "-o", f"ConnectTimeout={int(timeout)}",
            "-t" if tty else "-T", f"root@{host}"]


def _exec(argv: list[str]) -> int:
    from ignitevm.util.proc import which

    sys.stdout.flush()
    os.execv(which("ssh"), argv)
    return 1  # not reached


def cmd_ssh(args: argparse.Namespace) -> int:
    ctx = context(args)
    vm = ctx.store.resolve(VM, args.vm)
    return _exec(ssh_argv(ctx, vm, args.identity, args.tty, args.timeout))


def exec_over_ssh(args: argparse.Namespace, command: list[str]) -> int:
    ctx = context(args)
    vm = ctx.store.resolve(VM, args.vm)
    argv = ssh_argv(ctx, vm, args.identity, args.tty, args.timeout)
    return _exec([*argv, "--", shlex.join(command)])
