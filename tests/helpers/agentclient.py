"""A small synchronous client of the guest agent protocol, for tests.

It speaks docs/agent-protocol.md over a Unix stream socket (the agent's
``--socket`` mode): framing, sessions and flow control in both directions.
Not the real host client: no reconnects, no channel locking.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

(HELLO, READY, EXEC, STARTED, DATA, EOF, EXIT, ERROR, WINDOW, SIGNAL, RESIZE, SHUTDOWN,
 PUT, GET, PING, PONG) = range(1, 17)
HEADER = struct.Struct("<BBHII")
WINDOW_SIZE = 262144
MAX_PAYLOAD = 65536


@dataclass
class Frame:
    type: int
    flags: int
    sid: int
    payload: bytes


@dataclass
class AgentError(Exception):
    code: int
    message: str


def request(argv: Iterable[str] = (), env: dict[str, str] | None = None, cwd: str | None = None,
            user: str | None = None, tty: tuple[int, int] | None = None, stdin: bool = False,
            path: str | None = None) -> bytes:
    items = [f"A:{a}" for a in argv]
    items += [f"E:{k}={v}" for k, v in (env or {}).items()]
    if cwd is not None:
        items.append(f"W:{cwd}")
    if user is not None:
        items.append(f"U:{user}")
    if tty is not None:
        items.append(f"T:{tty[0]}x{tty[1]}")
    if stdin:
        items.append("I:1")
    if path is not None:
        items.append(f"P:{path}")
    return b"".join(i.encode() + b"\0" for i in items)


@dataclass
class Session:
    id: int
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    pid: int | None = None
    exit: int | None = None
    error: tuple[int, str] | None = None
    events: list[tuple[int, int]] = field(default_factory=list)   # (type, flags) in order
    send_window: int = WINDOW_SIZE      # stdin bytes we may still send
    unacked: int = 0                    # bytes received, not yet credited back
    auto_credit: bool = True
    received: int = 0
    sink: Callable[[bytes], object] | None = None

    @property
    def done(self) -> bool:
        return self.exit is not None or self.error is not None


class AgentClient:
    def __init__(self, path: Path | str, timeout: float = 10.0):
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.buf = bytearray()
        self.sessions: dict[int, Session] = {}
        self.other: list[Frame] = []
        self.next_id = 1

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- frames ----

    def send(self, type: int, sid: int = 0, payload: bytes = b"", flags: int = 0) -> None:
        self.sock.sendall(HEADER.pack(type, flags, 0, sid, len(payload)) + payload)

    def read_frame(self, timeout: float | None = None) -> Frame:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buf) >= HEADER.size:
                type, flags, _, sid, n = HEADER.unpack_from(self.buf)
                if len(self.buf) >= HEADER.size + n:
                    payload = bytes(self.buf[HEADER.size:HEADER.size + n])
                    del self.buf[:HEADER.size + n]
                    return Frame(type, flags, sid, payload)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the agent in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                raise TimeoutError("no frame from the agent in time") from None
            if not chunk:
                raise EOFError("the agent closed the connection")
            self.buf += chunk

    def pump(self, timeout: float | None = None) -> Frame:
        """Read one frame and apply it to its session."""
        f = self.read_frame(timeout)
        s = self.sessions.get(f.sid)
        if s is None or f.type in (READY, PONG):
            self.other.append(f)
            return f
        s.events.append((f.type, f.flags))
        if f.type == STARTED:
            s.pid = struct.unpack("<I", f.payload)[0]
        elif f.type == DATA:
            s.received += len(f.payload)
            if s.sink is not None:
                s.sink(f.payload)
            else:
                (s.stderr if f.flags == 2 else s.stdout).extend(f.payload)
            s.unacked += len(f.payload)
            if s.auto_credit and s.unacked >= WINDOW_SIZE // 2:
                self.credit(s)
        elif f.type == EXIT:
            s.exit = struct.unpack("<i", f.payload)[0]
        elif f.type == ERROR:
            s.error = (struct.unpack_from("<I", f.payload)[0], f.payload[4:].decode())
        elif f.type == WINDOW:
            s.send_window += struct.unpack("<I", f.payload)[0]
        return f

    def credit(self, s: Session, n: int | None = None) -> None:
        n = s.unacked if n is None else n
        if n:
            self.send(WINDOW, s.id, struct.pack("<I", n))
            s.unacked -= n

    def wait_for(self, type: int) -> Frame:
        while True:
            f = self.pump()
            if f.type == type and f in self.other:
                self.other.remove(f)
                return f

    # ---- channel ----

    def hello(self) -> dict[str, str]:
        self.send(HELLO)
        f = self.wait_for(READY)
        return dict(line.split("=", 1) for line in f.payload.decode().splitlines())

    def ping(self, payload: bytes) -> bytes:
        self.send(PING, 0, payload)
        return self.wait_for(PONG).payload

    # ---- sessions ----

    def open(self, type: int, payload: bytes) -> Session:
        s = Session(self.next_id)
        self.next_id += 1
        self.sessions[s.id] = s
        self.send(type, s.id, payload)
        return s

    def exec(self, argv: Iterable[str], **kw: object) -> Session:
        return self.open(EXEC, request(argv, **kw))  # type: ignore[arg-type]

    def started(self, s: Session) -> Session:
        while s.pid is None and not s.done:
            self.pump()
        return s

    def wait(self, *sessions: Session, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not all(s.done for s in sessions):
            self.pump(max(0.0, deadline - time.monotonic()))

    def write(self, s: Session, data: bytes | BinaryIO, eof: bool = True) -> None:
        """Send stdin (or a PUT archive) as the agent's window allows."""
        read = data.read if hasattr(data, "read") else _reader(data)  # type: ignore[union-attr]
        pending = b""
        while not s.done:
            if not pending:
                pending = read(MAX_PAYLOAD)
                if not pending:
                    break
            while s.send_window <= 0 and not s.done:
                self.pump()
            n = min(len(pending), s.send_window, MAX_PAYLOAD)
            if n and not s.done:
                self.send(DATA, s.id, pending[:n])
                s.send_window -= n
                pending = pending[n:]
        if eof and not s.done:
            self.send(EOF, s.id, flags=0)

    def run(self, argv: Iterable[str], input: bytes | None = None, timeout: float | None = None,
            **kw: object) -> Session:
        s = self.exec(argv, stdin=input is not None, **kw)
        if input is not None:
            self.write(s, input)
        self.wait(s, timeout=timeout)
        return s

    def put(self, path: str, archive: bytes | BinaryIO) -> Session:
        s = self.open(PUT, request(path=path))
        self.write(s, archive)
        self.wait(s)
        return s

    def get(self, path: str, sink: Callable[[bytes], object] | None = None) -> Session:
        s = Session(self.next_id)
        s.sink = sink
        self.next_id += 1
        self.sessions[s.id] = s
        self.send(GET, s.id, request(path=path))
        self.wait(s, timeout=60)
        return s


def _reader(data: bytes) -> Callable[[int], bytes]:
    view = memoryview(data)
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        chunk = bytes(view[pos:pos + n])
        pos += len(chunk)
        return chunk

    return read
