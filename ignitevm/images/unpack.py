"""Write a layer's tar entries into a directory, with OCI layer semantics and safely.

Whiteouts and opaque directories delete what lower layers left, a later entry
replaces an earlier one of another type; owners, modes, times, xattrs, hard
links and device nodes are kept (devices and xattrs the host refuses are
reported, not fatal).

Nothing is ever written through a symbolic link: each parent directory of an
entry is checked with lstat (and cached as a real directory for the rest of
the run), entries whose path is absolute or climbs out with ``..`` are
refused, and files are created with O_EXCL|O_NOFOLLOW.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable
from typing import Any

from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.images.blobs import next_member
from ignitevm.log import log

CHUNK = 1 << 20
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


class Unpacker:
    """Writes tar entries under ``root`` with layer semantics; one instance per apply."""

    def __init__(self, root: str):
        self.root = root
        self.dirs: dict[str, str] = {"": root}  # relative path -> path, checked real directories
        self.chown = os.geteuid() == 0
        self.skipped: list[str] = []
        self.what = ""
        self.in_layer: set[str] = set()
        self.deferred: list[tuple[str, int, int]] = []

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
                fileobj=fileobj, mode="r", encoding="utf-8", errors="surrogateescape"
            )
        except tarfile.TarError as exc:
            raise InvalidInput(f"{what} is not a tar archive ({exc})") from None
        info = tf.firstmember
        tf.firstmember = None
        while info is not None:
            try:
                self.entry(tf, info, stream)
            except OSError as exc:
                raise IgniteError(f"cannot unpack {info.name!r} from {what}: {exc}") from exc
            info = next_member(tf, what, lenient_end=True)
        # Directory modes and times last: writing their children changed them.
        for path, mode, ns in reversed(self.deferred):
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    os.chmod(path, mode)
                    os.utime(path, ns=(ns, ns), follow_symlinks=False)

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

    def parent(self, rel: str, entry: str, *, create: bool = True) -> str | None:
        """Path of directory ``rel``, made of real directories only (created if missing)."""
        path = self.dirs.get(rel)
        if path is not None:
            return path
        up, _, base = rel.rpartition("/")
        updir = self.parent(up, entry, create=create)
        if updir is None:
            return None
        path = f"{updir}/{base}"
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(path, 0o755)
        else:
            if stat.S_ISLNK(mode):
                raise self.refuse(entry, f"would be written through the symbolic link {rel!r}")
            if not stat.S_ISDIR(mode):
                raise self.refuse(entry, f"needs {rel!r} to be a directory, and it is not")
        self.dirs[rel] = path
        return path

    def remove(self, path: str, rel: str) -> None:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISDIR(mode):
            shutil.rmtree(path)
            prefix = rel + "/"
            for key in [k for k in self.dirs if k == rel or k.startswith(prefix)]:
                del self.dirs[key]
        else:
            os.unlink(path)

    def whiteout(self, parent: str, base: str, entry: str) -> None:
        if base == ".wh..wh..opq":
            path = self.parent(parent, entry, create=False)
            if path is not None:
                self.clear(path, parent)
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
        path = self.parent(parent, entry, create=False)
        if path is not None:
            self.remove(f"{path}/{victim}", rel)

    def clear(self, path: str, rel: str) -> None:
        """Opaque directory: delete what lower layers left in it, keep this layer's entries."""
        with os.scandir(path) as it:
            children = list(it)
        for child in children:
            crel = f"{rel}/{child.name}" if rel else child.name
            if crel not in self.in_layer:
                self.remove(child.path, crel)
            elif child.is_dir(follow_symlinks=False):
                self.clear(child.path, crel)

    def entry(self, tf: tarfile.TarFile, info: tarfile.TarInfo, stream: Stream) -> None:
        name = self.clean(info.name, info.name)
        parent, _, base = name.rpartition("/")
        if base.startswith(".wh."):
            self.whiteout(parent, base, info.name)
            return
        if not name:
            if not info.isdir():
                raise self.refuse(info.name, "would replace the image root")
            self.owner(self.root, info)
            self.deferred.append((self.root, info.mode & 0o7777, _ns(info)))
            return
        pdir = self.parent(parent, info.name)
        path = f"{pdir}/{base}"
        self.mark(name)
        if info.isreg():
            self.file(tf, info, stream, path, name)
        elif info.isdir():
            self.directory(info, path, name)
        elif info.issym():
            self.create(path, name, lambda: os.symlink(info.linkname, path))
            self.owner(path, info)
            self.set_xattrs(path, info)
            os.utime(path, ns=(_ns(info), _ns(info)), follow_symlinks=False)
        elif info.islnk():
            self.hardlink(info, path, name)
        elif info.ischr() or info.isblk() or info.isfifo():
            self.node(info, path, name)
        else:
            log.debug("%s: skipping %r of tar type %r", self.what, info.name, info.type)

    def create(self, path: str, rel: str, make: Callable[[], object]) -> None:
        try:
            make()
        except FileExistsError:
            self.remove(path, rel)
            make()

    def owner(self, path: str, info: tarfile.TarInfo) -> None:
        if self.chown:
            os.chown(path, info.uid, info.gid, follow_symlinks=False)

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
        self, tf: tarfile.TarFile, info: tarfile.TarInfo, stream: Stream, path: str, rel: str
    ) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            self.remove(path, rel)
            fd = os.open(path, flags, 0o600)
        try:
            if info.sparse is not None:
                src: Any = tf.extractfile(info)
                read = src.read
            else:
                stream.seek(info.offset_data)
                read = stream.read
            left = info.size
            while left > 0:
                data = read(min(left, CHUNK))
                if not data:
                    raise InvalidInput(f"{self.what} is truncated (inside {info.name!r})")
                left -= len(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            if self.chown:
                os.fchown(fd, info.uid, info.gid)
            os.fchmod(fd, info.mode & 0o7777)
            self.set_xattrs(fd, info)
            os.utime(fd, ns=(_ns(info), _ns(info)))
        finally:
            os.close(fd)

    def directory(self, info: tarfile.TarInfo, path: str, rel: str) -> None:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                self.remove(path, rel)
                os.mkdir(path, 0o700)
        self.dirs[rel] = path
        self.owner(path, info)
        self.set_xattrs(path, info)
        self.deferred.append((path, info.mode & 0o7777, _ns(info)))

    def hardlink(self, info: tarfile.TarInfo, path: str, rel: str) -> None:
        target = self.clean(info.linkname, info.name)
        tparent, _, tbase = target.rpartition("/")
        tdir = self.parent(tparent, info.name, create=False)
        source = f"{tdir}/{tbase}"
        try:
            st = os.lstat(source) if tdir is not None and tbase else None
        except FileNotFoundError:
            st = None
        if st is None or stat.S_ISDIR(st.st_mode):
            raise self.refuse(info.name, f"is a hard link to {info.linkname!r}, not a file here")
        if source == path:
            return
        try:
            os.link(source, path, follow_symlinks=False)
        except FileExistsError:
            if os.path.samestat(os.lstat(path), st):
                return
            self.remove(path, rel)
            os.link(source, path, follow_symlinks=False)

    def node(self, info: tarfile.TarInfo, path: str, rel: str) -> None:
        kind = stat.S_IFIFO if info.isfifo() else stat.S_IFCHR if info.ischr() else stat.S_IFBLK
        dev = os.makedev(info.devmajor, info.devminor)
        try:
            self.create(path, rel, lambda: os.mknod(path, kind | 0o600, dev))
        except PermissionError as exc:
            self.skipped.append(f"device {info.name}: {exc.strerror}")
            return
        self.owner(path, info)
        os.chmod(path, info.mode & 0o7777)
        self.set_xattrs(path, info)
        os.utime(path, ns=(_ns(info), _ns(info)), follow_symlinks=False)
