"""An interactive serial console: raw terminal <-> the VM's console socket.

Ctrl+P then Ctrl+Q detaches and leaves the VM running.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import sys
from collections.abc import Iterator

from ignitevm.api.types import VM
from ignitevm.errors import IgniteError
from ignitevm.operations import vms
from ignitevm.operations.context import Context

CTRL_P, CTRL_Q = b"\x10", b"\x11"


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def attach(ctx: Context, vm: VM) -> int:
    d = vms.workdir(ctx, vm)
    if ctx.vmm.pid(d) is None:
        raise IgniteError(f"VM {vm.metadata.name!r} is not running",
                          hint=f"start it with: ignite start {vm.metadata.name}")
    try:
        sock = ctx.vmm.connect_socket(d, ctx.vmm.console_socket(d))
    except OSError as exc:
        raise IgniteError(f"cannot connect to the console of {vm.metadata.name!r}: {exc}") from None
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(stdin, selectors.EVENT_READ)
    pending = b""
    with sock, raw_terminal(stdin):
        # The ID is printed once the terminal is raw: from then on the detach
        # keys reach us (in cooked mode Ctrl+Q is eaten as XON).
        os.write(stdout, f"{vm.metadata.uid}\r\n".encode())
        while True:
            for key, _ in sel.select():
                if key.fileobj is sock:
                    data = sock.recv(65536)
                    if not data:
                        return 0
                    os.write(stdout, data)
                    continue
                data = os.read(stdin, 4096)
                if not data:
                    sel.unregister(stdin)
                    continue
                data = pending + data
                pending = b""
                if CTRL_P + CTRL_Q in data:
                    sock.sendall(data.split(CTRL_P + CTRL_Q, 1)[0])
                    os.write(stdout, b"\r\n")
                    return 0
                if data.endswith(CTRL_P):
                    data, pending = data[:-1], CTRL_P
                sock.sendall(data)
