"""The guest agent, run on the host in its --socket test mode (no VM needed).

The agent is built with the host's gcc exactly as for the guest; commands run
on the host as the current user, so these tests need root (users, ownership).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ignitevm.errors import IgniteError
from ignitevm.guest.build import build
from tests.helpers.agentclient import (
    DATA,
    EOF,
    EXIT,
    HEADER,
    PUT,
    RESIZE,
    SHUTDOWN,
    SIGNAL,
    WINDOW_SIZE,
    AgentClient,
    request,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the agent tests switch users: run as root"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the agent"),
]


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    sock: Path

    def client(self) -> AgentClient:
        c = AgentClient(self.sock)
        c.hello()
        return c

    def status(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)


def start_agent(binary: Path, sock: Path) -> Agent:
    proc = subprocess.Popen([binary, "--socket", sock], stderr=subprocess.PIPE)
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], 5)
    assert ready, "the agent did not start"
    assert b"ignitevm-agent: ready" in proc.stderr.readline()
    return Agent(proc, sock)


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("ignite-agent", tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def agent(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = start_agent(binary, tmp_path_factory.mktemp("agent") / "agent.sock")
    yield a
    a.proc.terminate()
    a.proc.wait(5)


@pytest.fixture
def client(agent: Agent) -> Iterator[AgentClient]:
    with agent.client() as c:
        yield c


def gone(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def test_hello_ready_ping_and_unknown_frames(client: AgentClient) -> None:
    info = client.hello()
    assert info["version"] == "1"
    assert info["pid1"]
    assert int(info["uptime_ms"]) > 0
    assert client.ping(b"x" * 1000) == b"x" * 1000
    s = client.open(99, b"")
    client.wait(s)
    assert s.error == (1, "unknown frame type")


def test_exit_codes_and_exec_errors(client: AgentClient, tmp_path: Path) -> None:
    assert client.run(["true"]).exit == 0
    assert client.run(["sh", "-c", "exit 1"]).exit == 1
    assert client.run(["sh", "-c", "kill -9 $$"]).exit == -9
    missing = client.run(["no-such-command"])
    assert missing.error == (127, "no-such-command: command not found")
    assert missing.pid is None
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    assert client.run([str(script)]).error == (126, f"{script}: permission denied")
    assert client.run(["true"], cwd="/no/such/dir").error == (
        1, "cannot change to the directory /no/such/dir: No such file or directory")
    assert client.run(["true"], user="no-such-user").error == (
        1, "unable to find user no-such-user: no matching entries in /etc/passwd")
    assert client.run([str(tmp_path)]).error == (126, f"{tmp_path}: is a directory")
    (tmp_path / "junk").write_bytes(b"\x7fELF junk")
    (tmp_path / "junk").chmod(0o755)
    assert client.run([str(tmp_path / "junk")]).error == (
        126, f"{tmp_path}/junk: exec format error")
    assert client.run([""]).error == (127, "empty command name: command not found")
    # (the child shares the agent's memory until it runs the command: the agent
    # goes on serving, with what it had, after each of these failures)
    assert client.run(["sh", "-c", "echo $HOME; pwd"]).stdout == b"/root\n/root\n"


@pytest.mark.parametrize("passwd,group", [("fifo", "fifo"), ("huge", "huge"), (None, "fifo")])
def test_passwd_and_group_that_are_fifos_or_huge_do_not_hold_the_agent(
        binary: Path, tmp_path: Path, passwd: str | None, group: str) -> None:
    """/etc/passwd and /etc/group are the guest's: a FIFO there (its open waits
    for a writer) or a huge file must not hold up the agent, which waits for
    an exec's child to look its user up (every exec, the warm-up too)."""
    fifo, huge = tmp_path / "fifo", tmp_path / "huge"
    os.mkfifo(fifo)
    with open(huge, "wb") as f:
        f.truncate(5 << 30)     # (sparse)
    files = {"fifo": fifo, "huge": huge}
    binds = [f"mount --bind {files[name]} /etc/{what}"
             for name, what in ((passwd, "passwd"), (group, "group")) if name]
    sock = tmp_path / "agent.sock"
    # (its own mount namespace: the host's files stay as they are)
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             " && ".join(binds) + ' && exec "$0" --socket "$1"', binary, sock],
                            stderr=subprocess.DEVNULL)
    try:
        with AgentClient(sock) as c:
            c.hello()
            s = c.run(["sh", "-c", "id -u; echo $HOME"])
            assert (s.error, bytes(s.stdout)) == (None, b"0\n/root\n")
            assert c.run(["id", "-u"], user="65534:65534").stdout == b"65534\n"
            s = c.run(["id", "-u"], user="nobody")
            if passwd is None:
                assert s.stdout == b"65534\n"
            else:
                why = "not a regular file" if passwd == "fifo" else "larger than 4 MiB"
                assert s.error == (1, f"unable to find user nobody: /etc/passwd: {why}")
            # (a group by name: the error says why it could not be looked up)
            s = c.run(["id", "-g"], user="65534:staff")
            why = "not a regular file" if group == "fifo" else "larger than 4 MiB"
            assert s.error == (1, f"unable to find group staff: /etc/group: {why}")
    finally:
        proc.kill()
        proc.wait()
        with contextlib.suppress(OSError):   # (a reader left waiting on the FIFO: let it go)
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_a_nul_byte_in_passwd_or_group_hides_only_its_own_line(binary: Path,
                                                                 tmp_path: Path) -> None:
    """The guest's /etc/passwd and /etc/group may hold a NUL byte: the entries
    after its line are still found."""
    passwd, group = tmp_path / "passwd", tmp_path / "group"
    passwd.write_bytes(b"root:x:0:0:root:/root:/bin/sh\nbro\0ken:x:1:1::/:/bin/sh\n"
                       b"late:x:4242:4243:late:/late:/bin/sh\n")
    group.write_bytes(b"root:x:0:\nbro\0ken:x:1:late\nlategrp:x:4343:\n"
                      b"extra:x:4444:late\n")
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             'mount --bind "$2" /etc/passwd && mount --bind "$3" /etc/group '
                             '&& exec "$0" --socket "$1"', binary, sock, passwd, group],
                            stderr=subprocess.DEVNULL)
    try:
        with AgentClient(sock) as c:
            c.hello()
            s = c.run(["sh", "-c", 'id -u; id -g; id -G; echo "$HOME"'], user="late")
            assert (s.error, bytes(s.stdout)) == (None, b"4242\n4243\n4243 4444\n/late\n")
            s = c.run(["id", "-g"], user="late:lategrp")
            assert (s.error, bytes(s.stdout)) == (None, b"4343\n")
    finally:
        proc.kill()
        proc.wait()


def test_a_user_whose_ids_do_not_parse_is_refused_never_root(binary: Path,
                                                             tmp_path: Path) -> None:
    """A passwd entry whose uid or gid is not a number is an error, never uid or gid 0;
    and a command run as another user reports who it runs as (its child is forked, not
    one sharing the agent's memory)."""
    passwd = tmp_path / "passwd"
    passwd.write_bytes(b"root:x:0:0:root:/root:/bin/sh\nweird:x:abc:def::/:/bin/sh\n"
                       b"half:x:12abc:5::/:/bin/sh\nfine:x:4242:4243::/:/bin/sh\n")
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             'mount --bind "$2" /etc/passwd && exec "$0" --socket "$1"',
                             binary, sock, passwd], stderr=subprocess.DEVNULL)
    try:
        with AgentClient(sock) as c:
            c.hello()
            for name in ("weird", "half"):
                s = c.run(["id", "-u"], user=name)
                assert s.error == (1, f"invalid uid or gid for user {name} in /etc/passwd")
                assert bytes(s.stdout) == b""
            s = c.run(["sh", "-c", "id -u; id -g"], user="fine")
            assert (s.error, bytes(s.stdout)) == (None, b"4242\n4243\n")
            assert c.run(["id", "-u"]).stdout == b"0\n"  # (and the agent is fine after)
    finally:
        proc.kill()
        proc.wait()


def test_a_commands_null_stdin_is_not_non_blocking(client: AgentClient) -> None:
    """The agent opens /dev/null with O_NONBLOCK (a FIFO put there must not
    block it); the command gets it as it would open it itself."""
    s = client.run(["sh", "-c", "grep ^flags: /proc/$$/fdinfo/0"])
    assert s.exit == 0, s.stderr
    flags = int(bytes(s.stdout).split()[1], 8)
    assert not flags & os.O_NONBLOCK


def test_stdout_and_stderr_are_kept_apart(client: AgentClient) -> None:
    s = client.run(["sh", "-c", "echo out; echo err >&2; echo out2"])
    assert (s.exit, bytes(s.stdout), bytes(s.stderr)) == (0, b"out\nout2\n", b"err\n")
    # both EOFs come before EXIT, EXIT is last
    assert s.events[-1] == (EXIT, 0)
    assert {(EOF, 1), (EOF, 2)} <= set(s.events[:-1])


def test_stdin_is_streamed_with_flow_control(client: AgentClient) -> None:
    data = os.urandom(3 * WINDOW_SIZE + 123)
    s = client.run(["cat"], input=data)
    assert s.exit == 0
    assert bytes(s.stdout) == data
    # without I:1 stdin is /dev/null
    assert client.run(["cat"]).stdout == b""


def test_session_ends_with_its_command_not_its_background_jobs(client: AgentClient) -> None:
    start = time.monotonic()
    for tty in (None, (24, 80)):
        s = client.run(["sh", "-c", "sleep 30 & echo hi"], tty=tty)
        assert (s.exit, bytes(s.stdout).strip()) == (0, b"hi")
    assert time.monotonic() - start < 2


def test_signal_frame(client: AgentClient) -> None:
    s = client.started(client.exec(["sleep", "1000"]))
    client.send(SIGNAL, s.id, struct.pack("<I", 15))
    client.wait(s)
    assert s.exit == -15


def test_user_cwd_and_env(client: AgentClient) -> None:
    s = client.run(["sh", "-c", 'id -u; id -g; pwd; echo "$FOO"; echo "$HOME"'],
                   user="nobody", cwd="/tmp", env={"FOO": "bar", "PATH": "/usr/bin:/bin"})
    uid, gid, cwd, foo, home = s.stdout.decode().split("\n")[:5]
    assert s.exit == 0
    assert (int(uid), cwd, foo) == (65534, "/tmp", "bar")
    assert int(gid) != 0
    assert home  # filled in from /etc/passwd
    env = dict(line.split("=", 1) for line in client.run(["env"]).stdout.decode().splitlines())
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["HOME"] == "/root"
    assert client.run(["id", "-u"], user="65534:65534").stdout == b"65534\n"


def test_tty_session_and_resize(client: AgentClient) -> None:
    s = client.run(["sh", "-c", "tty; stty size"], tty=(24, 80))
    lines = s.stdout.decode().split()
    assert s.exit == 0
    assert lines[0].startswith("/dev/pts/")
    assert lines[1:3] == ["24", "80"]
    assert all(flags == 1 for type, flags in s.events if type in (EOF,))

    s = client.exec(["sh", "-c", "read x; stty size; echo got $x"], tty=(24, 80), stdin=True)
    client.started(s)
    client.send(RESIZE, s.id, struct.pack("<HH", 50, 132))
    client.write(s, b"hello\n", eof=False)
    client.wait(s)
    assert s.exit == 0
    assert "50 132" in s.stdout.decode()
    assert "got hello" in s.stdout.decode()

    # EOF on a terminal: its EOF character, also after a partial line
    for data in (b"abc\n", b"abc"):
        s = client.exec(["cat"], tty=(24, 80), stdin=True)
        client.write(s, data)
        client.wait(s)
        assert s.exit == 0
        assert s.stdout.replace(b"\r\n", b"\n").count(b"abc") == 2


def test_many_concurrent_sessions_and_channels(agent: Agent) -> None:
    clients = [agent.client() for _ in range(4)]
    try:
        sessions = []
        start = time.monotonic()
        for n, c in enumerate(clients):
            for i in range(20 if n == 0 else 5):
                s = c.exec(["sh", "-c", f"sleep 0.3; echo {n}-{i}; echo e{i} >&2"])
                sessions.append((c, s, n, i))
        for c in clients:
            c.wait(*[s for cc, s, _, _ in sessions if cc is c])
        elapsed = time.monotonic() - start
        for _, s, n, i in sessions:
            assert (s.exit, bytes(s.stdout), bytes(s.stderr)) == (0, f"{n}-{i}\n".encode(),
                                                                   f"e{i}\n".encode())
        assert elapsed < 2.0, f"35 sessions of 0.3 s took {elapsed:.1f} s: not concurrent"
    finally:
        for c in clients:
            c.close()


def test_slow_reader_keeps_agent_memory_small(binary: Path, tmp_path: Path) -> None:
    agent = start_agent(binary, tmp_path / "mem.sock")
    try:
        with agent.client() as c:
            s = c.exec(["head", "-c", str(64 << 20), "/dev/zero"])
            s.auto_credit = False
            deadline = time.monotonic() + 2
            while s.received < WINDOW_SIZE and time.monotonic() < deadline:
                c.pump()
            time.sleep(0.3)          # no credit: the agent must stop at the window
            with pytest.raises(TimeoutError):
                c.pump(timeout=0.2)
            assert s.received == WINDOW_SIZE
            rss = [agent.status("VmRSS")]
            while not s.done:
                if s.unacked >= 64 << 10:
                    c.credit(s)       # a reader that is slow but keeps going
                f = c.pump()
                if f.type == EOF or s.received % (8 << 20) < 65536:
                    rss.append(agent.status("VmRSS"))
            assert s.exit == 0
            assert s.received == 64 << 20
        peak = agent.status("VmHWM")
        assert max(rss) < 8 << 10, f"agent RSS grew to {max(rss)} kB"
        assert peak < 8 << 10, f"agent peak RSS {peak} kB"
    finally:
        agent.proc.terminate()
        agent.proc.wait(5)


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    big = root / "sub" / "big.bin"
    with big.open("wb") as f:
        for _ in range(32):
            f.write(os.urandom(1 << 20))
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o750)
    (root / "secret").write_text("s")
    (root / "secret").chmod(0o600)
    os.chown(root / "secret", 65534, 65534)
    (root / "link").symlink_to("sub/big.bin")
    (root / "dangling").symlink_to("/no/where")
    (root / "longlink").symlink_to("x" * 150)
    os.link(root / "run.sh", root / "sub" / "hard.sh")
    long_dir = root / ("d" * 90) / ("e" * 90)
    long_dir.mkdir(parents=True)
    (long_dir / ("f" * 120)).write_text("long")
    os.utime(root / "secret", (1_000_000_000, 1_000_000_000))
    os.utime(root / "sub", (1_100_000_000, 1_100_000_000))


def digest(p: Path) -> str:
    with p.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def assert_same_tree(a: Path, b: Path) -> None:
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*"))
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*"))
    for name in names:
        pa, pb = a / name, b / name
        sa, sb = pa.lstat(), pb.lstat()
        assert (sa.st_mode, sa.st_uid, sa.st_gid) == (sb.st_mode, sb.st_uid, sb.st_gid), name
        if pa.is_symlink():
            assert os.readlink(pa) == os.readlink(pb)
        elif pa.is_file():
            assert digest(pa) == digest(pb), name
            assert int(sa.st_mtime) == int(sb.st_mtime), name
    assert (b / "sub" / "hard.sh").stat().st_ino == (b / "run.sh").stat().st_ino
    assert int((b / "sub").stat().st_mtime) == 1_100_000_000


def test_put_then_get_round_trip(agent: Agent, client: AgentClient, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    archive = tmp_path / "in.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(src, arcname="src")
    dest = tmp_path / "not" / "yet" / "there"
    with archive.open("rb") as f:
        s = client.put(str(dest), f)
    assert (s.exit, s.error) == (0, None)
    assert_same_tree(src, dest / "src")
    assert not [p for p in dest.rglob(".ignite-put*")]

    out = tmp_path / "out.tar"
    with out.open("wb") as f:
        s = client.get(str(dest / "src"), f.write)
    assert (s.exit, s.error) == (0, None)
    assert s.events[-2:] == [(EOF, 1), (EXIT, 0)]
    back = tmp_path / "back"
    with tarfile.open(out) as tar:
        tar.extractall(back)  # (our own agent on our own tree: trusted here)
    assert_same_tree(src, back / "src")
    listing = subprocess.run(["tar", "-tvf", out], capture_output=True, text=True, check=True)
    assert "src/sub/hard.sh link to src/run.sh" in listing.stdout

    # an archive made by GNU tar (pax format, "./" names)
    gnu = subprocess.run(["tar", "--format=posix", "-C", src, "-cf", "-", "."],
                         capture_output=True, check=True).stdout
    assert client.put(str(tmp_path / "gnu"), gnu).exit == 0
    assert_same_tree(src, tmp_path / "gnu")

    # a single file, and pax long names
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("p" * 150 + "/" + "q" * 150)
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    assert client.put(str(dest), buf.getvalue()).exit == 0
    assert (dest / ("p" * 150) / ("q" * 150)).read_bytes() == b"hello"
    assert agent.status("VmHWM") < 16 << 10


def tar_of(*entries: tuple[str, str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = str(data)
                tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize("entries", [
    [("file", "../evil", b"x")],
    [("file", "ok/../../evil", b"x")],
    [("file", "/tmp/evil-abs", b"x")],
    [("symlink", "link", "{outside}"), ("file", "link/evil", b"x")],
    [("symlink", "link", ".."), ("file", "link/evil", b"x")],
    [("hardlink", "hl", "../outside/victim")],
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-up", "hardlink-out"])
def test_put_refuses_escapes(client: AgentClient, tmp_path: Path,
                             entries: list[tuple[str, str, bytes | str]]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("v")
    target = tmp_path / "target"
    entries = [(k, n, d.replace("{outside}", str(outside)) if isinstance(d, str) else d)
               for k, n, d in entries]
    s = client.put(str(target), tar_of(*entries))
    assert s.error is not None and s.error[0] == 1, s
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert not (tmp_path / "evil").exists()
    assert not Path("/tmp/evil-abs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "target"]


def test_put_through_an_existing_symlink_is_refused(client: AgentClient, tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "etc").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    s = client.put(str(tmp_path / "target"), tar_of(("file", "etc/passwd", b"x")))
    assert s.error and "symbolic link" in s.error[1]
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_get_of_a_missing_path(client: AgentClient) -> None:
    s = client.get("/no/such/path")
    assert s.error == (2, "/no/such/path: No such file or directory")


def test_dropped_put_leaves_no_partial_file(agent: Agent, tmp_path: Path) -> None:
    archive = tar_of(("file", "big", os.urandom(1 << 20)))
    with agent.client() as c:
        s = c.open(PUT, request(path=str(tmp_path)))
        c.write(s, archive[:600_000], eof=False)
        c.ping(b"sync")         # the agent has read everything before the PING
    deadline = time.monotonic() + 3
    while list(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(tmp_path.iterdir()) == []


def test_closing_the_channel_kills_its_commands(agent: Agent) -> None:
    with agent.client() as c:
        s1 = c.started(c.exec(["sleep", "1000"]))
        s2 = c.started(c.exec(["sh", "-c", "sleep 1000 & wait"]))
    assert s1.pid and gone(s1.pid)
    assert s2.pid and gone(s2.pid)


def test_shutdown_in_socket_mode_stops_the_agent(binary: Path, tmp_path: Path) -> None:
    agent = start_agent(binary, tmp_path / "shut.sock")
    with agent.client() as c:
        s = c.open(SHUTDOWN, struct.pack("<I", 0))
        c.wait(s)
        assert s.exit == 0
    assert agent.proc.wait(5) == 0


def test_hello_resets_the_channel(client: AgentClient) -> None:
    s = client.started(client.exec(["sleep", "1000"]))
    client.hello()
    assert s.pid and gone(s.pid)
    assert client.run(["echo", "again"]).stdout == b"again\n"


def test_raw_framing_survives_byte_by_byte_writes(agent: Agent) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(agent.sock))
        payload = request(["echo", "slow"])
        data = HEADER.pack(1, 0, 0, 0, 0) + HEADER.pack(3, 0, 0, 7, len(payload)) + payload
        for i in range(len(data)):
            sock.send(data[i:i + 1])
        sock.settimeout(5)
        got = b""
        while b"slow\n" not in got or not got.endswith(HEADER.pack(EXIT, 0, 0, 7, 4) + b"\0" * 4):
            chunk = sock.recv(4096)
            assert chunk
            got += chunk


def test_lost_framing_is_recovered_at_the_next_hello(agent: Agent) -> None:
    with agent.client() as c:
        s = c.started(c.exec(["sleep", "1000"]))
        # a frame too long to be one, then junk that even holds a partial HELLO header
        c.sock.sendall(HEADER.pack(5, 0, 0, 1, 1 << 30) + os.urandom(5000) + b"\x01\0\0")
        info = c.hello()
        assert info["version"] == "1"
        assert s.pid and gone(s.pid)
        assert c.run(["echo", "back"]).stdout == b"back\n"


@pytest.mark.parametrize("cut", ["payload-1", "payload-5", "payload-12", "header-1", "header-4",
                                 "header-8"])
def test_a_hello_that_ends_a_dead_clients_cut_frame_is_said_again(agent: Agent,
                                                                  cut: str) -> None:
    """A client killed mid-frame leaves the agent a frame to finish. When the
    next client's HELLO finishes it (the rest of the HELLO then reads as
    padding) and its PING is read, that PONG alone must not pass for a reset
    channel: the dead client's sessions would run on under the ids the next
    client picks (a CI run once got "session id already in use")."""
    from ignitevm.agent import protocol as p
    from ignitevm.agent.client import Channel

    old = agent.client()
    s = old.started(old.exec(["sleep", "1000"]))
    frame = HEADER.pack(DATA, 0, 0, s.id, 100) + bytes(100)
    where, n = cut.split("-")
    old.sock.sendall(frame[:-int(n)] if where == "payload" else frame[:int(n)])
    # The next client, on the same byte stream (as on a port after a kill -9).
    with Channel(old.sock, os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)) as ch:
        ch._handshake(time.monotonic() + 10, "the test agent", 10)
        ch.send(p.Frame(p.EXEC, s.id, p.request(["true"])))
        got = ch.recv(time.monotonic() + 10)
        while got is not None and got.session != s.id:
            got = ch.recv(time.monotonic() + 10)
        assert got is not None and got.type == p.STARTED, got
        assert s.pid and gone(s.pid)
        assert ch.info["version"] == "1"


def test_session_ids_differ_between_clients() -> None:
    from ignitevm.agent.client import Channel

    a, b = (Channel(socket.socket(socket.AF_UNIX), -1) for _ in range(2))
    first = [a.new_session() for _ in range(3)]
    assert 0 not in first and len(set(first)) == 3
    assert b.new_session() not in first
    a._next = 0xFFFFFFFF
    assert [a.new_session(), a.new_session()] == [0xFFFFFFFF, 1]
    for ch in (a, b):
        ch.sock.close()


class _OnePort:
    def __init__(self, sock: Path):
        self.sock = sock

    def sockets(self) -> list[Path]:
        return [self.sock]

    def grow(self) -> Path | None:
        return None


def test_the_host_reader_takes_what_the_agent_sends(agent: Agent, tmp_path: Path) -> None:
    """The real host client and tar reader against the real agent: long names,
    hard links, in-tree links, empty folders and pseudo-files come through."""
    from ignitevm.agent.client import Channel
    from ignitevm.operations.guest import receive

    src = tmp_path / "src"
    make_tree(src)
    (src / "dangling").unlink()             # (an absolute link: refused on the host)
    (src / "setuid").write_text("s")
    (src / "setuid").chmod(0o4755)
    dest = tmp_path / "dest"
    dest.mkdir()
    with Channel.connect(_OnePort(agent.sock), 10) as ch:
        got = receive(ch, str(src), str(dest))
    assert got == dest / "src"
    for p in src.rglob("*"):
        q = got / p.relative_to(src)
        assert q.is_symlink() == p.is_symlink(), p
        if p.is_symlink():
            assert os.readlink(q) == os.readlink(p)
        elif p.is_file():
            assert digest(q) == digest(p), p
            assert q.lstat().st_uid == os.getuid()
    assert (got / "sub" / "hard.sh").stat().st_ino == (got / "run.sh").stat().st_ino
    assert (got / "setuid").stat().st_mode & 0o7777 == 0o755
    with Channel.connect(_OnePort(agent.sock), 10) as ch:
        receive(ch, "/proc/self/status", str(dest))
    assert (dest / "status").read_text().startswith("Name:")
    with Channel.connect(_OnePort(agent.sock), 10) as ch:
        receive(ch, str(src / "sub") + "/.", str(dest / "merged"))
    assert sorted(os.listdir(dest / "merged")) == sorted(os.listdir(src / "sub"))
    with Channel.connect(_OnePort(agent.sock), 10) as ch, pytest.raises(IgniteError):
        receive(ch, str(tmp_path / "no-such"), str(dest))
    assert sorted(os.listdir(dest)) == ["merged", "src", "status"]


@contextlib.contextmanager
def agent_with_binds(binary: Path, tmp_path: Path, binds: dict[str, Path]
                     ) -> Iterator[Path]:
    """The agent (its socket's path) in a mount namespace of its own where
    each guest folder of ``binds`` is a folder of the test (bind mounts: the
    host's are never touched)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    sock = tmp_path / "agent.sock"
    script = "".join(f"mount --bind {src} {dst} && " for dst, src in binds.items())
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             script + f'exec "$0" --socket {sock}', str(binary)],
                            stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 10)
        line = proc.stderr.readline() if ready else b""
        if b"ignitevm-agent: ready" not in line:
            pytest.skip(f"no agent in a mount namespace of its own: {line!r}")
        yield sock
    finally:
        proc.terminate()
        proc.wait(5)


def test_restore_gives_a_clone_its_own_ssh_keys(binary: Path, tmp_path: Path) -> None:
    """RESTORE's ssh_* lines replace the host key pair and root's
    authorized_keys where the init put them, with the init's modes; a link
    there is not written through; the agent says restore=3. The agent runs in
    a mount namespace of its own where /etc/ssh and /root are folders of the
    test (the host's are never touched)."""
    etc_ssh, root = tmp_path / "etc-ssh", tmp_path / "root"
    (root / ".ssh").mkdir(parents=True)
    etc_ssh.mkdir()
    key, pub = etc_ssh / "ssh_host_ed25519_key", etc_ssh / "ssh_host_ed25519_key.pub"
    key.write_bytes(b"the snapshot's private key, longer than the clone's one\n" * 20)
    key.chmod(0o644)
    pub.write_text("ssh-ed25519 SNAPSHOT\n")
    outside = tmp_path / "outside"
    outside.write_text("not the guest's\n")
    (root / ".ssh" / "authorized_keys").symlink_to(outside)
    run = tmp_path / "run"  # (no pid file: the host's sshd, if any, is never signalled)
    run.mkdir()
    with agent_with_binds(binary, tmp_path, {"/etc/ssh": etc_ssh, "/root": root,
                                             "/run": run}) as sock:
        new_key = b"-----BEGIN OPENSSH PRIVATE KEY-----\nclone\n-----END OPENSSH PRIVATE KEY-----\n"
        with AgentClient(sock) as c:
            assert c.hello()["restore"] == "3"
            fields = [("ssh_host_key", new_key.hex()),
                      ("ssh_host_key_pub", b"ssh-ed25519 CLONE ignite-x\n".hex()),
                      ("ssh_authorized_keys", b"ssh-ed25519 CLIENT\n".hex())]
            s = c.open(18, "".join(f"{k}={v}\n" for k, v in fields).encode())  # RESTORE
            c.wait(s)
            assert (s.exit, s.error, bytes(s.stderr)) == (0, None, b"")
            assert key.read_bytes() == new_key and key.stat().st_mode & 0o7777 == 0o600
            assert pub.read_text() == "ssh-ed25519 CLONE ignite-x\n"
            assert pub.stat().st_mode & 0o7777 == 0o644
            assert outside.read_text() == "not the guest's\n"  # (a link: left alone)
            # A bad value is one warning; the file stays as it was.
            s = c.open(18, b"ssh_host_key_pub=zz\nssh_host_key=\n")
            c.wait(s)
            assert s.exit == 0 and bytes(s.stderr).count(b"\n") == 2, s.stderr
            assert pub.read_text() == "ssh-ed25519 CLONE ignite-x\n"
            (root / ".ssh" / "authorized_keys").unlink()
            (root / ".ssh" / "authorized_keys").write_text("ssh-ed25519 SNAPSHOT-CLIENT\n")
            s = c.open(18, f"ssh_authorized_keys={b'ssh-ed25519 CLIENT'.hex()}\n".encode())
            c.wait(s)
            assert s.exit == 0
            assert (root / ".ssh" / "authorized_keys").read_text() == "ssh-ed25519 CLIENT"
            assert (root / ".ssh" / "authorized_keys").stat().st_mode & 0o7777 == 0o600


def test_restore_tells_a_listener_sshd_to_load_its_new_host_key(binary: Path,
                                                                 tmp_path: Path) -> None:
    """OpenSSH 9.8 and later (an sshd-session program) load the host keys in the
    listener alone: a new host key sends SIGHUP to the pid in /run/sshd.pid."""
    if not Path("/usr/lib/openssh").is_dir():
        pytest.skip("no /usr/lib/openssh on this host to stand for the guest's")
    etc_ssh, libexec, run = tmp_path / "etc-ssh", tmp_path / "openssh", tmp_path / "run"
    for d in (etc_ssh, libexec, run):
        d.mkdir()
    (etc_ssh / "ssh_host_ed25519_key").write_text("old\n")
    (libexec / "sshd-session").write_text("")
    got = tmp_path / "got-hup"
    # (Python, not sh: a shell started with SIGHUP ignored, as under nohup, cannot trap it)
    stand_in = ("import signal, sys, time\n"
                "def hup(*_):\n"
                "    open(sys.argv[1], 'w').write('hup\\n')\n"
                "    sys.exit(0)\n"
                "signal.signal(signal.SIGHUP, hup)\n"
                "print('up', flush=True)\n"
                "while True:\n"
                "    time.sleep(0.05)\n")
    sshd = subprocess.Popen([sys.executable, "-c", stand_in, str(got)], stdout=subprocess.PIPE)
    try:
        assert sshd.stdout is not None and sshd.stdout.readline() == b"up\n"
        (run / "sshd.pid").write_text(f"{sshd.pid}\n")
        with agent_with_binds(binary, tmp_path, {"/etc/ssh": etc_ssh, "/run": run,
                                                 "/usr/lib/openssh": libexec}) as sock, \
                AgentClient(sock) as c:
            c.hello()
            s = c.open(18, f"ssh_host_key={b'new'.hex()}\n".encode())  # RESTORE
            c.wait(s)
            assert (s.exit, bytes(s.stderr)) == (0, b"")
            assert sshd.wait(10) == 0 and got.read_text() == "hup\n"
            assert (etc_ssh / "ssh_host_ed25519_key").read_text() == "new"
    finally:
        sshd.kill()
        sshd.wait()
