"""``ignite cp`` and ``exec`` against a hostile guest: the real host client
(Channel, sessions, the tar reader, the placement) talks to a fake agent on a
Unix socket (tests/helpers/fakeguest.py) that sends crafted frames and tars.
Each attack is refused or bounded and nothing is written outside the
destination.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from ignitevm.agent import protocol as p
from ignitevm.agent import session
from ignitevm.agent.client import AgentError, Channel
from ignitevm.agent.untar import Limits, Refused
from ignitevm.errors import Conflict, IgniteError
from ignitevm.operations.guest import receive
from tests.helpers.fakeguest import FakeGuest, Raw, Stall, request_path

Item = bytes | Raw | Stall | p.Frame


# --- archives -------------------------------------------------------------------
def tar_of(*entries: tuple[str, str, bytes | str], mode: int = 0o644,
           uid: int = 0) -> bytes:
    """A GNU tar; kinds: file, dir, symlink, hardlink, chr, fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.mtime = mode, uid, uid, 1_000_000_000
            if kind == "file":
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                         "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            if kind == "dir":
                info.mode = 0o755
            info.linkname = str(data)
            tar.addfile(info)
    return buf.getvalue()


def raw_header(name: bytes, typ: bytes, size: int) -> bytes:
    h = bytearray(512)
    h[:len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = h[116:124] = b"0000000\0"
    h[124:136] = f"{size:011o}".encode() + b"\0"
    h[136:148] = b"00000000000\0"
    h[156:157] = typ
    h[257:265] = b"ustar  \0"
    h[148:156] = b" " * 8
    h[148:156] = f"{sum(h):06o}".encode() + b"\0 "
    return bytes(h)


def zeros_forever(chunk: int = 1 << 16) -> Iterator[bytes]:
    block = bytes(chunk)
    while True:
        yield block


# --- the harness ------------------------------------------------------------------
@pytest.fixture(autouse=True)
def first_session_is_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scripted frames name session 1: the client's first session."""
    monkeypatch.setattr("ignitevm.agent.client.first_session", lambda: 1)


@pytest.fixture
def guest_socket(tmp_path: Path) -> Path:
    return tmp_path / "agent-1.sock"


def fake(path: Path, answer: Iterable[Item] | None = None, *, exec_answer: Iterable[Item] = (),
         handshake: object = None) -> FakeGuest:
    def on_session(typ: int, sid: int, payload: bytes) -> Iterable[Item]:
        if typ == p.GET:
            assert request_path(payload)
            return answer or ()
        return exec_answer

    return FakeGuest(path, on_session, handshake)  # type: ignore[arg-type]


def copy(path: Path, answer: Iterable[Item], src: str, dest: Path | str, *,
         idle: float = 30.0, limits: Limits | None = None) -> Path:
    with fake(path, answer) as g, Channel.connect(g, 10, "the fake VM") as ch:
        return receive(ch, src, str(dest), idle, None, limits)


@pytest.fixture
def area(tmp_path: Path) -> Path:
    """A destination folder beside a victim folder that must stay untouched."""
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep").write_text("k")
    (tmp_path / "dest").mkdir()
    return tmp_path


def untouched(area: Path) -> None:
    assert sorted(os.listdir(area / "victim")) == ["keep"]
    assert (area / "victim" / "keep").read_text() == "k"
    assert sorted(n for n in os.listdir(area) if not n.startswith("agent-1.")) == [
        "dest", "victim"]
    leftovers = [str(q) for q in (area / "dest").rglob("*")]
    assert leftovers == [], leftovers


# --- honest copies ---------------------------------------------------------------------
def test_a_tree_is_copied_owned_by_the_caller_without_special_bits(
        guest_socket: Path, area: Path) -> None:
    archive = tar_of(("dir", "app/", ""), ("file", "app/run", b"#!/bin/sh\n"),
                     ("dir", "app/sub/", ""), ("file", "app/sub/data", b"d" * 100_000),
                     ("symlink", "app/link", "sub/data"), ("symlink", "app/sub/up", "../run"),
                     ("hardlink", "app/sub/again", "app/run"), mode=0o6755, uid=4242)
    got = copy(guest_socket, [archive], "/srv/app", area / "dest")
    assert got == area / "dest" / "app"
    run = got / "run"
    st = run.lstat()
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert stat.S_IMODE(st.st_mode) == 0o755 & ~_umask()
    assert (got / "sub" / "again").stat().st_ino == st.st_ino
    assert os.readlink(got / "link") == "sub/data"
    assert (got / "link").read_bytes() == b"d" * 100_000
    assert int(st.st_mtime) == 1_000_000_000
    assert not [q for q in (area / "dest").iterdir() if q.name.startswith(".ignite-cp")]


def test_contents_are_merged_into_an_existing_folder(guest_socket: Path, area: Path) -> None:
    dest = area / "dest"
    (dest / "mine").write_text("mine")
    (dest / "sub").mkdir()
    (dest / "sub" / "old").write_text("old")
    (dest / "sub" / "replaced").write_text("before")
    archive = tar_of(("dir", "./", ""), ("file", "./new", b"n"), ("dir", "./sub/", ""),
                     ("file", "./sub/replaced", b"after"), ("file", "./sub/added", b"a"))
    assert copy(guest_socket, [archive], "/data/.", dest) == dest
    assert (dest / "mine").read_text() == "mine"           # never deleted
    assert (dest / "sub" / "old").read_text() == "old"
    assert (dest / "sub" / "replaced").read_text() == "after"
    assert (dest / "sub" / "added").read_text() == "a"
    assert (dest / "new").read_text() == "n"
    assert sorted(os.listdir(dest)) == ["mine", "new", "sub"]


def test_a_folder_lands_inside_an_existing_folder_and_merges_there(
        guest_socket: Path, area: Path) -> None:
    dest = area / "dest"
    (dest / "data").mkdir()
    (dest / "data" / "mine").write_text("mine")
    archive = tar_of(("dir", "data/", ""), ("file", "data/f", b"f"))
    assert copy(guest_socket, [archive], "/data", dest) == dest / "data"
    assert sorted(os.listdir(dest / "data")) == ["f", "mine"]
    # to a new name
    assert copy(guest_socket, [archive], "/data", dest / "renamed") == dest / "renamed"
    assert os.listdir(dest / "renamed") == ["f"]
    # a file over a file is replaced; a file onto a folder is refused, nothing changes
    one = tar_of(("file", "f", b"new"))
    (dest / "f").write_text("old")
    copy(guest_socket, [one], "/f", dest / "f")
    assert (dest / "f").read_text() == "new"
    with pytest.raises(Conflict, match="cannot overwrite folder"):
        copy(guest_socket, [one], "/data", dest)
    assert sorted(os.listdir(dest / "data")) == ["f", "mine"]


# --- hostile archives -------------------------------------------------------------------
HOSTILE = {
    "dotdot": [("file", "x/../../victim/evil", b"x")],
    "absolute": [("file", "/tmp/ignite-cp-evil", b"x")],
    "abs-symlink-then-through": [("dir", "x/", ""), ("symlink", "x/l", "{victim}"),
                                 ("file", "x/l/evil", b"x")],
    "up-symlink-then-through": [("dir", "x/", ""), ("symlink", "x/l", "../../victim"),
                                ("file", "x/l/evil", b"x")],
    "in-tree-symlink-then-through": [("dir", "x/", ""), ("dir", "x/d/", ""),
                                     ("symlink", "x/l", "d"), ("file", "x/l/evil", b"x")],
    "symlink-escapes-through-symlink": [
        ("dir", "x/", ""), ("dir", "x/a/", ""), ("dir", "x/a/b/", ""),
        ("symlink", "x/esc", "a/b/l/../../victim"), ("symlink", "x/a/b/l", "../..")],
    "hardlink-out": [("hardlink", "x", "../victim/keep")],
    "hardlink-abs": [("dir", "x/", ""), ("hardlink", "x/h", "/etc/passwd")],
    "hardlink-to-unknown": [("dir", "x/", ""), ("hardlink", "x/h", "x/nothing")],
    "char-device": [("dir", "x/", ""), ("chr", "x/null", "")],
    "fifo": [("dir", "x/", ""), ("fifo", "x/fifo", "")],
    "two-tops": [("file", "x", b"1"), ("file", "y", b"2")],
    "top-is-symlink": [("symlink", "x", "../victim")],
    "duplicate": [("dir", "x/", ""), ("file", "x/f", b"1"), ("symlink", "x/f", "g")],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_archives_are_refused_leaving_nothing(guest_socket: Path, area: Path,
                                                       name: str) -> None:
    entries = [(k, n, d.replace("{victim}", str(area / "victim")) if isinstance(d, str) else d)
               for k, n, d in HOSTILE[name]]
    with pytest.raises(Refused) as info:
        copy(guest_socket, [tar_of(*entries)], "/x", area / "dest")
    assert "refused what the guest sent for /x" in str(info.value)
    untouched(area)
    assert not Path("/tmp/ignite-cp-evil").exists()


def test_a_1gib_pax_header_is_refused_unread(guest_socket: Path, area: Path) -> None:
    def stream() -> Iterator[bytes]:
        yield raw_header(b"././@PaxHeader", b"x", 1 << 30)
        yield from zeros_forever()      # lazily: never held whole by anyone

    with fake(guest_socket, stream()) as g, Channel.connect(g, 10) as ch:
        with pytest.raises(Refused, match="header record of 1073741824 bytes"):
            receive(ch, "/x", str(area / "dest"))
        assert len(ch.buf) <= (1 << 18) + p.HEADER.size + p.MAX_PAYLOAD
    untouched(area)


@pytest.mark.parametrize("typ", [b"L", b"K", b"x"])
def test_long_name_records_are_bounded(guest_socket: Path, area: Path, typ: bytes) -> None:
    big = (1 << 16) + 1
    archive = raw_header(b"././@LongLink", typ, big) + b"a" * big
    with pytest.raises(Refused, match=f"record of {big} bytes"):
        copy(guest_socket, [archive], "/x", area / "dest")
    untouched(area)


def test_an_endless_file_is_bounded_by_max_bytes(guest_socket: Path, area: Path) -> None:
    def stream() -> Iterator[bytes]:
        yield raw_header(b"big", b"0", 8 << 30)
        yield from zeros_forever()

    with pytest.raises(Refused, match="more than 4194304 bytes"):
        copy(guest_socket, stream(), "/big", area / "dest", limits=Limits(max_bytes=4 << 20))
    untouched(area)


def test_endless_frames_of_other_sessions_are_bounded(guest_socket: Path, area: Path) -> None:
    def stream() -> Iterator[Item]:
        while True:
            yield p.Frame(p.DATA, 999, bytes(p.MAX_PAYLOAD), p.STDOUT)

    with pytest.raises(Refused, match="more than"):
        copy(guest_socket, stream(), "/x", area / "dest", limits=Limits(max_bytes=4 << 20))
    untouched(area)


def test_entries_are_counted(guest_socket: Path, area: Path) -> None:
    archive = tar_of(("dir", "x/", ""), *[("file", f"x/{i}", b"") for i in range(20)])
    with pytest.raises(Refused, match="more than 10 entries"):
        copy(guest_socket, [archive], "/x", area / "dest", limits=Limits(max_entries=10))
    untouched(area)


@pytest.mark.parametrize("how", ["mid-archive", "mid-frame", "before-exit"])
def test_a_stalled_guest_is_an_error_not_a_hang(guest_socket: Path, area: Path,
                                                how: str) -> None:
    archive = tar_of(("dir", "x/", ""), ("file", "x/f", b"f" * 5000))
    parts: list[Item] = {
        "mid-archive": [archive[:1536], Stall()],
        "mid-frame": [Raw(p.Frame(p.DATA, 1, archive, p.STDOUT).encode()[:700]), Stall()],
        "before-exit": [archive, Stall()],
    }[how]
    with pytest.raises(AgentError, match="nothing came for 0s"):
        copy(guest_socket, parts, "/x", area / "dest", idle=0.3)
    untouched(area)


def test_a_guest_error_mid_copy_leaves_nothing(guest_socket: Path, area: Path) -> None:
    archive = tar_of(("dir", "x/", ""), ("file", "x/f", b"f" * 5000))
    err = p.Frame(p.ERROR, 1, p.u32(1) + b"x/g: read: Input/output error")
    with pytest.raises(IgniteError, match="Input/output error"):
        copy(guest_socket, [archive[:-1024], err], "/x", area / "dest")
    untouched(area)


# --- the channel itself ------------------------------------------------------------------
def test_a_handshake_flooded_with_junk_ends_at_its_deadline(guest_socket: Path) -> None:
    def junk(_nonce: bytes) -> Iterator[Item]:
        while True:
            yield Raw(b"\x05junk" * 10_000)

    with FakeGuest(guest_socket, lambda *_: (), junk) as g, \
            pytest.raises(AgentError, match="did not answer within 1s"):
        Channel.connect(g, 1.0)


def test_junk_before_the_pong_is_not_kept(guest_socket: Path) -> None:
    import tracemalloc

    def junk_then_pong(nonce: bytes) -> Iterator[Item]:
        for _ in range(1024):               # 64 MiB the host must read and drop
            yield Raw(b"\x02" * (1 << 16))
        yield p.Frame(p.READY, 0, b"version=1\n")
        yield p.Frame(p.PONG, 0, nonce)

    tracemalloc.start()
    try:
        with FakeGuest(guest_socket, lambda *_: (), junk_then_pong) as g, \
                Channel.connect(g, 600) as ch:
            assert ch.info == {"version": "1"}
            assert g.sent > 64 << 20
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes held while 64 MiB of junk came"


def test_a_silent_handshake_ends_at_its_deadline(guest_socket: Path) -> None:
    with FakeGuest(guest_socket, lambda *_: (), lambda _n: [Stall()]) as g, \
            pytest.raises(AgentError, match="did not answer"):
        Channel.connect(g, 0.5)


def test_a_guest_that_pongs_but_reads_no_more_did_not_answer() -> None:
    """A PONG with no READY makes the host send padding before its HELLO; a
    guest that then reads nothing more holds that send until the deadline:
    the error is the handshake's, that it did not answer."""
    import socket
    import threading

    host, guest = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    host.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)   # (the padding cannot fit)
    done = threading.Event()

    def pong_then_stall() -> None:
        buf = b""
        while (at := buf.find(bytes([p.PING, 0, 0, 0]))) < 0 or len(buf) < at + 28:
            buf += guest.recv(1 << 16)
        guest.sendall(p.Frame(p.PONG, 0, buf[at + 12:at + 28]).encode())
        done.wait()

    t = threading.Thread(target=pong_then_stall, daemon=True)
    t.start()
    ch = Channel(host, os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    try:
        with pytest.raises(AgentError, match="did not answer within 1s"):
            ch._handshake(time.monotonic() + 1.0, "the VM", 1.0)
    finally:
        done.set()
        t.join()
        ch.close()
        guest.close()


def test_exec_may_be_silent_but_a_partial_frame_may_not(guest_socket: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"

    def silent_then_output() -> Iterator[Item]:
        yield Raw(b"")
        time.sleep(1.0)     # the command says nothing for longer than frame_timeout
        yield p.Frame(p.DATA, 1, b"late\n", p.STDOUT)
        yield p.Frame(p.EXIT, 1, p.u32(3))

    with fake(guest_socket, exec_answer=silent_then_output()) as g, Channel.connect(g, 10) as ch, \
            out.open("wb") as f:
        status = session.run_exec(ch, session.ExecRequest(["sleep"]), None, f.fileno(),
                                  f.fileno(), frame_timeout=0.2)
    assert (status, out.read_bytes()) == (3, b"late\n")

    half = Raw(p.Frame(p.DATA, 1, b"x" * 100, p.STDOUT).encode()[:50])
    with fake(guest_socket, exec_answer=[half, Stall()]) as g, Channel.connect(g, 10) as ch, \
            out.open("wb") as f, pytest.raises(AgentError, match="in the middle of a frame"):
        session.run_exec(ch, session.ExecRequest(["x"]), None, f.fileno(), f.fileno(),
                         frame_timeout=0.2)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


CHILD = """
import sys, time
from pathlib import Path
from ignitevm.agent.client import _take_channel
folder = Path(sys.argv[1])
class Ports:
    def sockets(self):
        return sorted(folder.glob("agent-*.sock"))
    def grow(self):
        (folder / "agent-2.sock").touch()     # chardev-add done, device_add not yet
        print("half-added", flush=True)
        time.sleep(3600)
_take_channel(Ports(), time.monotonic() + 3600, "the VM")
"""


def test_a_channel_half_added_by_a_killed_client_is_repaired(tmp_path: Path) -> None:
    """kill -9 of a client between QMP's chardev-add and device_add: the next
    client has the half-made channel undone instead of being handed it."""
    import fcntl
    import signal
    import subprocess
    import sys

    from ignitevm.agent.client import GROW_MARK, _take_channel
    from tests.conftest import REPO

    (tmp_path / "agent-1.sock").touch()
    busy = os.open(tmp_path / "agent-1.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(busy, fcntl.LOCK_EX)        # channel 1 is in use: clients must grow
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)],
                             stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert child.stdout is not None
    assert child.stdout.readline() == b"half-added\n"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (tmp_path / GROW_MARK).exists()

    repaired: list[Path] = []

    class Ports:
        def sockets(self) -> list[Path]:
            return sorted(tmp_path.glob("agent-*.sock"))

        def grow(self) -> Path:
            path = tmp_path / f"agent-{len(self.sockets()) + 1}.sock"
            path.touch()
            return path

        def repair(self, path: Path) -> None:
            repaired.append(path)
            path.unlink()

    fd, path = _take_channel(Ports(), time.monotonic() + 30, "the VM")
    os.close(fd)
    os.close(busy)
    assert repaired == [tmp_path / "agent-2.sock"]
    assert path == tmp_path / "agent-2.sock"        # added anew, after the repair
    assert not (tmp_path / GROW_MARK).exists()


def test_cp_in_follows_only_the_top_path(guest_socket: Path, tmp_path: Path) -> None:
    from ignitevm.operations.guest import send

    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "sub" / "f").write_text("f")
    (real / "inside").symlink_to("sub/f")
    (real / "outside").symlink_to("/etc/passwd")
    (tmp_path / "top").symlink_to(real)
    with fake(guest_socket) as g, Channel.connect(g, 10) as ch:
        send(ch, tmp_path / "top", "/srv", "top")
        archive = bytes(g.received[1])
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        kinds = {m.name: (m.type, m.linkname) for m in tar.getmembers()}
    assert kinds["top"][0] == tarfile.DIRTYPE            # the named path: followed
    assert kinds["top/inside"] == (tarfile.SYMTYPE, "sub/f")
    assert kinds["top/outside"] == (tarfile.SYMTYPE, "/etc/passwd")   # not read in
    assert kinds["top/sub/f"][0] == tarfile.REGTYPE


def test_cp_in_to_a_guest_that_stops_reading_is_an_error(guest_socket: Path,
                                                          tmp_path: Path) -> None:
    from ignitevm.operations.guest import send

    big = tmp_path / "big"
    big.write_bytes(bytes(2 << 20))

    def on_session(typ: int, sid: int, payload: bytes) -> Iterable[Item]:
        return [Stall()]

    with FakeGuest(guest_socket, on_session, windows=False) as g, \
            Channel.connect(g, 10) as ch, pytest.raises(AgentError, match="nothing came"):
        send(ch, big, "/srv", "big", idle=0.3)


@pytest.mark.parametrize("records", [
    b"x", b"5 a=b", b"99 path=x\n", b"11 path=x\n" + b"junk", b"0 path=x\n", b"4 =\n\n",
    b"3 p\n",
])
def test_malformed_pax_records_are_refused(guest_socket: Path, area: Path,
                                           records: bytes) -> None:
    archive = raw_header(b"././@PaxHeader", b"x", len(records)) \
        + records + bytes(-len(records) % 512) + tar_of(("file", "f", b"f"))
    with pytest.raises(Refused, match="pax"):
        copy(guest_socket, [archive], "/f", area / "dest")
    untouched(area)


def test_pax_long_names_and_implicit_folders_are_accepted(guest_socket: Path,
                                                          area: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("top/" + "p" * 150 + "/" + "q" * 150)
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    (area / "dest" / "top").mkdir()
    copy(guest_socket, [buf.getvalue()], "/top", area / "dest")
    assert (area / "dest" / "top" / ("p" * 150) / ("q" * 150)).read_bytes() == b"hello"


def test_a_source_ending_in_dotdot_cannot_aim_above_dest(guest_socket: Path,
                                                         area: Path) -> None:
    from ignitevm.errors import InvalidInput

    archive = tar_of(("dir", "x/", ""), ("file", "x/evil", b"x"))
    with pytest.raises(InvalidInput, match=r"ends in '\.\.'"):
        copy(guest_socket, [archive], "/srv/..", area / "dest")
    untouched(area)


def test_absurd_times_are_clamped(guest_socket: Path, area: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.size, info.mtime = 1, 10**30
        tar.addfile(info, io.BytesIO(b"x"))
    copy(guest_socket, [buf.getvalue()], "/f", area / "dest")
    assert (area / "dest" / "f").stat().st_mtime == (1 << 33) - 1


@pytest.mark.parametrize("record", [b"linkpath=a\0b", b"path=x/a\0b"])
def test_nul_bytes_in_pax_names_are_refused(guest_socket: Path, area: Path,
                                            record: bytes) -> None:
    body = b" " + record + b"\n"
    n = len(body) + 2
    data = str(n).encode() + body
    assert len(data) == n
    archive = raw_header(b"././@PaxHeader", b"x", n) + data + bytes(-n % 512) \
        + raw_header(b"x/l", b"2", 0) + bytes(1024)
    with pytest.raises(Refused):
        copy(guest_socket, [archive], "/x", area / "dest")
    untouched(area)


def test_mutated_archives_are_refused_cleanly(tmp_path: Path) -> None:
    """Random damage to an honest archive: each is accepted or refused with a
    user-facing error, never a traceback, and nothing lands outside."""
    import random

    from ignitevm.agent.untar import TarStream, Unpacker

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, data in [("dir", "x/", ""), ("file", "x/" + "a" * 120, b"a" * 700),
                                 ("symlink", "x/l", "a" * 120), ("dir", "x/d/", ""),
                                 ("hardlink", "x/d/h", "x/" + "a" * 120)]:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))  # type: ignore[arg-type]
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                         "hardlink": tarfile.LNKTYPE}[kind]
            info.linkname = str(data)
            tar.addfile(info)
    honest = buf.getvalue()
    rng = random.Random(12)
    outside = tmp_path / "outside"
    outside.mkdir()
    for i in range(400):
        data = bytearray(honest)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            data[at:at + 1] = bytes([rng.choice([0, 0x2f, 0x2e, 0x80, 0xff, rng.randrange(256)])])
        root = tmp_path / f"r{i}"
        root.mkdir()
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            stream = TarStream(io.BytesIO(bytes(data)).read, Limits())
            unpacker = Unpacker(fd, 1)
            try:
                while (entry := stream.next()) is not None:
                    unpacker.add(entry, stream)
                unpacker.finish()
            except IgniteError:
                pass
            finally:
                unpacker.close()
        finally:
            os.close(fd)
    assert list(outside.iterdir()) == []
    assert sorted(q.name for q in tmp_path.iterdir() if not q.name.startswith("r")) == [
        "outside"]
