"""The small QMP client against a scripted QMP peer (a socket pair stands in
for QEMU here; tests/vm/test_lifecycle.py drives the real one)."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from ignitevm.providers.vmm.qemu import qmp


def _serve(listener: socket.socket, replies: dict[str, list[bytes]], seen: list[dict]) -> None:
    conn, _ = listener.accept()
    with conn, conn.makefile("rb") as f:
        conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
        for line in f:
            msg = json.loads(line)
            seen.append(msg)
            for out in replies.get(msg["execute"], [b'{"return": {}}\r\n']):
                conn.sendall(out)


@pytest.fixture
def peer(tmp_path: Path):
    listener = socket.socket(socket.AF_UNIX)
    path = tmp_path / "qmp.sock"
    listener.bind(str(path))
    listener.listen(1)
    replies: dict[str, list[bytes]] = {}
    seen: list[dict] = []
    thread = threading.Thread(target=_serve, args=(listener, replies, seen), daemon=True)
    thread.start()
    yield path, replies, seen
    listener.close()


def test_events_are_skipped_and_the_return_value_given(peer) -> None:
    path, replies, seen = peer
    replies["stop"] = [b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}\r\n',
                       b'{"return": {}}\r\n']
    replies["query-status"] = [b'{"return": {"status": "paused", "running": false}}\r\n']
    mon = qmp.connect(str(path), 5)
    try:
        assert mon.cmd("stop") == {}
        assert mon.cmd("query-status")["status"] == "paused"
        mon.cmd("device_add", driver="virtserialport", nr=2)
    finally:
        mon.close()
    assert [m["execute"] for m in seen] == ["qmp_capabilities", "stop", "query-status",
                                           "device_add"]
    assert seen[3]["arguments"] == {"driver": "virtserialport", "nr": 2}
    assert "arguments" not in seen[1]


def test_an_error_answer_raises(peer) -> None:
    path, replies, _ = peer
    replies["cont"] = [b'{"error": {"class": "GenericError", "desc": "no"}}\r\n']
    mon = qmp.connect(str(path), 5)
    with pytest.raises(qmp.QMPError, match="cont: no"):
        mon.cmd("cont")
    mon.close()


def test_a_peer_that_is_not_qmp_is_refused(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX)
    path = tmp_path / "other.sock"
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        conn.sendall(b'{"hello": 1}\n')
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    with pytest.raises(ConnectionError, match="does not speak QMP"):
        qmp.connect(str(path), 5)
    listener.close()
