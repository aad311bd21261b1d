"""The console log stays bounded, and `logs` (also --follow) still reads it whole."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ignitevm.errors import InvalidInput
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


@pytest.mark.parametrize("value", ["abc", "4095", "-5", "1e6", "\u0664\u0660\u0669\u0666",
                                   str((1 << 40) + 1), "99999999999999999999", "9" * 5000])
def test_a_bad_limit_is_one_line(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """A bad IGNITE_CONSOLE_LOG_MAX was taken silently (a default, or 4096), and
    one past 4 GiB broke every unconfined launch with the writer's "usage: bad
    number": now it is one line naming the variable and the range, said when a
    VM starts; a look at a VM takes the default."""
    monkeypatch.setenv("IGNITE_CONSOLE_LOG_MAX", value)
    with pytest.raises(InvalidInput, match=r"^invalid IGNITE_CONSOLE_LOG_MAX .*from 4096 to "
                       r"1099511627776 \(1 TiB\)$") as info:
        consolelog.limit()
    assert "\n" not in str(info.value)
    log = Path("/nonexistent/console.log")
    assert not consolelog.trim(log) and not consolelog.over_limit(log)


def test_a_start_with_a_bad_limit_makes_nothing(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from ignitevm.api.types import VM, ObjectMeta
    from ignitevm.operations import vms
    from ignitevm.operations.context import Context

    ctx = Context(root=tmp_path)
    vm = VM(metadata=ObjectMeta(name="v", uid="0000000000000001",
                                created="2000-01-01T00:00:00Z"))
    monkeypatch.setenv("IGNITE_CONSOLE_LOG_MAX", "5GiB")
    with pytest.raises(InvalidInput, match="IGNITE_CONSOLE_LOG_MAX"):
        vms.start(ctx, vm)
    assert not (tmp_path / "vm").exists()


@pytest.mark.parametrize("value", ["4096", " 65536 ", "5000000000", str(1 << 40)])
def test_limits_up_to_a_tebibyte(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("IGNITE_CONSOLE_LOG_MAX", value)
    assert consolelog.limit() == int(value)
    monkeypatch.delenv("IGNITE_CONSOLE_LOG_MAX")
    assert consolelog.limit() == consolelog.DEFAULT_MAX


@pytest.mark.skipif(not Path("/usr/bin/gcc").exists(), reason="gcc is not installed")
def test_the_writer_takes_every_limit_the_host_gives(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """ignite-jail -c read the limit as a 32-bit number: 5000000000 was "bad number"."""
    from ignitevm.providers.sandbox import build

    helper = build.helper(tmp_path / "cache")
    log = tmp_path / "console.log"
    for value in (str(consolelog.MIN_LIMIT), "5000000000", str(consolelog.MAX_LIMIT)):
        monkeypatch.setenv("IGNITE_CONSOLE_LOG_MAX", value)
        res = subprocess.run([str(helper), "-n", "-c", "3", str(consolelog.limit()), str(log),
                              "--", "/bin/sh", "-c", f"echo {value} >&3"],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stderr
        assert consolelog.wait_writer(log, 60)  # (no timing limit: see wait_writer)
        assert log.read_text().splitlines()[-1] == value
    res = subprocess.run([str(helper), "-n", "-c", "3", str(1 << 63), str(log), "--",
                          "/bin/true"], capture_output=True, text=True)
    assert res.returncode == 125 and res.stderr == f"ignite-jail: usage: bad size {1 << 63}\n"


def _writer_owned(tmp_path: Path) -> Path:
    """A log as the console writer leaves it: over the limit a later command may
    be given, with .0 and .1 the writer keeps open."""
    log = tmp_path / "console.log"
    _append(log, b"boot\n")
    consolelog.head_path(log).write_bytes(b"")
    consolelog.older_path(log).write_bytes(b"older\n")
    _append(log, b"z" * 20_000 + b"\n")
    return log


def test_follow_never_trims_a_log_its_writer_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`logs -f` with a smaller IGNITE_CONSOLE_LOG_MAX than the VM's writer was
    given swapped console.log.1 under the writer, which went on writing into
    the unlinked file. Now only the liveness check of a VM whose QEMU writes
    the log itself trims it (below)."""
    log = _writer_owned(tmp_path)
    monkeypatch.setenv("IGNITE_CONSOLE_LOG_MAX", "4096")
    files = {p: p.stat().st_ino for p in (consolelog.head_path(log), consolelog.older_path(log))}
    steps = [True, False]
    out = io.BytesIO()
    consolelog.copy(log, out, follow=True, alive=lambda: steps.pop(0))
    assert {p: p.stat().st_ino for p in files} == files
    assert log.stat().st_size > 20_000
    assert out.getvalue() == b"older\nboot\n" + b"z" * 20_000 + b"\n"


@pytest.mark.parametrize(("chardev", "trimmed"), [
    ("socket,id=console,fd=7,server=on,wait=off,logfile=/dev/fdset/3,logappend=on", False),
    ("socket,id=console,path={d}/run/console.sock,server=on,wait=off,"
     "logfile={d}/console.log,logappend=on", True),  # as QEMU was started before the writer
])
def test_liveness_check_trims_only_a_log_qemu_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chardev: str, trimmed: bool) -> None:
    """A stand-in process with QEMU's console argument (its being our QEMU is
    granted: no QEMU in the unit layer)."""
    from ignitevm.providers.vmm.qemu import args, machine

    log = _writer_owned(tmp_path)
    older = consolelog.older_path(log)
    ino = older.stat().st_ino
    monkeypatch.setenv("IGNITE_CONSOLE_LOG_MAX", "4096")
    monkeypatch.setattr(machine, "is_our_qemu", lambda *a: True)
    proc = subprocess.Popen([sys.executable, "-c", "import sys; print(); sys.stdin.read()",
                             "-chardev", chardev.format(d=tmp_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"\n"  # (it runs)
        (tmp_path / args.PIDSTART).parent.mkdir(exist_ok=True)
        (tmp_path / args.PIDSTART).write_text(f"{proc.pid} boot 1\n")
        assert machine.QemuVMM().pid(tmp_path) == proc.pid
    finally:
        proc.communicate(b"")
    assert (log.stat().st_size == 0) is trimmed
    assert (older.stat().st_ino != ino) is trimmed


def test_logs_waits_for_the_writer_to_drain(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Once QEMU is gone its console writer may still drain the pipe: `logs`
    waits (a little while) until it lets go of console.log.writer, then reads.
    (A stand-in writer; the wait's bound is lifted: no timing in the test.)"""
    log = tmp_path / "console.log"
    _append(log, b"boot\n")
    monkeypatch.setattr(consolelog, "WRITER_WAIT", 600.0)
    script = ("import fcntl, os, sys, time\n"
              f"fd = os.open({str(consolelog.writer_path(log))!r}, os.O_RDONLY | os.O_CREAT)\n"
              "fcntl.flock(fd, fcntl.LOCK_EX)\n"
              "print('ready', flush=True)\n"
              "time.sleep(0.5)\n"
              f"with open({str(log)!r}, 'ab') as f: f.write(b'last line\\n')\n")
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"ready\n"
        out = io.BytesIO()
        consolelog.copy(log, out, alive=lambda: False)
        assert out.getvalue() == b"boot\nlast line\n"
        out = io.BytesIO()
        consolelog.copy(log, out, follow=True, alive=lambda: False)
        assert out.getvalue() == b"boot\nlast line\n"
    finally:
        writer.wait()
