"""`ignite exec` forwards an interrupt to the command and leaves the process's
signal handling as it found it (agent/session.py: the exec loop on select.poll,
with a wakeup pipe and _signal). The guest is the scripted fake of
tests/helpers/fakeguest.py; the host side is the real client."""

from __future__ import annotations

import os
import signal
import struct
import time
from collections.abc import Iterable
from pathlib import Path

from ignitevm.agent import protocol as p
from ignitevm.agent import session
from ignitevm.agent.client import Channel
from tests.helpers.fakeguest import FakeGuest, Raw, Stall

Item = bytes | Raw | Stall | p.Frame


def _until(what: object, limit: float = 30.0) -> bool:
    end = time.monotonic() + limit
    while not what():  # type: ignore[operator]
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def test_an_interrupt_reaches_the_command_and_handlers_are_restored(tmp_path: Path) -> None:
    seen: list[int] = []
    before = signal.signal(signal.SIGINT, lambda *_: seen.append(1))
    try:
        def command(_type: int, sid: int, _payload: bytes) -> Iterable[Item]:
            # Once the exec loop took SIGINT over, interrupt this process (as ^C would).
            assert _until(lambda: signal.getsignal(signal.SIGINT) is session._ignore)
            os.kill(os.getpid(), signal.SIGINT)
            assert _until(lambda: g.signals)
            yield b"interrupted\n"
            yield p.Frame(p.EXIT, sid, struct.pack("<i", -signal.SIGINT))
            yield Stall()

        out = tmp_path / "out"
        with FakeGuest(tmp_path / "agent-1.sock", command) as g, Channel.connect(g, 10) as ch, \
                out.open("wb") as f:
            status = session.run_exec(ch, session.ExecRequest(["sleep", "9"]), None,
                                      f.fileno(), f.fileno())
        assert status == 128 + signal.SIGINT
        assert [n for _sid, n in g.signals] == [signal.SIGINT]
        assert out.read_bytes() == b"interrupted\n"
        assert seen == []  # (the exec's, not the handler before it)
        handler = signal.getsignal(signal.SIGINT)
        assert callable(handler) and handler is not session._ignore
        assert signal.set_wakeup_fd(-1) == -1  # (none was set before: none is left)
    finally:
        signal.signal(signal.SIGINT, before)


def test_poll_names_what_is_ready() -> None:
    poll = session._Poll()
    r, w = os.pipe()
    try:
        poll.register(r, "pipe")
        assert poll.select(0.0004) == []
        os.write(w, b"x")
        assert poll.select(-1) == ["pipe"]
        poll.unregister(r)
        assert poll.select(0) == []
    finally:
        os.close(r)
        os.close(w)
