"""A hostile guest agent for tests: it speaks docs/agent-protocol.md on a Unix
socket (as QEMU's end of an agent channel) and answers with whatever a test
scripts, flow control ignored. The host side under test is the real client
(ignitevm.agent.client.Channel and what uses it); only the guest is fake,
since a guest that misbehaves on purpose cannot be had from a real VM.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ignitevm.agent import protocol as p


@dataclass
class Raw:
    """Bytes sent as they are (e.g. half a frame)."""

    data: bytes


class Stall:
    """Send nothing more; keep the connection open."""


Script = Callable[[int, bytes], Iterable[bytes | Raw | Stall | p.Frame]]


def frames_of(sid: int, data: Iterable[bytes]) -> Iterator[p.Frame]:
    for chunk in data:
        for i in range(0, len(chunk), p.MAX_PAYLOAD):
            yield p.Frame(p.DATA, sid, chunk[i:i + p.MAX_PAYLOAD], p.STDOUT)


def request_path(payload: bytes) -> str:
    for item in payload.split(b"\0"):
        if item.startswith(b"P:"):
            return item[2:].decode()
    return ""


@dataclass
class FakeGuest:
    """One channel. ``on_session(type, sid, payload)`` yields what to send for a
    GET/EXEC/PUT: bytes (as DATA on that session), frames, Raw bytes or Stall;
    EOF and EXIT 0 follow unless it stalled. ``handshake`` may replace the
    READY/PONG answer (e.g. with junk or a Stall)."""

    path: Path
    on_session: Callable[[int, int, bytes], Iterable[bytes | Raw | Stall | p.Frame]]
    handshake: Callable[[bytes], Iterable[bytes | Raw | Stall | p.Frame]] | None = None
    windows: bool = True        # False: never grant more than the first window
    received: dict[int, bytearray] = field(default_factory=dict)
    signals: list[tuple[int, int]] = field(default_factory=list)  # (session, signal) sent
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _gone: list[threading.Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        self.server.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    # --- Ports, for Channel.connect ----------------------------------------------
    def sockets(self) -> list[Path]:
        return [self.path]

    def grow(self) -> Path | None:
        return None

    def close(self) -> None:
        self._stop.set()
        for gone in self._gone:
            gone.set()
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.thread.join(10)
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> FakeGuest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the guest ----------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                self._conn(conn)

    def _send(self, conn: socket.socket, sid: int,
              items: Iterable[bytes | Raw | Stall | p.Frame], end: bool,
              gone: threading.Event) -> None:
        def out(data: bytes) -> None:
            with self._lock:
                conn.sendall(data)
            self.sent += len(data)

        try:
            for item in items:
                if isinstance(item, Stall):
                    gone.wait()
                    return
                if isinstance(item, Raw):
                    out(item.data)
                elif isinstance(item, p.Frame):
                    out(item.encode())
                else:
                    for frame in frames_of(sid, [item]):
                        out(frame.encode())
            if end:
                out(p.Frame(p.EOF, sid, flags=p.STDOUT).encode()
                    + p.Frame(p.EXIT, sid, struct.pack("<i", 0)).encode())
        except OSError:     # the host hung up: as it should, on refusal
            return

    def _conn(self, conn: socket.socket) -> None:
        buf = bytearray()
        senders: list[threading.Thread] = []
        gone = threading.Event()
        self._gone.append(gone)
        while not self._stop.is_set():
            try:
                data = conn.recv(1 << 16)
            except OSError:
                break
            if not data:
                break
            buf += data
            while True:
                while buf[:1] == b"\0":
                    del buf[:1]
                frame = p.parse(buf)
                if frame is None:
                    break
                if frame.type == p.PING:
                    items: Iterable[bytes | Raw | Stall | p.Frame] = (
                        self.handshake(frame.payload) if self.handshake else
                        [p.Frame(p.READY, 0, b"version=1\npid1=fake\n"),
                         p.Frame(p.PONG, 0, frame.payload)])
                    self._thread(conn, 0, items, False, senders, gone)
                elif frame.type in (p.GET, p.EXEC, p.PUT, p.SHUTDOWN):
                    self.received[frame.session] = bytearray()
                    if frame.type != p.PUT:
                        self._thread(conn, frame.session,
                                     self.on_session(frame.type, frame.session, frame.payload),
                                     True, senders, gone)
                elif frame.type == p.SIGNAL:
                    self.signals.append((frame.session, p.read_u32(frame.payload)))
                elif frame.type == p.DATA:
                    self.received.setdefault(frame.session, bytearray()).extend(frame.payload)
                    if not self.windows:
                        continue
                    with self._lock:
                        conn.sendall(p.Frame(p.WINDOW, frame.session,
                                             p.u32(len(frame.payload))).encode())
                elif frame.type == p.EOF and frame.session in self.received:
                    self._thread(conn, frame.session,
                                 self.on_session(p.PUT, frame.session,
                                                 bytes(self.received[frame.session])),
                                 True, senders, gone)
        gone.set()
        for t in senders:
            t.join(10)

    def _thread(self, conn: socket.socket, sid: int,
                items: Iterable[bytes | Raw | Stall | p.Frame], end: bool,
                senders: list[threading.Thread], gone: threading.Event) -> None:
        t = threading.Thread(target=self._send, args=(conn, sid, items, end, gone),
                             daemon=True)
        t.start()
        senders.append(t)
