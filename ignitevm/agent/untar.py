"""Unpacking a guest's tar stream on the host (``ignite cp VM:path HOST``).

The guest is root in its VM and can replace the agent, so nothing in the
stream is trusted. Only regular files, folders, symbolic links whose target
stays inside the copied tree, and hard links to files copied before them are
accepted; everything is created by and for the caller (no chown, no
setuid/setgid/sticky bits, the caller's umask applied), beneath a folder fd
and never through a link. Header records (pax, GNU long names) are at most
``Limits.max_header`` bytes and are refused before they are read; the
number of entries is bounded too (the stream's bytes are bounded by the
reader, which also counts what is not tar). Anything else is refused with
:class:`Refused`; the caller unpacks into a fresh folder and removes it then.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ignitevm.errors import IgniteError
from ignitevm.util import beneath
from ignitevm.util.fs import write_all

BLOCK = 512
CHUNK = 1 << 18
MAX_MTIME = (1 << 33) - 1   # (year 2242: in nanoseconds still an int64)
MAX_HOPS = 40   # symbolic links followed while checking where one leads (as the kernel)


@dataclass(frozen=True)
class Limits:
    """What a guest may send for one copy (``ignite cp`` flags; docs/cli.md)."""

    max_bytes: int = 16 << 30
    max_entries: int = 1_000_000
    max_header: int = 64 << 10


class Refused(IgniteError):
    """The guest sent something the host does not accept."""


@dataclass
class Entry:
    parts: tuple[str, ...]
    kind: str               # file, dir, symlink, hardlink
    mode: int
    mtime: int
    size: int
    link: str = ""
    name: str = ""          # as the archive wrote it, for messages


_KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink",
          b"5": "dir"}
_OTHER = {b"3": "a character device", b"4": "a block device", b"6": "a FIFO",
          b"S": "a sparse file", b"V": "a volume label", b"M": "a multi-volume part"}


def split_name(name: str) -> tuple[str, ...]:
    """An archive name as plain components; absolute names and ``..`` refused."""
    if name.startswith("/"):
        raise Refused(f"{name!r} is an absolute path")
    if "\0" in name:
        raise Refused(f"{name!r} holds a NUL byte")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise Refused(f"{name!r} leads out of the copy (..)")
    return parts


def _num(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:
        if field[0] != 0x80:
            raise Refused(f"a negative or oversized {what} in a tar header")
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise Refused(f"a tar header with a bad {what} {text[:20]!r}") from None


def _checksum_ok(block: bytes) -> bool:
    stored = _num(block[148:156], "checksum")
    blank = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(blank)
    signed = sum(b - 256 if b > 127 else b for b in blank)
    return stored in (unsigned, signed)


def _pax(data: bytes) -> dict[str, bytes]:
    """Records ``<len> <key>=<value>\\n``."""
    out: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos, pos + 24)
        try:
            length = int(data[pos:sp]) if sp > pos else 0
        except ValueError:
            length = 0
        end = pos + length
        if sp <= pos or length <= sp + 1 - pos or end > len(data) \
                or data[end - 1:end] != b"\n":
            raise Refused("a malformed pax header")
        key, eq, value = data[sp + 1:end - 1].partition(b"=")
        if not eq:
            raise Refused("a malformed pax record")
        out[key.decode(errors="replace")] = value
        pos = end
    return out


class TarStream:
    """Entries of a tar stream read through ``read(n)`` (which may return less)."""

    def __init__(self, read: Callable[[int], bytes], limits: Limits):
        self._read, self.limits = read, limits
        self.entries = 0
        self.ended = False
        self._left = 0          # bytes of the current entry's data (and padding) unread

    def _exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            got = self._read(min(n - len(out), CHUNK))
            if not got:
                raise Refused("the archive ends in the middle of an entry")
            out += got
        return bytes(out)

    def _skip(self, n: int) -> None:
        while n > 0:
            n -= len(self._exact(min(n, CHUNK)))

    def next(self) -> Entry | None:
        self._skip(self._left)
        self._left = 0
        long_name = long_link = None
        pax: dict[str, bytes] = {}
        while True:
            block = self._exact(BLOCK)
            if block == bytes(BLOCK):
                self.ended = True
                return None
            self.entries += 1
            if self.entries > self.limits.max_entries:
                raise Refused(f"more than {self.limits.max_entries} entries")
            if not _checksum_ok(block):
                raise Refused("a tar header with a bad checksum")
            typ = block[156:157]
            size = _num(block[124:136], "size")
            if typ in (b"L", b"K", b"x", b"g"):
                if size > self.limits.max_header:
                    raise Refused(f"a tar header record of {size} bytes (at most "
                                  f"{self.limits.max_header} are accepted)")
                data = self._exact(size)
                self._skip(-size % BLOCK)
                if typ == b"L":
                    long_name = data.split(b"\0", 1)[0]
                elif typ == b"K":
                    long_link = data.split(b"\0", 1)[0]
                elif typ == b"x":
                    pax = _pax(data)
                continue
            kind = _KINDS.get(typ)
            if kind is None:
                what = _OTHER.get(typ, f"an entry of type {typ!r}")
                raise Refused(f"{what}: only files, folders and symbolic links are copied")
            raw = long_name or pax.get("path")
            if raw is None:
                raw = block[:100].split(b"\0", 1)[0]
                if block[257:265] == b"ustar\x0000" and block[345]:
                    raw = block[345:500].split(b"\0", 1)[0] + b"/" + raw
            link = long_link or pax.get("linkpath") or block[157:257].split(b"\0", 1)[0]
            if "size" in pax:
                size = _pax_int(pax["size"])
            mtime = _pax_int(pax["mtime"].split(b".")[0]) if "mtime" in pax \
                else _num(block[136:148], "mtime")
            name = os.fsdecode(raw)
            if kind != "file" and size:
                raise Refused(f"{name!r}: a {kind} entry with {size} bytes of data")
            self._left = size + (-size % BLOCK)
            mtime = min(mtime, MAX_MTIME)
            return Entry(split_name(name), kind, _num(block[100:108], "mode"), mtime, size,
                         os.fsdecode(link), name)

    def data(self, entry: Entry) -> Iterator[bytes]:
        """The content of the file ``entry`` (the last one :meth:`next` gave)."""
        left = entry.size
        while left:
            chunk = self._exact(min(left, CHUNK))
            left -= len(chunk)
            self._left -= len(chunk)
            yield chunk


def _pax_int(value: bytes) -> int:
    try:
        n = int(value.decode())
    except ValueError:
        raise Refused(f"a pax number {value[:20]!r}") from None
    if n < 0:
        raise Refused("a negative number in a pax header")
    return n


@dataclass
class Unpacker:
    """Entries written beneath ``root_fd``. With ``floor`` 1 every entry is
    under one top name (the copied item); with 0 the root is the copied folder."""

    root_fd: int
    floor: int
    umask: int = 0o022
    top: str | None = None
    root_mode: int | None = None
    dirs: dict[tuple[str, ...], tuple[int, int]] = field(default_factory=dict)
    files: set[tuple[str, ...]] = field(default_factory=set)
    links: dict[tuple[str, ...], str] = field(default_factory=dict)
    _cached: tuple[tuple[str, ...], int] | None = None

    def _perm(self, mode: int) -> int:
        return mode & 0o777 & ~self.umask

    def _parent(self, parts: tuple[str, ...]) -> int:
        if self._cached is not None and self._cached[0] == parts:
            return self._cached[1]
        fd = beneath.open_dir(self.root_fd, parts, create=0o700)
        self.close()
        self._cached = (parts, fd)
        return fd

    def close(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def add(self, e: Entry, stream: TarStream) -> None:
        if self.floor:
            if not e.parts:
                raise Refused(f"{e.name!r} names the folder above the copied item")
            if self.top is None:
                self.top = e.parts[0]
            elif e.parts[0] != self.top:
                raise Refused(f"{e.name!r} is outside the copied item {self.top!r}")
        elif not e.parts:
            if e.kind != "dir":
                raise Refused(f"{e.name!r}: a folder's contents were asked for")
            self.root_mode = e.mode
            return
        try:
            self._write(e, stream, self._parent(e.parts[:-1]), e.parts[-1])
        except FileExistsError:
            raise Refused(f"{e.name!r} appears twice in the archive") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):   # a link or a file on the way
                raise Refused(f"{e.name!r} goes through a symbolic link or a file") from None
            raise

    def _write(self, e: Entry, stream: TarStream, dfd: int, name: str) -> None:
        if e.kind == "dir":
            st = beneath.lstat_at(dfd, name)
            if st is None:
                os.mkdir(name, 0o700, dir_fd=dfd)
            elif not stat.S_ISDIR(st.st_mode):
                raise FileExistsError
            self.dirs[e.parts] = (e.mode, e.mtime)
        elif e.kind == "file":
            fd = beneath.create_file(dfd, name)
            try:
                for chunk in stream.data(e):
                    write_all(fd, chunk)
                os.fchmod(fd, self._perm(e.mode))
                os.utime(fd, ns=(e.mtime * 10**9, e.mtime * 10**9))
            finally:
                os.close(fd)
            self.files.add(e.parts)
        elif e.kind == "symlink":
            if len(e.parts) - 1 < self.floor:
                raise Refused(f"{e.name!r} is a symbolic link (to {e.link!r}), not a file or "
                              "folder", hint="copy what it points to instead")
            if not e.link or e.link.startswith("/") or "\0" in e.link:
                raise Refused(f"{e.name!r} is a symbolic link to {e.link!r}, outside the copy")
            os.symlink(e.link, name, dir_fd=dfd)
            self.links[e.parts] = e.link
        else:
            target = split_name(e.link)
            if target not in self.files:
                raise Refused(f"{e.name!r} is a hard link to {e.link!r}, which is not a file "
                              "copied before it")
            with beneath.opened_dir(self.root_fd, target[:-1]) as sfd:
                os.link(target[-1], name, src_dir_fd=sfd, dst_dir_fd=dfd,
                        follow_symlinks=False)
            self.files.add(e.parts)

    def finish(self) -> None:
        """Check where every symbolic link leads, then give folders their modes."""
        self.close()
        for parts, target in self.links.items():
            self._resolve(list(parts[:-1]), target, [0], parts)
        for parts in sorted(self.dirs, key=len, reverse=True):
            mode, mtime = self.dirs[parts]
            with beneath.opened_dir(self.root_fd, parts) as fd:
                os.fchmod(fd, self._perm(mode))
                os.utime(fd, ns=(mtime * 10**9, mtime * 10**9))

    def _resolve(self, where: list[str], target: str, hops: list[int],
                 link: tuple[str, ...]) -> list[str]:
        """Walk ``target`` from ``where`` as the kernel would, within the tree."""
        for comp in target.split("/"):
            if comp in ("", "."):
                continue
            if comp == "..":
                if len(where) <= self.floor:
                    raise Refused(f"{'/'.join(link)!r} is a symbolic link that leads out of "
                                  f"the copy ({target!r})")
                where.pop()
                continue
            where.append(comp)
            inner = self.links.get(tuple(where))
            if inner is not None:
                hops[0] += 1
                if hops[0] > MAX_HOPS:   # a loop: it leads nowhere, so not out either
                    return where
                where.pop()
                where = self._resolve(where, inner, hops, link)
        return where
