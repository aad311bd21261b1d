"""A host client of the guest agent: take a free channel, say HELLO, run sessions.

One channel per host process. Frames for sessions this client did not open
(left over from an earlier client) are ignored; the READY reply is found by
scanning, so a previous client that died mid-frame cannot desynchronise us.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from ignitevm.agent import protocol as p
from ignitevm.errors import IgniteError

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:  # (exec's fast path reads this module: no pathlib, socket or contextlib)
    import contextlib
    import socket
    from pathlib import Path

HELLO_RETRY = 0.5
GROW_MARK = "agent-grow.pending"
RECV_SIZE = 1 << 18


class AgentError(IgniteError):
    """The agent could not be reached or broke the protocol."""


class Channel:
    """``sock``: a ``socket.socket``, or the ``_socket.socket`` it is built on
    (exec's fast path): only what both have is used here."""

    def __init__(self, sock: socket.socket, lock_fd: int):
        self.sock = sock
        self.lock_fd = lock_fd
        self.buf = bytearray()      # at most one read and one partial frame
        self.last_rx = time.monotonic()
        self.info: dict[str, str] = {}
        # Session ids start anywhere: should a dead client's sessions outlive
        # it (its HELLO lost), the next client's frames are still not taken
        # for theirs, nor theirs for its.
        self._next = first_session()

    # --- connecting ---------------------------------------------------------
    @classmethod
    def connect(cls, ports: Ports, timeout: float, what: str = "the VM") -> Channel:
        deadline = time.monotonic() + timeout
        lock_fd, path = _take_channel(ports, deadline, what)
        return cls.open(ports, lock_fd, path, deadline, what, timeout)

    @classmethod
    def open(cls, ports: Ports, lock_fd: int, path: Path, deadline: float, what: str,
             timeout: float) -> Channel:
        """Connect to the channel ``path`` (its lock ``lock_fd`` is held and passes
        to the channel) and say HELLO."""
        try:
            connect = getattr(ports, "connect", None)
            if connect is not None:
                sock = connect(path)   # (checks that the VM's VMM answers)
            else:
                import socket

                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                try:
                    sock.connect(str(path))
                except BaseException:
                    sock.close()
                    raise
        except OSError as exc:
            os.close(lock_fd)
            raise AgentError(f"cannot reach the agent of {what}: {exc.strerror}",
                             hint="is the VM running? see: ignite ps -a") from None
        ch = cls(sock, lock_fd)
        try:
            ch._handshake(deadline, what, timeout)
        except BaseException:
            ch.close()
            raise
        return ch

    def _handshake(self, deadline: float, what: str, timeout: float) -> None:
        """HELLO, then a PING with a fresh nonce: its PONG, right after the READY
        that answers the HELLO, proves that every frame after it belongs to
        this client (bytes left in flight by an earlier client are skipped).
        HELLO is idempotent before any session, so it is said again while no
        answer comes (a channel just released can lose the first)."""
        nonce = os.urandom(16)
        hello = p.Frame(p.HELLO, 0).encode() + p.Frame(p.PING, 0, nonce).encode()
        pong = p.Frame(p.PONG, 0, nonce).encode()
        keep = p.HEADER.size + p.MAX_PAYLOAD + len(pong)   # one READY and the PONG
        late = AgentError(f"the guest agent of {what} did not answer within {timeout:.0f}s",
                          hint="check that the VM has booted (ignite logs); the agent starts "
                          "before the image's init")
        # (a guest that stops reading holds a send until the deadline: that is
        # its not answering too)
        self._send_raw(hello, deadline, late)
        self.hellos = 1
        resend = time.monotonic() + HELLO_RETRY
        while True:
            idx = self.buf.find(pong)
            while idx >= 0:
                ready = _ready_before(self.buf, idx)
                del self.buf[: idx + len(pong)]
                if ready is not None:
                    text = ready.decode(errors="replace")
                    self.info = dict(line.split("=", 1) for line in text.splitlines()
                                     if "=" in line)
                    return
                # A PONG with no READY just before it: the agent took the
                # HELLO's first bytes as the end of a frame a killed client
                # left cut, and the rest as padding, but read the PING: the
                # channel was not reset (that client's sessions still run).
                # Say it again after the padding (below).
                if self.hellos == 1:
                    resend = 0.0
                idx = self.buf.find(pong)
            # Only the tail can still hold a partial PONG or its READY: the
            # buffer stays bounded however much a guest sends.
            if len(self.buf) > keep:
                del self.buf[: len(self.buf) - keep]
            now = time.monotonic()
            if now >= deadline:
                raise late
            if now >= resend:
                # A client killed mid-frame may have left the agent waiting for
                # the rest of it: zero bytes complete any such frame (and are
                # skipped as padding where a frame would start), then HELLO.
                pad = bytes(p.HEADER.size + p.MAX_PAYLOAD) if self.hellos == 1 else b""
                self._send_raw(pad + hello, deadline, late)
                self.hellos += 1
                resend = time.monotonic() + HELLO_RETRY
                continue
            self._fill(min(deadline, resend))

    def close(self) -> None:
        """Say BYE (the agent ends this client's sessions at once), then let go."""
        try:
            self.sock.settimeout(1.0)
            self.sock.sendall(p.Frame(p.BYE, 0).encode())
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            os.close(self.lock_fd)
        except OSError:
            pass

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- frames ---------------------------------------------------------------
    def new_session(self) -> int:
        sid = self._next
        self._next = sid % 0xFFFFFFFF + 1      # (0 is the channel's own)
        return sid

    def send(self, frame: p.Frame) -> None:
        self._send_raw(frame.encode(), None)

    def _send_raw(self, data: bytes, deadline: float | None,
                  late: AgentError | None = None) -> None:
        """Send ``data`` by ``deadline``; ``late``: the error if it cannot."""
        try:
            # (reads set their own timeouts; a send waits as long as it may)
            self.sock.settimeout(None if deadline is None
                                 else max(0.1, deadline - time.monotonic()))
            self.sock.sendall(data)
        except TimeoutError:
            raise (late or AgentError("the guest agent does not read what is sent to it",
                                      hint="check that the VM has booted (ignite logs)")
                   ) from None
        except OSError as exc:
            raise AgentError(f"lost the connection to the guest agent: {exc.strerror}") from None

    def _fill(self, deadline: float | None) -> bool:
        """Read more bytes; False on timeout."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(RECV_SIZE)
        except (TimeoutError, BlockingIOError):
            return False
        except OSError as exc:
            raise AgentError(f"lost the connection to the guest agent: {exc.strerror}") from None
        if not data:
            raise AgentError("the guest agent closed the connection (did the VM stop?)")
        self.buf += data
        self.last_rx = time.monotonic()
        return True

    def next_frame(self) -> p.Frame | None:
        """A frame already buffered, or None (no reading)."""
        try:
            return p.parse(self.buf)
        except ValueError as exc:
            raise AgentError(f"the guest agent broke the protocol: {exc}") from None

    def recv(self, deadline: float | None = None) -> p.Frame | None:
        """The next frame, or None when ``deadline`` passes."""
        while True:
            frame = self.next_frame()
            if frame is not None:
                return frame
            if not self._fill(deadline):
                return None

    def read_some(self) -> None:
        """One read (the socket is readable)."""
        self._fill(time.monotonic())

    def fileno(self) -> int:
        return self.sock.fileno()


def first_session() -> int:
    """A random session id to start from (never 0)."""
    return int.from_bytes(os.urandom(4), "little") or 1


def _ready_before(buf: bytearray, end: int) -> bytes | None:
    """The payload of the READY frame that ends exactly at ``buf[end]``, if one does."""
    at = buf.rfind(p.READY_PREFIX, 0, end)
    while at >= 0:
        if end - at >= p.HEADER.size:
            length = p.read_u32(bytes(buf[at + 8:at + 12]))
            if at + p.HEADER.size + length == end:
                return bytes(buf[at + p.HEADER.size:end])
        at = buf.rfind(p.READY_PREFIX, 0, at)
    return None


TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:  # (a type only: typing costs exec's fast path ~3 ms)
    from typing import Protocol

    class Ports(Protocol):
        """Where a VM's agent channels are, and how to ask for one more."""

        def sockets(self) -> list[Path]:
            """The channels' host-side sockets, in order."""
            ...

        def grow(self) -> Path | None:
            """Add a channel to the running VM; None if it can have no more."""
            ...

        def pending(self) -> Path | None:
            """The socket of a channel a dead client left unnamed (None: none)."""
            ...

        def repair(self, path: Path) -> None:
            """Undo the adding of channel ``path`` that a dead client left half-done
            (nothing if it is whole); a pending one is named if its port is there."""
            ...


def _take_channel(ports: Ports, deadline: float, what: str) -> tuple[int, Path]:
    """Lock a free channel; when all are busy, add one (one client at a time
    grows a VM), else wait for one to be free."""
    import contextlib

    from ignitevm.util.fs import atomic_write
    repaired = False
    while True:
        sockets = ports.sockets()
        if not sockets:
            raise AgentError(f"{what} is not running", hint="start it with: ignite start")
        folder = sockets[0].parent
        # The mark lives in the VM's own folder: QEMU may write in its sockets'
        # folder (a link planted there would redirect the host's write).
        markdir = getattr(ports, "workdir", folder)
        if not repaired and (markdir / GROW_MARK).exists():
            _repair(ports, folder, markdir, deadline)
            repaired = True
            continue
        taken = lock_free(sockets)
        if taken is not None:
            return taken
        with contextlib.ExitStack() as held:
            _grow_lock(held, folder, deadline)
            taken = lock_free(ports.sockets())
            if taken is not None:
                return taken
            # The mark says "a channel is being added": if this process dies
            # before it is gone, the next client repairs what is half-made.
            mark = markdir / GROW_MARK
            atomic_write(mark, f"{len(ports.sockets())}\n")
            try:
                path = ports.grow()
            except Exception as exc:  # a VM that cannot grow still has its channels
                from ignitevm.log import log

                log.debug("could not add an agent channel: %s", exc)
                path = None
            finally:
                mark.unlink(missing_ok=True)
            if path is not None:
                taken = lock_free([path])
                if taken is not None:
                    return taken
        if time.monotonic() > deadline:
            raise AgentError(f"all {len(sockets)} agent channels of {what} are busy",
                             hint="wait for other exec/cp commands to finish")
        time.sleep(0.05)


def _grow_lock(held: contextlib.ExitStack, folder: Path, deadline: float) -> None:
    from ignitevm.util.fs import flock

    try:
        held.enter_context(flock(folder / "agent-grow.lock", deadline=deadline))
    except BlockingIOError:
        raise AgentError("another client is adding an agent channel and does not "
                         "finish") from None


def _repair(ports: Ports, folder: Path, markdir: Path, deadline: float) -> None:
    """A client was killed while it added a channel (say between QMP's
    chardev-add and device_add): its socket may lead to no port, and would be
    handed out for ever. Once any live grower is done, let the VMM undo it."""
    import contextlib

    with contextlib.ExitStack() as held:
        _grow_lock(held, folder, deadline)
        mark = markdir / GROW_MARK
        try:
            before = int(mark.read_text())
        except FileNotFoundError:
            return              # a live client was adding one, and is done
        except ValueError:
            before = len(ports.sockets())
        from ignitevm.log import log

        repair = getattr(ports, "repair", None)
        pending = getattr(ports, "pending", None)
        for path in ports.sockets()[before:]:
            log.debug("repairing agent channel %s, half-added by a client that died", path)
            try:
                if repair is not None:
                    repair(path)
            except Exception as exc:
                log.warning("could not repair agent channel %s: %s", path, exc)
                return
        # Killed between device_add and the socket's naming: the VM has the port
        # but no client finds its socket (and a snapshot would lack it).
        if pending is not None and repair is not None:
            try:
                new = pending()
                if new is not None:
                    log.debug("finishing agent channel %s, half-added by a client that "
                              "died", new)
                    repair(new)
            except Exception as exc:
                log.warning("could not finish a half-added agent channel: %s", exc)
                return
        mark.unlink(missing_ok=True)


def lock_free(sockets: list[Path]) -> tuple[int, Path] | None:
    """The first of ``sockets`` (Paths or strs) whose lock (``agent-K.lock``
    beside ``agent-K.sock``) this process could take: its descriptor and the
    socket; None when every one is held."""
    for path in sockets:
        lock = os.path.splitext(os.fspath(path))[0] + ".lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            continue
        return fd, path
    return None
