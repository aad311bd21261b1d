"""The console log stays bounded, and `logs` (also --follow) still reads it whole."""

from __future__ import annotations

import io
import os
from pathlib import Path

from ignitevm.providers.vmm import consolelog


def _append(log: Path, data: bytes) -> None:
    """As QEMU writes it: O_APPEND, so a write after a trim lands at the start."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_trim_keeps_boot_log_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    boot = b"".join(b"boot line %d\n" % i for i in range(100))
    _append(log, boot)
    assert not consolelog.trim(log, 8192)  # under the limit: untouched
    flood = b"".join(b"flood %07d\n" % i for i in range(10_000))
    _append(log, flood)
    assert consolelog.trim(log, 8192)
    assert log.stat().st_size == 0
    assert consolelog.head_path(log).read_bytes() == (boot + flood)[:consolelog.HEAD]
    older = consolelog.older_path(log).read_bytes()
    assert len(older) <= 8192 and flood.endswith(older) and older.startswith(b"flood ")
    _append(log, b"after\n")
    out = io.BytesIO()
    consolelog.copy(log, out)
    text = out.getvalue()
    assert text.startswith(boot) and b"console output dropped" in text
    assert text.endswith(older + b"after\n")
    assert consolelog.tail(log, 20) == older[-14:] + b"after\n"
    # Over and over: the files never take more than 2 x limit + the boot log.
    for _ in range(20):
        _append(log, flood)
        consolelog.trim(log, 8192)
    total = sum(p.stat().st_size for p in tmp_path.iterdir() if p.name != "console.log.lock")
    assert total <= 2 * 8192 + consolelog.HEAD


def test_follow_goes_on_after_a_trim(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    _append(log, b"boot\n")
    steps = [b"x" * 10_000 + b"\nlast before trim\n", b"first after trim\n", None]

    def alive() -> bool:  # what a liveness check does: the guest wrote, the log is trimmed
        data = steps.pop(0)
        if data is None:
            return False
        _append(log, data)
        consolelog.trim(log, 4096)
        return True

    out = io.BytesIO()
    consolelog.copy(log, out, follow=True, alive=alive)
    assert out.getvalue().startswith(b"boot\n")
    assert out.getvalue().endswith(b"first after trim\n")


def test_tail_of_a_missing_log(tmp_path: Path) -> None:
    assert consolelog.tail(tmp_path / "console.log") == b""
