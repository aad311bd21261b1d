"""Sessions over a channel: exec (with stdin, signals, TTY), copy in and out, shutdown."""

from __future__ import annotations

# (_signal: signal.py's functions less its enums; neither signal.py, socket nor selectors,
# whose enum classes cost exec's fast path ~3 ms)
import _signal
import os
import select
import struct
import sys
import time

from ignitevm.agent import protocol as p
from ignitevm.agent.client import AgentError, Channel
from ignitevm.errors import IgniteError


class GuestError(IgniteError):
    """The agent refused a request (no such command, path, user...)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.exit_code = code if 0 < code < 256 else 1


class _Flow:
    """Windows of one session: what we may send, and what we owe back."""

    def __init__(self) -> None:
        self.send_window = p.INITIAL_WINDOW
        self.consumed = 0

    def consume(self, ch: Channel, sid: int, n: int) -> None:
        self.consumed += n
        if self.consumed >= p.INITIAL_WINDOW // 2:
            ch.send(p.Frame(p.WINDOW, sid, p.u32(self.consumed)))
            self.consumed = 0


def _status(payload: bytes) -> int:
    """EXIT's status as an exit code: 0-255 as sent, a signal -N as 128+N; anything
    else (a guest's agent may send any i32) 255."""
    st = p.read_i32(payload)
    if 0 <= st <= 255:
        return st
    return 128 - st if -127 <= st < 0 else 255


def _error(frame: p.Frame) -> GuestError:
    code = p.read_u32(frame.payload) if len(frame.payload) >= 4 else 1
    return GuestError(code, frame.payload[4:].decode(errors="replace") or "the agent refused")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


class ExecRequest:
    """What to run. (A plain class: dataclasses cost exec's start-up ~5 ms.)"""

    def __init__(self, argv: list[str], env: list[str] | None = None, cwd: str = "",
                 user: str = "", tty: tuple[int, int] | None = None, stdin: bool = False):
        self.argv, self.env, self.cwd, self.user = argv, env or [], cwd, user
        self.tty, self.stdin = tty, stdin


class _SignalPipe:
    """Deliver the given signals as bytes on a pipe the event loop can watch
    (``with``: its reading end)."""

    def __init__(self, signals: tuple[int, ...]):
        self.signals = signals

    def __enter__(self) -> int:
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.old_fd: int | None = None
        self.old: dict[int, object] = {}
        try:
            self.old_fd = _signal.set_wakeup_fd(self.w, warn_on_full_buffer=False)
            for s in self.signals:
                self.old[s] = _signal.signal(s, _ignore)
        except BaseException:
            self.__exit__()
            raise
        return self.r

    def __exit__(self, *exc: object) -> None:
        try:
            if self.old_fd is not None:
                _signal.set_wakeup_fd(self.old_fd)
            for s, h in self.old.items():
                _signal.signal(s, h)  # type: ignore[arg-type]
        finally:
            os.close(self.r)
            os.close(self.w)


def _ignore(*_: object) -> None:
    pass


class _Poll:
    """selectors.PollSelector's few calls used here, on select.poll (poll, not
    epoll: stdin may be a regular file or /dev/null, which epoll refuses)."""

    def __init__(self) -> None:
        self.poll, self.names = select.poll(), {}  # type: ignore[var-annotated]

    def register(self, fd: int, name: str) -> None:
        self.poll.register(fd, select.POLLIN)
        self.names[fd] = name

    def unregister(self, fd: int) -> None:
        self.poll.unregister(fd)
        del self.names[fd]

    def select(self, timeout: float) -> list[str]:
        """The names of the sources ready (to read, or hung up) within ``timeout`` s."""
        ms = max(0, -int(-timeout * 1000 // 1))  # (rounded up, as selectors does)
        return [self.names[fd] for fd, _ in self.poll.poll(ms)]


def run_exec(ch: Channel, req: ExecRequest, stdin_fd: int | None = None,
             stdout_fd: int = 1, stderr_fd: int = 2, frame_timeout: float = 30.0) -> int:
    """Run a command in the guest, pumping local fds; return its exit status.

    A command may stay silent as long as it likes; a frame the agent started
    to send must be complete within ``frame_timeout`` seconds. While nothing
    comes, the agent is asked for a PONG every ``frame_timeout`` seconds and
    must answer within as long (a guest that killed or stopped its agent
    would otherwise leave this waiting for good)."""
    sid = ch.new_session()
    pinged: float | None = None  # when the unanswered PING went out
    ch.send(p.Frame(p.EXEC, sid, p.request(req.argv, req.env, req.cwd, req.user, req.tty,
                                            req.stdin and stdin_fd is not None)))
    flow = _Flow()
    sel = _Poll()
    sel.register(ch.fileno(), "agent")
    stdin_open = req.stdin and stdin_fd is not None
    interrupts = 0
    forwarded = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGWINCH)
    with _SignalPipe(forwarded) as sig_fd:
        sel.register(sig_fd, "signal")
        stdin_registered = False
        while True:
            want_stdin = stdin_open and flow.send_window > 0
            if want_stdin and not stdin_registered:
                sel.register(stdin_fd, "stdin")  # type: ignore[arg-type]
                stdin_registered = True
            elif not want_stdin and stdin_registered:
                sel.unregister(stdin_fd)  # type: ignore[arg-type]
                stdin_registered = False
            # Frames already buffered come first; else wait for any source (a
            # partial frame only so long).
            frame = ch.next_frame()
            if frame is not None:
                events: list[str] = ["frame"]
            else:
                now = time.monotonic()
                if pinged is not None and ch.last_rx >= pinged:
                    pinged = None  # the agent spoke since: alive
                if ch.buf:
                    wait = ch.last_rx + frame_timeout - now
                    if wait <= 0:
                        raise _stalled(frame_timeout, "in the middle of a frame")
                elif pinged is not None:
                    wait = pinged + frame_timeout - now
                    if wait <= 0:
                        raise _stalled(frame_timeout, "answering (a PING)")
                else:
                    wait = ch.last_rx + frame_timeout - now
                    if wait <= 0:
                        ch.send(p.Frame(p.PING, 0, b"alive?"))
                        pinged, wait = now, frame_timeout
                events = sel.select(wait)
            for what in events:
                if what == "signal":
                    try:
                        nums = os.read(sig_fd, 64)
                    except BlockingIOError:
                        nums = b""
                    for num in nums:
                        if num == _signal.SIGWINCH and req.tty:
                            rows, cols = _terminal_size(stdout_fd)
                            ch.send(p.Frame(p.RESIZE, sid, struct.pack("<HH", rows, cols)))
                        elif num != _signal.SIGWINCH:
                            # The first interrupt goes to the command; a second one
                            # gives up here (closing the channel ends the command).
                            interrupts += 1
                            if interrupts > 1:
                                raise KeyboardInterrupt
                            ch.send(p.Frame(p.SIGNAL, sid, p.u32(num)))
                elif what == "stdin":
                    data = os.read(stdin_fd, min(flow.send_window, p.MAX_PAYLOAD))  # type: ignore[arg-type]
                    if not data:
                        ch.send(p.Frame(p.EOF, sid, flags=p.STDIN))
                        stdin_open = False
                    else:
                        flow.send_window -= len(data)
                        ch.send(p.Frame(p.DATA, sid, data, flags=p.STDIN))
                elif what == "agent":
                    ch.read_some()
                elif frame is not None and frame.session == sid:
                    if frame.type == p.DATA:
                        _write_all(stderr_fd if frame.flags == p.STDERR else stdout_fd,
                                   frame.payload)
                        flow.consume(ch, sid, len(frame.payload))
                    elif frame.type == p.WINDOW:
                        flow.send_window += p.read_u32(frame.payload)
                    elif frame.type == p.EXIT:
                        return _status(frame.payload)
                    elif frame.type == p.ERROR:
                        raise _error(frame)


def _stalled(seconds: float, how: str) -> AgentError:
    return AgentError(f"the guest agent stopped {how}: nothing came for {seconds:.0f}s",
                      hint="the VM may be overloaded or its agent stuck (ignite logs); "
                      "--timeout sets how long to wait")


def _recv(ch: Channel, sid: int, since: float, idle: float | None) -> p.Frame | None:
    """The next frame; an error when none of session ``sid`` came for ``idle`` s."""
    frame = ch.recv(None if idle is None else since + idle)
    if frame is None:
        raise _stalled(idle or 0, "answering")
    return frame


def _terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 24, 80
    return size.lines, size.columns


def terminal_size() -> tuple[int, int]:
    for fd in (0, 1, 2):
        try:
            size = os.get_terminal_size(fd)
        except OSError:
            continue
        return size.lines, size.columns
    return 24, 80


class _Sender:
    """A file-like writer that sends DATA frames within the session's window."""

    def __init__(self, ch: Channel, sid: int, progress: object = None,
                 idle: float | None = None):
        self.ch, self.sid, self.flow = ch, sid, _Flow()
        self.progress = progress
        self.idle, self.last = idle, time.monotonic()
        self.failed: GuestError | None = None

    def write(self, data: bytes) -> int:
        if self.failed is not None:
            # The session is over (the guest refused): no window will come.
            raise self.failed
        view = memoryview(data)
        while view:
            while self.flow.send_window <= 0:
                frame = _recv(self.ch, self.sid, self.last, self.idle)
                if frame is None or frame.session != self.sid:
                    continue
                self.last = time.monotonic()
                if frame.type == p.WINDOW:
                    self.flow.send_window += p.read_u32(frame.payload)
                elif frame.type == p.ERROR:
                    self.failed = _error(frame)
                    raise self.failed
            n = min(len(view), self.flow.send_window, p.MAX_PAYLOAD)
            self.ch.send(p.Frame(p.DATA, self.sid, bytes(view[:n]), flags=p.STDIN))
            self.flow.send_window -= n
            if callable(self.progress):
                self.progress(n)
            view = view[n:]
        return len(data)

    def flush(self) -> None:
        pass


class _Receiver:
    """A file-like reader over the DATA frames of a session (for tar streaming).

    Every byte the agent sends meanwhile counts against ``budget`` (frames of
    other sessions too), and ``idle`` seconds without a frame of this session
    is an error: a hostile or stuck guest can neither fill the host nor hang it."""

    def __init__(self, ch: Channel, sid: int, progress: object = None,
                 idle: float | None = None, budget: int | None = None):
        self.ch, self.sid, self.flow = ch, sid, _Flow()
        self.pending = bytearray()
        self.eof = False
        self.status: int | None = None
        self.progress = progress
        self.idle, self.budget = idle, budget
        self.last = time.monotonic()
        self.received = 0

    def _pump(self) -> None:
        frame = _recv(self.ch, self.sid, self.last, self.idle)
        assert frame is not None
        self.received += p.HEADER.size + len(frame.payload)
        if self.budget is not None and self.received > self.budget:
            from ignitevm.agent.untar import Refused

            raise Refused(f"the guest sent more than {self.budget} bytes",
                          hint="if that much is wanted, raise the limit with --max-size")
        if frame.session != self.sid:
            return
        self.last = time.monotonic()
        if frame.type == p.DATA:
            self.pending += frame.payload
            self.flow.consume(self.ch, self.sid, len(frame.payload))
            if callable(self.progress):
                self.progress(len(frame.payload))
        elif frame.type == p.EOF:
            self.eof = True
        elif frame.type == p.EXIT:
            self.eof = True
            self.status = _status(frame.payload)
        elif frame.type == p.ERROR:
            raise _error(frame)

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (b"" at the end)."""
        while not self.eof and not self.pending:
            self._pump()
        out = bytes(self.pending[:n])
        del self.pending[:n]
        return out

    def finish(self) -> int:
        """Wait for the session's end; what comes after the archive is dropped."""
        while self.status is None:
            self.eof = False
            self.pending.clear()
            self._pump()
        return self.status


def put(ch: Channel, guest_dir: str, write_tar: object, progress: object = None,
        idle: float | None = None) -> None:
    """Copy in: ``write_tar(fileobj)`` writes a tar stream, unpacked into ``guest_dir``."""
    sid = ch.new_session()
    ch.send(p.Frame(p.PUT, sid, p.request(path=guest_dir)))
    sender = _Sender(ch, sid, progress, idle)
    write_tar(sender)  # type: ignore[operator]
    ch.send(p.Frame(p.EOF, sid, flags=p.STDIN))
    since = time.monotonic()
    while True:
        frame = _recv(ch, sid, since, idle)
        if frame is None or frame.session != sid:
            continue
        since = time.monotonic()
        if frame.type == p.EXIT:
            return
        if frame.type == p.ERROR:
            raise _error(frame)


def get(ch: Channel, guest_path: str, progress: object = None, idle: float | None = None,
        budget: int | None = None) -> _Receiver:
    """Copy out: returns a reader of the tar stream of ``guest_path``."""
    sid = ch.new_session()
    ch.send(p.Frame(p.GET, sid, p.request(path=guest_path)))
    return _Receiver(ch, sid, progress, idle, budget)


def shutdown(ch: Channel, reboot: bool = False, timeout: float = 5.0) -> None:
    sid = ch.new_session()
    ch.send(p.Frame(p.SHUTDOWN, sid, p.u32(1 if reboot else 0)))
    deadline = time.monotonic() + timeout
    while True:
        frame = ch.recv(deadline)
        if frame is None:
            raise AgentError("the guest agent did not confirm the shutdown")
        if frame.session == sid and frame.type in (p.EXIT, p.ERROR):
            if frame.type == p.ERROR:
                raise _error(frame)
            return


def restore(ch: Channel, fields: list[tuple[str, str]],
            timeout: float = 60.0) -> tuple[int, list[str]]:
    """Give a guest restored from a snapshot its own identity (RESTORE); the
    hooks' exit status and the warnings the agent sent (bounded)."""
    sid = ch.new_session()
    payload = "".join(f"{k}={v}\n" for k, v in fields).encode()
    ch.send(p.Frame(p.RESTORE, sid, payload))
    deadline = time.monotonic() + timeout
    warnings: list[str] = []
    while True:
        frame = ch.recv(deadline)
        if frame is None:
            raise AgentError(f"the guest agent did not finish the restore within {timeout:.0f}s",
                             hint="a hook in /etc/ignitevm/restore.d may hang")
        if frame.session != sid:
            continue
        if frame.type == p.DATA and len(warnings) < 32:
            text = frame.payload.decode(errors="replace")
            from ignitevm.api.validation import printable

            warnings += [printable(w)[:300] for w in text.splitlines() if w.strip()][:32]
        elif frame.type == p.ERROR:
            raise _error(frame)
        elif frame.type == p.EXIT:
            return _status(frame.payload) if len(frame.payload) >= 4 else 0, warnings


def stdin_is_tty() -> bool:
    return sys.stdin.isatty()
