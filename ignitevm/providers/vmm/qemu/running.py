"""What the host asks of a VM's running QEMU: its pid, its agent channels'
sockets, a connection to one of them checked by its peer's credentials, and
QMP's `stop`/`cont`, on plain str paths with built-in modules only.

QemuVMM (machine.py) answers through these, and so do the fast paths of
``exec`` and ``pause``/``resume`` (cli/fastexec.py, cli/fastvm.py), without
``pathlib`` (which loads ``re``, ``urllib.parse``, ``ipaddress``), ``socket``
(its enum classes) or ``contextlib``: their start-up is a measured figure.
"""

from __future__ import annotations

import os
import stat
import sys

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:
    from _socket import socket
    from collections.abc import Callable
    from os import PathLike

    StrPath = str | PathLike[str]

# Files kept in the VM's folder while it runs (args.py has them from here)
RUN_DIR = "run"
PIDFILE = f"{RUN_DIR}/qemu.pid"
QMP = f"{RUN_DIR}/qmp.sock"
PIDSTART = "qemu.pid.start"  # "<pid> <boot id> <start ticks>", by the host at launch
CONSOLE_LOG = "console.log"
AGENT_MAX_CHANNELS = 15

LOG_DEFAULT_MAX = 4 << 20  # (consolelog.DEFAULT_MAX: tests/unit/test_fastvm.py holds them equal)
QMP_TIMEOUT = 10.0  # seconds for one QMP exchange (QEMU serves one client at a time)


def agent_socket(workdir: StrPath, k: int) -> str:
    return os.path.join(workdir, RUN_DIR, f"agent-{k}.sock")


def agent_sockets(workdir: StrPath) -> list[str]:
    """The agent channels' sockets (numbered from 1 and added in order)."""
    found = []
    for k in range(1, AGENT_MAX_CHANNELS + 1):
        path = agent_socket(workdir, k)
        if not os.path.exists(path):
            break
        found.append(path)
    return found


def pid(workdir: StrPath, check: Callable[[int, StrPath, str | None], bool] | None = None
        ) -> int | None:
    """The pid of the VM's QEMU, or None when it does not run. The host's record
    of the launch names the pid; the pid file (the host's when jailed, QEMU's
    own when not: a FIFO or a link to /dev/zero there must not hang or swamp
    root) is read only until that record exists, and then only as a small
    regular file. ``check``: is_our_qemu, or a stand-in of the tests'."""
    record = read_small(os.path.join(workdir, PIDSTART))
    text = record or read_small(os.path.join(workdir, PIDFILE))
    try:
        found = int(text.split()[0]) if text else 0
    except ValueError:
        return None
    if found <= 0 or not (check or is_our_qemu)(found, workdir, record):
        return None
    return found


def log_looked_at(workdir: StrPath) -> bool:
    """May the VM's console log be past its limit, which QemuVMM.pid looks at
    (consolelog: IGNITE_CONSOLE_LOG_MAX, else 4 MiB)? (One stat: the fast
    paths ask QemuVMM where it may.)"""
    if os.environ.get("IGNITE_CONSOLE_LOG_MAX", "").strip():
        return True
    try:
        return os.stat(os.path.join(workdir, CONSOLE_LOG)).st_size > LOG_DEFAULT_MAX
    except OSError:
        return False


def read_small(path: StrPath, limit: int = 128) -> str:
    """The text of a small regular file, never through a link or from a FIFO or
    device ("" when there is none)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, limit).decode("ascii", errors="replace")
    finally:
        os.close(fd)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def process_start(pid: int) -> str | None:
    """When ``pid`` started, as "<boot id> <start time in clock ticks>": unique to
    one process across reboots (pids and tick counts start again at each boot)."""
    try:
        text = _read(f"/proc/{pid}/stat").decode()
        boot = _read("/proc/sys/kernel/random/boot_id").decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # exited, not yet reaped
        return None
    return f"{boot} {fields[19]}"


def is_our_qemu(pid: int, workdir: StrPath, record: str | None = None) -> bool:
    """Is ``pid`` the QEMU launched for ``workdir`` (not a reused pid, nor after a
    reboot another process whose command line happens to name the folder)?
    ``record``: the launch record's text, when the caller has read it already."""
    started = process_start(pid)
    if started is None:
        return False
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except PermissionError:  # another user's process: the checks below still hold
        exe = "qemu-system"
    except OSError:
        return False
    if not exe.startswith("qemu-system"):
        return False
    # (none: launched by an older version, or killed before it could record)
    if record is None:
        record = read_small(os.path.join(workdir, PIDSTART))
    recorded = record.split()
    if recorded:
        return recorded == [str(pid), *started.split()]
    try:
        cmdline = _read(f"/proc/{pid}/cmdline")
    except OSError:
        return False
    return os.fsencode(os.fspath(workdir)) in cmdline


def host_made(path: StrPath) -> bool:
    """Is ``path`` a socket of the host's own, in a folder no one else may write?"""
    me = os.geteuid()
    try:
        folder, sock = os.lstat(os.path.dirname(path) or "."), os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(folder.st_mode) and folder.st_uid == me
            and not folder.st_mode & 0o022 and stat.S_ISSOCK(sock.st_mode) and sock.st_uid == me)


def connect(pid: int, path: StrPath) -> socket:
    """Connect to one of the sockets QEMU ``pid`` serves in the VM's run/ folder,
    and make sure QEMU is what answers (QEMU listens on them itself, so their
    peer is QEMU's uid): an unconfined VM's QEMU made them, and a link found
    there must not lead a root client to another socket of the host. The peer
    must run as the VM's QEMU does, or be the host itself for a socket in a
    folder only the host may write (a jailed VM's run/: the host made the
    socket and handed it to QEMU, and a QEMU older than 6.1 does not listen()
    on it again, which makes it name QEMU). A ``_socket.socket``."""
    import _socket
    import errno

    want = os.stat(f"/proc/{pid}").st_uid
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(os.fspath(path))
        creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # (3 ints)
        peer_uid = int.from_bytes(creds[4:8], sys.byteorder, signed=True)  # (struct ucred)
        if peer_uid != want and not (peer_uid == os.geteuid() and host_made(path)):
            name = os.path.basename(path)
            raise PermissionError(errno.EPERM, f"{name} is served by uid {peer_uid}, "
                                  f"not by the VM's QEMU (uid {want})")
    except BaseException:
        sock.close()
        raise
    return sock


def pause(workdir: StrPath) -> str:
    """Stop the guest's CPUs if they run; the state found before (QMP stop)."""
    return switch(workdir, "running", "stop")


def resume(workdir: StrPath) -> str:
    """Let a paused guest's CPUs run again; the state found before (QMP cont).
    Only a guest paused by `stop` is resumed (not one QEMU stopped on an
    error or a panic)."""
    return switch(workdir, ("paused", "postmigrate"), "cont")


def switch(workdir: StrPath, when: str | tuple[str, ...], command: str) -> str:
    """Send the QMP ``command`` if QEMU reports the state ``when`` (or one of
    them); the state found. ("postmigrate": a snapshot's save ended without its
    `cont`.)"""
    from ignitevm.providers.vmm.qemu import qmp

    mon = qmp.connect(os.path.join(workdir, QMP), QMP_TIMEOUT)
    try:
        status = mon.cmd("query-status")
        state = str(status.get("status", "")) if isinstance(status, dict) else ""
        if state == when or (isinstance(when, tuple) and state in when):
            mon.cmd(command)
    finally:
        mon.close()
    return "paused" if state == "postmigrate" else state
