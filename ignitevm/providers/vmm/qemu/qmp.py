"""A small synchronous QMP client: one connection, one command at a time.

QMP is JSON lines over a Unix socket: a greeting, `qmp_capabilities`, then
each command answered by one `return` or `error` message, with events
(`STOP`, `RESUME`, ...) in between, which are skipped. It imports nothing
heavy (the qemu.qmp package pulls in asyncio, ~50 ms on the CLI path), and
for pause/resume's fast path (cli/fastvm.py) not even ``json`` or ``socket``:
QEMU's answers are read by json's own C scanner (util/jsonlite.py), a
command without arguments is written as ``json.dumps`` writes it, and the
connection is a ``_socket.socket``.
"""

from __future__ import annotations

import _socket
import time

from ignitevm.util import jsonlite

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:  # (pause/resume's fast path reads this module)
    from collections.abc import Callable
    from typing import Any

MAX_LINE = 16 << 20  # bytes in one QMP message (a qom-list of many devices stays far below)


class QMPError(Exception):
    """QEMU answered a command with an error."""

    def __init__(self, command: str, klass: str, desc: str):
        super().__init__(f"{command}: {desc}")
        self.command, self.klass, self.desc = command, klass, desc


class Monitor:
    def __init__(self, timeout: float):
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        self._buf = b""
        self.events: list[dict[str, Any]] = []

    def connect(self, path: str) -> None:
        self.sock.connect(path)
        greeting = self._read()
        if "QMP" not in greeting:
            raise ConnectionError(f"{path} does not speak QMP")
        self.cmd("qmp_capabilities")

    def close(self) -> None:
        self.sock.close()

    def cmd(self, command: str, *, fd: int | None = None, **arguments: Any) -> Any:
        """Run ``command``; its `return` value, or QMPError. ``fd`` is passed with
        it (SCM_RIGHTS), as `getfd` wants."""
        data = _message(command, arguments).encode() + b"\n"
        if fd is None:
            self.sock.sendall(data)
        else:
            import socket

            sent = socket.send_fds(self.sock, [data], [fd])  # type: ignore[arg-type]
            if sent < len(data):
                self.sock.sendall(data[sent:])
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                err = reply["error"] if isinstance(reply["error"], dict) else {}
                raise QMPError(command, str(err.get("class", "")), str(err.get("desc", "")))
            self._keep(reply)  # (an event: kept for wait_event)

    def wait_event(self, name: str, match: Callable[[dict[str, Any]], bool],
                   timeout: float) -> dict[str, Any]:
        """The first event ``name`` whose data ``match`` accepts (seen already or
        coming within ``timeout`` seconds); TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            while self.events:
                ev = self.events.pop(0)
                data = ev.get("data") if isinstance(ev.get("data"), dict) else {}
                if ev.get("event") == name and match(data):
                    return data
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no QMP event {name} within {timeout:.0f}s")
            old = self.sock.gettimeout()
            self.sock.settimeout(left)
            try:
                msg = self._read()
            except TimeoutError:
                raise TimeoutError(f"no QMP event {name} within {timeout:.0f}s") from None
            finally:
                self.sock.settimeout(old)
            if "event" in msg:
                self._keep(msg)

    def _keep(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if len(self.events) > 64:  # (bounded: a guest can make QEMU send many)
            del self.events[0]

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_LINE:
                raise ConnectionError("QMP message too long")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP connection closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        value = jsonlite.loads(line)
        if not isinstance(value, dict):
            raise ConnectionError("QMP sent something other than an object")
        return value


def _message(command: str, arguments: dict[str, Any]) -> str:
    """``json.dumps({"execute": command, "arguments": arguments})`` (without
    arguments: no ``json`` import, the same text)."""
    if not arguments:
        try:
            from _json import encode_basestring_ascii  # (json.dumps's own, ensure_ascii)
        except ImportError:
            pass
        else:
            return '{"execute": ' + encode_basestring_ascii(command) + "}"
    import json

    msg: dict[str, Any] = {"execute": command}
    if arguments:
        msg["arguments"] = arguments
    return json.dumps(msg)


def connect(path: str, timeout: float) -> Monitor:
    mon = Monitor(timeout)
    try:
        mon.connect(path)
    except BaseException:
        mon.close()
        raise
    return mon
