"""A guest that floods its console cannot fill the host's disk: the console
writer (``ignite-jail -c``, jailed or not) bounds the log at every write, with
nobody looking (ignitevm/providers/vmm/consolelog.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Ignite, cli_env
from tests.vm.conftest import wait_console

LIMIT = 65536  # a small cap, so that a short flood crosses it many times
FLOOD = 600_000  # bytes the guest writes ("y\n" each; the tty makes them "y\r\n")


@pytest.fixture
def flooder(cli: Ignite, testbox: str, monkeypatch: pytest.MonkeyPatch,
            request: pytest.FixtureRequest) -> Iterator[str]:
    """The VM, jailed (the default; param "jail") or not (param "none")."""
    sandbox = getattr(request, "param", "jail")
    if sandbox == "jail" and os.geteuid() != 0:
        pytest.skip("a jailed VM needs root")
    monkeypatch.setenv("IGNITE_CONSOLE_LOG_MAX", str(LIMIT))
    cli("run", testbox, "--name", "flooder", "--memory", "256MB", f"--sandbox={sandbox}")
    try:
        wait_console(cli, "flooder", "TEST-READY")
        yield "flooder"
    finally:
        cli("rm", "-f", "flooder", check=False)


def _log_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("console.log*")
               if not p.name.endswith(".lock"))


def _holders(log: Path) -> list[int]:
    """The processes that have ``log`` open."""
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) == str(log) for fd in fd_dir.iterdir()):
                found.append(int(fd_dir.parent.name))
    return found


@pytest.mark.parametrize("flooder", ["jail", "none"], indirect=True)
def test_console_flood_stays_bounded(cli: Ignite, flooder: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No command looks at the VM while its guest floods the console (the
    flood is one `exec`, started before): the writer alone keeps the cap."""
    uid = cli("inspect", "vm", flooder, "-t", "{{.ObjectMeta.UID}}").stdout.strip()
    folder = cli.root / "vm" / uid
    if os.geteuid() == 0:  # (another user's processes cannot be looked into)
        # QEMU never has the log open: only the console writer has.
        holders = _holders(folder / "console.log")
        assert holders, "nothing writes the console log"
        for pid in holders:
            assert Path(f"/proc/{pid}/comm").read_text().strip() == "ignite-console", pid
    # Private: the folder, the console log, and the config disk (the VM's host key).
    assert folder.stat().st_mode & 0o777 == 0o700
    # A jailed QEMU reads them as the VM's own uid/gid: the owner or group may be
    # the VM's, never anyone else's.
    own = {0, *([int((folder / "sandbox-id").read_text())]
                if (folder / "sandbox-id").exists() else [])}
    for name in ("console.log", "config.tar", "ssh_host_ed25519_key"):
        st = (folder / name).stat()
        assert st.st_mode & 0o007 == 0, name
        assert st.st_mode & 0o070 == 0 or st.st_gid in own, name
        assert st.st_uid in own, name
    env = cli_env(cli.root)
    flood = subprocess.Popen(
        [sys.executable, "-m", "ignitevm", "exec", flooder, "--", "/bin/busybox", "sh", "-c",
         f"/bin/busybox yes | /bin/busybox head -c {FLOOD} > /dev/console"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    seen = []
    try:
        while flood.poll() is None:
            seen.append(_log_bytes(folder))
            with contextlib.suppress(subprocess.TimeoutExpired):
                flood.wait(0.2)
    finally:
        flood.kill()
        flood.wait()
    assert flood.returncode == 0
    kept = _log_bytes(folder)
    # console.log.0 (64 KiB boot log) + console.log.1 (<= LIMIT) + console.log
    assert kept <= 64 * 1024 + 2 * LIMIT, (kept, seen)
    assert max(seen) < FLOOD, seen  # bounded while it flooded, not only afterwards
    out = cli("logs", flooder).stdout
    assert "TEST-READY" in out  # the boot log is kept
    assert "console output dropped" in out and out.rstrip().endswith("y")
    _no_trim_under_the_writer(cli, flooder, folder, monkeypatch)


def _console(cli: Ignite, vm: str, script: str) -> None:
    cli("exec", vm, "--", "/bin/busybox", "sh", "-c", f"{script} > /dev/console")


def _no_trim_under_the_writer(cli: Ignite, vm: str, folder: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A command given a smaller IGNITE_CONSOLE_LOG_MAX than the VM's launch
    (here `ps`) trimmed the log in Python, renaming new files over
    console.log.0 and .1 while the writer kept the old ones open: what it
    wrote next went to unlinked files. Now the writer's files stay its own."""
    log = folder / "console.log"
    for _ in range(40):  # (over the smaller limit, under the VM's)
        if log.stat().st_size > 4096:
            break
        _console(cli, vm, "/bin/busybox yes | /bin/busybox head -c 3000")
    assert log.stat().st_size > 4096
    kept = {p.name: p.stat().st_ino for p in folder.glob("console.log.[01]")}
    size = log.stat().st_size
    monkeypatch.setenv("IGNITE_CONSOLE_LOG_MAX", "4096")
    cli("ps")
    cli("logs", vm)
    assert {p.name: p.stat().st_ino for p in folder.glob("console.log.[01]")} == kept
    assert log.stat().st_size >= size
    _console(cli, vm, "echo AFTER-PS")
    assert "AFTER-PS" in cli("logs", vm).stdout


def test_qemu_file_size_is_bounded(cli: Ignite, flooder: str) -> None:
    """The jailed QEMU runs with RLIMIT_FSIZE: its overlay's virtual size plus
    metadata plus its RAM (a compromised QEMU cannot write a file past it);
    the VM booted and runs with it."""
    uid = cli("inspect", "vm", flooder, "-t", "{{.ObjectMeta.UID}}").stdout.strip()
    folder = cli.root / "vm" / uid
    if not (folder / "sandbox-id").exists():
        pytest.skip("the VM is not jailed here")
    pid = int((folder / "run" / "qemu.pid").read_text())
    limits = Path(f"/proc/{pid}/limits").read_text()
    line = next(ln for ln in limits.splitlines() if ln.startswith("Max file size"))
    soft = int(line.split()[3])
    size, ram = 4 << 30, 256 << 20  # the default --size, the flooder's --memory
    assert size + ram < soft <= size + size // 64 + ram + (64 << 20)
    # The console writer: QEMU's child, not dumpable, as confined as QEMU.
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert kids, "no console writer"
    status = Path(f"/proc/{kids[0]}/status").read_text()
    assert "NoNewPrivs:\t1" in status and "CapEff:\t0000000000000000" in status
