"""Write a layer's tar entries into a directory, with OCI layer semantics and safely.

Whiteouts and opaque directories delete what lower layers left, a later entry
replaces an earlier one of another type; owners, modes, times, xattrs, hard
links and device nodes are kept (devices and xattrs the host refuses are
reported, not fatal).

Nothing is ever written through a symbolic link, nor anywhere but beneath
the root: entries whose path is absolute or climbs out with ``..`` are
refused, and every write goes through a directory fd from
:class:`~ignitevm.images.beneath.Tree` (reached component by component with
O_NOFOLLOW) plus one name: files are created with O_EXCL|O_NOFOLLOW, links,
nodes and directories with the ``*at`` calls, and owners, modes and times are
set on fds or with AT_SYMLINK_NOFOLLOW. Directory modes and times wait for the
end of the layer (writing children changes them); each directory is then
reached again the same way, and only if it is still the directory that was
made (same inode): one that a later entry replaced is left alone.

What a layer may make the host write is bounded by a
:class:`~ignitevm.images.limits.Budget` (entries counted here, decompressed
bytes by the stream's filler, a file's announced size checked before it is
read), and files are written sparse: runs of zeros in the data and the holes
of a tar sparse entry become holes on disk, not blocks.
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import tarfile
from collections.abc import Callable
from typing import Any

from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.images.beneath import CAP, Blocked, Tree, open_dir
from ignitevm.images.blobs import BoundedTarInfo, next_member
from ignitevm.images.limits import Budget
from ignitevm.log import log

CHUNK = 1 << 20
_ZEROS = bytes(CHUNK)
Fill = Callable[[int], bytes]


class Stream:
    """A forward-only file for tarfile over a fill function, with few copies."""

    def __init__(self, fill: Fill, initial: bytes = b""):
        self._fill = fill
        self._buf = initial
        self._off = 0
        self._pos = 0

    def tell(self) -> int:
        return self._pos

    @property
    def buffered(self) -> int:
        """Bytes read from the filler and not yet handed out."""
        return len(self._buf) - self._off

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        buf, off = self._buf, self._off
        end = off + n
        if end <= len(buf):
            self._off = end
            self._pos += n
            return buf[off:end]
        parts = [buf[off:]]
        need = end - len(buf)
        self._buf, self._off = b"", 0
        while need > 0:
            chunk = self._fill(max(need, CHUNK))
            if not chunk:
                break
            if len(chunk) > need:
                parts.append(chunk[:need])
                self._buf, self._off = chunk, need
                break
            parts.append(chunk)
            need -= len(chunk)
        data = b"".join(parts)
        self._pos += len(data)
        return data

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or pos < self._pos:
            raise io.UnsupportedOperation("layer streams only seek forward")
        while self._pos < pos and self.read(min(pos - self._pos, CHUNK)):
            pass
        return self._pos


def _xattrs(info: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    out = []
    for key, value in info.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            out.append((key[13:], value.encode("utf-8", "surrogateescape")))
    return out


def _ns(info: tarfile.TarInfo) -> int:
    return int(info.mtime * 1_000_000_000)


def _at(dir_fd: int, name: str) -> str:
    """A path for the calls with no ``dir_fd`` (xattrs): the held directory through procfs."""
    return f"/proc/self/fd/{dir_fd}/{name}"


class Unpacker:
    """Writes tar entries under ``root`` with layer semantics; one instance per apply."""

    def __init__(self, root: str, budget: Budget | None = None):
        self.tree = Tree(root)
        self.budget = budget
        self.chown = os.geteuid() == 0
        self.skipped: list[str] = []
        self.what = ""
        self.in_layer: set[str] = set()
        # Directories whose mode and times are set at the end of the layer:
        # (path, device, inode, mode, mtime in ns).
        self.deferred: list[tuple[str, int, int, int, int]] = []

    def __enter__(self) -> Unpacker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.tree.close()

    def report(self) -> None:
        if self.skipped:
            log.warning(
                "skipped %d item(s) the host would not create (%s%s)",
                len(self.skipped),
                "; ".join(self.skipped[:3]),
                "..." if len(self.skipped) > 3 else "",
            )

    def apply_tar(self, stream: Stream, what: str) -> None:
        self.what = what
        self.in_layer = set()
        self.deferred = []
        try:
            fileobj: Any = stream
            tf = tarfile.TarFile(
                fileobj=fileobj, mode="r", encoding="utf-8", errors="surrogateescape",
                tarinfo=BoundedTarInfo,
            )
        except tarfile.TarError as exc:
            raise InvalidInput(f"{what} is not a tar archive ({exc})") from None
        info = tf.firstmember
        tf.firstmember = None
        fds = self.tree.fds
        while info is not None:
            if len(fds) > CAP:
                self.tree.trim()
            try:
                self.entry(tf, info, stream)
            except OSError as exc:
                raise IgniteError(f"cannot unpack {info.name!r} from {what}: {exc}") from exc
            info = next_member(tf, what, lenient_end=True)
        try:
            self.finish_dirs()
        except OSError as exc:
            raise IgniteError(f"cannot unpack {what}: {exc}") from exc

    def finish_dirs(self) -> None:
        """Directory modes and times, last (writing their children changed them).

        Each directory is reached again beneath the root without following
        links, and only the very directory its entry made is changed: one that
        a later entry replaced (by a link, say) is skipped. The last entry for
        a path wins.
        """
        done: set[str] = set()
        for rel, dev, ino, mode, ns in reversed(self.deferred):
            if rel in done:
                continue
            done.add(rel)
            self.tree.trim()
            fd = self.tree.lookup(rel)
            if fd is None:
                continue
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (dev, ino):
                continue
            os.fchmod(fd, mode)
            os.utime(fd, ns=(ns, ns))

    def defer(self, rel: str, fd: int, info: tarfile.TarInfo) -> None:
        st = os.fstat(fd)
        self.deferred.append((rel, st.st_dev, st.st_ino, info.mode & 0o7777, _ns(info)))

    def refuse(self, entry: str, why: str) -> InvalidInput:
        return InvalidInput(
            f"{self.what}: entry {entry!r} {why}",
            hint="the image is malformed or malicious; nothing outside the unpack directory"
            " was touched",
        )

    def clean(self, name: str, entry: str) -> str:
        if name.startswith("/"):
            raise self.refuse(entry, f"has an absolute path ({name!r})")
        norm = posixpath.normpath(name)
        if norm == ".." or norm.startswith("../"):
            raise self.refuse(entry, "points outside the image root")
        return "" if norm == "." else norm

    def mark(self, rel: str) -> None:
        """Remember ``rel`` and its parents as part of the current layer."""
        while rel not in self.in_layer:
            self.in_layer.add(rel)
            rel = rel.rpartition("/")[0]

    def parent(self, rel: str, entry: str, *, create: bool = True) -> int | None:
        """The fd of directory ``rel``, made of real directories only (created if missing)."""
        fd = self.tree.fds.get(rel)  # the common case, without the calls below
        if fd is not None:
            return fd
        try:
            return self.tree.dir(rel, create=create)
        except Blocked as exc:
            if exc.link:
                why = f"would be written through the symbolic link {exc.rel!r}"
            else:
                why = f"needs {exc.rel!r} to be a directory, and it is not"
            raise self.refuse(entry, why) from None

    def whiteout(self, parent: str, base: str, entry: str) -> None:
        if base == ".wh..wh..opq":
            fd = self.parent(parent, entry, create=False)
            if fd is not None:
                self.clear(fd, parent)
            self.mark(parent)
            return
        if base.startswith(".wh..wh."):
            return  # other aufs bookkeeping
        victim = base[4:]
        if victim in ("", ".", ".."):
            raise self.refuse(entry, "is a whiteout of an invalid name")
        rel = f"{parent}/{victim}" if parent else victim
        if rel in self.in_layer:
            return  # the same layer recreated it
        fd = self.parent(parent, entry, create=False)
        if fd is not None:
            self.tree.remove(fd, victim, rel)

    def clear(self, fd: int, rel: str) -> None:
        """Opaque directory: delete what lower layers left in it, keep this layer's entries."""
        with os.scandir(fd) as it:
            children = [(child.name, child.is_dir(follow_symlinks=False)) for child in it]
        for name, is_dir in children:
            crel = f"{rel}/{name}" if rel else name
            if crel not in self.in_layer:
                self.tree.remove(fd, name, crel)
            elif is_dir:
                # Its own fd, closed after: a wide tree must not fill the fd cache.
                sub = open_dir(name, fd)
                if sub is not None:
                    try:
                        self.clear(sub, crel)
                    finally:
                        os.close(sub)

    def entry(self, tf: tarfile.TarFile, info: tarfile.TarInfo, stream: Stream) -> None:
        if self.budget is not None:
            self.budget.entry()
        name = self.clean(info.name, info.name)
        parent, _, base = name.rpartition("/")
        if base.startswith(".wh."):
            self.whiteout(parent, base, info.name)
            return
        if not name:
            if not info.isdir():
                raise self.refuse(info.name, "would replace the image root")
            if self.chown:
                os.fchown(self.tree.root_fd, info.uid, info.gid)
            self.defer("", self.tree.root_fd, info)
            return
        pfd = self.parent(parent, info.name)
        assert pfd is not None
        self.mark(name)
        if info.isreg():
            self.file(info, stream, pfd, base, name)
        elif info.isdir():
            self.directory(info, pfd, base, name)
        elif info.issym():
            self.create(pfd, base, name, lambda: os.symlink(info.linkname, base, dir_fd=pfd))
            self.metadata_at(pfd, base, info, chmod=False)
        elif info.islnk():
            self.hardlink(info, pfd, base, name)
        elif info.ischr() or info.isblk() or info.isfifo():
            self.node(info, pfd, base, name)
        else:
            log.debug("%s: skipping %r of tar type %r", self.what, info.name, info.type)

    def create(self, pfd: int, base: str, rel: str, make: Callable[[], object]) -> None:
        try:
            make()
        except FileExistsError:
            self.tree.remove(pfd, base, rel)
            make()

    def metadata_at(self, pfd: int, base: str, info: tarfile.TarInfo, *, chmod: bool) -> None:
        """Owner, mode, xattrs and times of a link or node, never following it."""
        if self.chown:
            os.chown(base, info.uid, info.gid, dir_fd=pfd, follow_symlinks=False)
        if chmod:
            os.chmod(base, info.mode & 0o7777, dir_fd=pfd, follow_symlinks=False)
        self.set_xattrs(_at(pfd, base), info)
        os.utime(base, ns=(_ns(info), _ns(info)), dir_fd=pfd, follow_symlinks=False)

    def set_xattrs(self, target: str | int, info: tarfile.TarInfo) -> None:
        if not info.pax_headers:
            return
        for key, value in _xattrs(info):
            try:
                if isinstance(target, int):
                    os.setxattr(target, key, value)
                else:
                    os.setxattr(target, key, value, follow_symlinks=False)
            except OSError as exc:
                log.debug("%s: cannot set xattr %s on %r: %s", self.what, key, info.name, exc)
                if not key.startswith("security."):
                    self.skipped.append(f"xattr {key} on {info.name}: {exc.strerror}")

    def file(
        self,
        info: tarfile.TarInfo,
        stream: Stream,
        pfd: int,
        base: str,
        rel: str,
    ) -> None:
        # (offset, length) of the data the tar holds; the rest of the file is a hole.
        regions = [(0, info.size)] if info.sparse is None else self.sparse_map(info)
        if self.budget is not None:
            # (what the stream already holds was counted when it was read)
            self.budget.ahead(max(0, sum(n for _, n in regions) - stream.buffered))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(base, flags, 0o600, dir_fd=pfd)
        except FileExistsError:
            self.tree.remove(pfd, base, rel)
            fd = os.open(base, flags, 0o600, dir_fd=pfd)
        try:
            stream.seek(info.offset_data)
            for offset, length in regions:
                self.copy(stream, fd, offset, length, info.name)
            os.ftruncate(fd, info.size)  # a hole at the end has no data to make it
            if self.chown:
                os.fchown(fd, info.uid, info.gid)
            os.fchmod(fd, info.mode & 0o7777)
            self.set_xattrs(fd, info)
            os.utime(fd, ns=(_ns(info), _ns(info)))
        finally:
            os.close(fd)

    def sparse_map(self, info: tarfile.TarInfo) -> list[tuple[int, int]]:
        """A tar sparse entry's data regions, checked: in order, inside the file."""
        regions: list[tuple[int, int]] = []
        end = 0
        for offset, length in info.sparse or []:
            if not length:
                continue  # (old GNU headers list unused slots as zero-length pieces)
            if offset < end or length < 0 or offset + length > info.size:
                raise self.refuse(info.name, "has a sparse map out of order or past its size")
            regions.append((offset, length))
            end = offset + length
        return regions

    def copy(self, stream: Stream, fd: int, offset: int, length: int, name: str) -> None:
        """``length`` bytes of ``stream`` to ``fd`` at ``offset``; chunks of zeros
        are skipped, left as holes."""
        pos = offset
        while length > 0:
            data = stream.read(min(length, CHUNK))
            if not data:
                raise InvalidInput(f"{self.what} is truncated (inside {name!r})")
            n = len(data)
            if not (data == _ZEROS if n == CHUNK else data.count(0) == n):
                view = memoryview(data)
                at = pos
                while view:
                    written = os.pwrite(fd, view, at)
                    view, at = view[written:], at + written
            pos += n
            length -= n

    def directory(self, info: tarfile.TarInfo, pfd: int, base: str, rel: str) -> None:
        try:
            fd = self.tree.make(rel)
        except Blocked:  # something else is there: replace it
            self.tree.remove(pfd, base, rel)
            fd = self.tree.make(rel)
        if self.chown:
            os.fchown(fd, info.uid, info.gid)
        self.set_xattrs(fd, info)
        self.defer(rel, fd, info)

    def link_source(self, info: tarfile.TarInfo) -> tuple[str, int, str, os.stat_result]:
        """(path, directory fd, name, stat) of a hard link's target, which must be here."""
        target = self.clean(info.linkname, info.name)
        tparent, _, tbase = target.rpartition("/")
        tfd = self.parent(tparent, info.name, create=False)
        try:
            st = os.stat(tbase, dir_fd=tfd, follow_symlinks=False) if tfd is not None else None
        except FileNotFoundError:
            st = None
        if tfd is None or st is None or not tbase or stat.S_ISDIR(st.st_mode):
            raise self.refuse(info.name, f"is a hard link to {info.linkname!r}, not a file here")
        return target, tfd, tbase, st

    def hardlink(self, info: tarfile.TarInfo, pfd: int, base: str, rel: str) -> None:
        target, tfd, tbase, st = self.link_source(info)
        if target == rel:
            return
        try:
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileExistsError:
            if os.path.samestat(os.stat(base, dir_fd=pfd, follow_symlinks=False), st):
                return
            self.tree.remove(pfd, base, rel)
            # The removal may have taken the target's directory (and its fd) with it.
            target, tfd, tbase, st = self.link_source(info)
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)

    def node(self, info: tarfile.TarInfo, pfd: int, base: str, rel: str) -> None:
        kind = stat.S_IFIFO if info.isfifo() else stat.S_IFCHR if info.ischr() else stat.S_IFBLK
        dev = os.makedev(info.devmajor, info.devminor)
        try:
            self.create(pfd, base, rel, lambda: os.mknod(base, kind | 0o600, dev, dir_fd=pfd))
        except PermissionError as exc:
            self.skipped.append(f"device {info.name}: {exc.strerror}")
            return
        self.metadata_at(pfd, base, info, chmod=True)
