"""`ignite exec` against a guest whose agent died mid-command (the guest is root
in its VM and may kill it): an error after the timeout, never a hang. The
guest is the scripted fake of tests/helpers/fakeguest.py (a real VM cannot be
made to lose its agent at a chosen frame); the host side is the real client."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from ignitevm.agent import protocol as p
from ignitevm.agent import session
from ignitevm.agent.client import AgentError, Channel
from tests.helpers.fakeguest import FakeGuest, Raw, Stall

Item = bytes | Raw | Stall | p.Frame


def test_exec_to_an_agent_that_died_is_an_error_not_a_hang(tmp_path: Path) -> None:
    pings: list[bytes] = []

    def answer_once(nonce: bytes) -> Iterable[Item]:
        pings.append(nonce)
        if len(pings) == 1:  # the handshake: the agent is there
            return [p.Frame(p.READY, 0, b"version=1\npid1=fake\n"), p.Frame(p.PONG, 0, nonce)]
        return [Stall()]  # then it is gone: nothing answers any more

    out = tmp_path / "out"
    with FakeGuest(tmp_path / "agent-1.sock", lambda *_: [Stall()], answer_once) as g, \
            Channel.connect(g, 10) as ch, out.open("wb") as f, \
            pytest.raises(AgentError, match="answering"):
        session.run_exec(ch, session.ExecRequest(["sleep", "1000"]), None, f.fileno(),
                         f.fileno(), frame_timeout=0.2)
    assert len(pings) == 2  # the handshake's, then one probe that went unanswered


def test_a_silent_command_of_a_live_agent_runs_on(tmp_path: Path) -> None:
    pongs = []

    def silent() -> Iterable[Item]:
        # Silent for several probe periods; the (default) fake answers every PING.
        while len(pongs) < 3:
            yield Raw(b"")
            time.sleep(0.1)
        yield p.Frame(p.EXIT, 1, p.u32(0))

    def answer(nonce: bytes) -> Iterable[Item]:
        pongs.append(nonce)
        return [p.Frame(p.PONG, 0, nonce)] if len(pongs) > 1 else \
            [p.Frame(p.READY, 0, b"version=1\npid1=fake\n"), p.Frame(p.PONG, 0, nonce)]

    out = tmp_path / "out"
    with FakeGuest(tmp_path / "agent-1.sock", lambda *_: silent(), answer) as g, \
            Channel.connect(g, 10) as ch, out.open("wb") as f:
        status = session.run_exec(ch, session.ExecRequest(["sleep"]), None, f.fileno(),
                                  f.fileno(), frame_timeout=0.2)
    assert status == 0 and len(pongs) >= 3
