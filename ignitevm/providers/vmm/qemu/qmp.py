"""A small synchronous QMP client: one connection, one command at a time.

QMP is JSON lines over a Unix socket: a greeting, `qmp_capabilities`, then
each command answered by one `return` or `error` message, with events
(`STOP`, `RESUME`, ...) in between, which are skipped. It imports nothing
heavy (the qemu.qmp package pulls in asyncio, ~50 ms on the CLI path).
"""

from __future__ import annotations

import json
import socket
from typing import Any

MAX_LINE = 16 << 20  # bytes in one QMP message (a qom-list of many devices stays far below)


class QMPError(Exception):
    """QEMU answered a command with an error."""

    def __init__(self, command: str, klass: str, desc: str):
        super().__init__(f"{command}: {desc}")
        self.command, self.klass, self.desc = command, klass, desc


class Monitor:
    def __init__(self, timeout: float):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        self._buf = b""

    def connect(self, path: str) -> None:
        self.sock.connect(path)
        greeting = self._read()
        if "QMP" not in greeting:
            raise ConnectionError(f"{path} does not speak QMP")
        self.cmd("qmp_capabilities")

    def close(self) -> None:
        self.sock.close()

    def cmd(self, command: str, **arguments: Any) -> Any:
        """Run ``command``; its `return` value, or QMPError."""
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                err = reply["error"] if isinstance(reply["error"], dict) else {}
                raise QMPError(command, str(err.get("class", "")), str(err.get("desc", "")))
            # (an event: skipped)

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_LINE:
                raise ConnectionError("QMP message too long")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP connection closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        value = json.loads(line)
        if not isinstance(value, dict):
            raise ConnectionError("QMP sent something other than an object")
        return value


def connect(path: str, timeout: float) -> Monitor:
    mon = Monitor(timeout)
    try:
        mon.connect(path)
    except BaseException:
        mon.close()
        raise
    return mon
