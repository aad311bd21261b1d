"""Reading the files of an image source in place: tar members and layout files.

An image's blobs live either in an outer tarball (read as windows on the file,
never extracted) or in an OCI layout directory. Both are a :class:`Store`.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import os
import posixpath
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ignitevm.api.refs import DIGEST
from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.images.source import Opener
from ignitevm.log import log

if TYPE_CHECKING:
    import tarfile

_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_MAX_JSON = 64 << 20


def compression(head: bytes) -> str | None:
    """Name the compression of a stream from its first bytes; None if uncompressed."""
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


MAX_HEADER = 1 << 20  # a pax or GNU long-name record: names, link targets, xattrs


_MAKING = threading.Lock()


def __getattr__(name: str) -> Any:
    """``BoundedTarInfo``, made on first use: tarfile (~3 ms with shutil) is not
    imported by what only downloads blobs into the content store."""
    if name != "BoundedTarInfo":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return bounded_tarinfo()


def bounded_tarinfo() -> type[tarfile.TarInfo]:
    """:class:`BoundedTarInfo` (made once, whichever thread asks first)."""
    made = globals().get("BoundedTarInfo")
    if made is not None:
        return made  # type: ignore[no-any-return]
    with _MAKING:
        made = globals().get("BoundedTarInfo")
        return made if made is not None else _make_bounded_tarinfo()  # type: ignore[no-any-return]


def _make_bounded_tarinfo() -> type[tarfile.TarInfo]:
    import tarfile

    header_types = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                    tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)

    class BoundedTarInfo(tarfile.TarInfo):
        """A tar header whose extended records are refused above :data:`MAX_HEADER`
        before they are read (tarfile reads each one whole into memory: a few KB of
        compressed layer could claim gigabytes)."""

        def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
            if self.type in header_types and self.size > MAX_HEADER:
                raise InvalidInput(
                    f"a tar header record of {self.size} bytes (more than {MAX_HEADER}) at "
                    f"byte {self.offset}",
                    hint="the archive is malformed or malicious; nothing was imported")
            return super()._proc_member(tarfile_)  # type: ignore[misc]

    BoundedTarInfo.__module__ = __name__
    globals()["BoundedTarInfo"] = BoundedTarInfo
    return BoundedTarInfo


def next_member(
    tf: tarfile.TarFile, label: str, *, lenient_end: bool = False
) -> tarfile.TarInfo | None:
    """Read the header after the current member: None at the end-of-archive marker.

    Unlike :meth:`tarfile.TarFile.next`, a truncated or damaged header is an
    error here, not a silent end of the archive. With ``lenient_end``, data
    that stops cleanly between two members without the end marker is accepted
    (some tools omit it; layer digests and compressed trailers catch real cuts).
    """
    import tarfile

    fileobj: Any = tf.fileobj
    offset: int = tf.offset  # type: ignore[attr-defined]
    if fileobj.tell() != offset:
        fileobj.seek(offset)
    try:
        return tf.tarinfo.fromtarfile(tf)
    except tarfile.EOFHeaderError:
        return None
    except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError) as exc:
        if lenient_end and isinstance(exc, tarfile.EmptyHeaderError):
            log.debug("%s has no end-of-archive marker", label)
            return None
        raise InvalidInput(
            f"{label} is truncated (it ends at byte {offset} in the middle of the archive)",
            hint="copy or download it again",
        ) from None
    except tarfile.HeaderError as exc:
        raise InvalidInput(f"{label} is corrupt at byte {offset}: {exc}") from None


def norm(name: str) -> str:
    """A member name made relative and normal ("" for the root)."""
    name = posixpath.normpath(name.lstrip("/"))
    return "" if name == "." else name


class _Window(io.RawIOBase):
    """Read ``size`` bytes of ``f`` from its current position; short data is an error."""

    def __init__(self, f: Any, size: int, label: str):
        self._f = f
        self._left = size
        self._label = label

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._left)
        if n == 0:
            return 0
        try:
            got = self._f.readinto(memoryview(b)[:n])
        except (OSError, EOFError) as exc:
            raise InvalidInput(f"cannot read {self._label}: {exc}") from None
        if not got:
            raise InvalidInput(f"{self._label} is truncated", hint="copy it again")
        self._left -= got
        return int(got)


class Store:
    """Where an image's files live: an outer tarball or a layout directory."""

    path: Path

    def size(self, name: str) -> int:
        raise NotImplementedError

    def opener(self, name: str) -> Opener:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        if self.size(name) > _MAX_JSON:
            raise InvalidInput(f"{self.path}: {name} is too large to be image metadata")
        with self.opener(name)() as f:
            return f.read()

    def json(self, name: str, what: str, digest: str | None = None) -> Any:
        """Parse the JSON file ``name``, checking it against ``digest`` if given."""
        data = self.read(name)
        if digest is not None and hashlib.sha256(data).hexdigest() != digest.split(":", 1)[1]:
            raise InvalidInput(f"{self.path}: {what} {name} does not match its digest {digest}")
        try:
            return json.loads(data)
        except ValueError:
            raise InvalidInput(f"{self.path}: {what} {name} is not valid JSON") from None


class TarIndex(Store):
    """Members of an outer tarball, read in place."""

    def __init__(self, path: Path, members: dict[str, tarfile.TarInfo], compressed: bool):
        self.path = path
        self.members = members
        self.compressed = compressed
        self.file_size = path.stat().st_size

    def resolve(self, name: str) -> tuple[str, tarfile.TarInfo]:
        for _ in range(16):
            info = self.members.get(name)
            if info is None:
                raise InvalidInput(f"{self.path} has no {name}", hint="the archive is incomplete")
            if info.issym():
                name = norm(posixpath.join(posixpath.dirname(name), info.linkname))
            elif info.islnk():
                name = norm(info.linkname)
            elif info.isreg():
                end = info.offset_data + info.size
                if not self.compressed and end > self.file_size:
                    raise InvalidInput(f"{self.path} is truncated ({name} is cut short)")
                return name, info
            else:
                raise InvalidInput(f"{self.path}: {name} is not a regular file")
        raise InvalidInput(f"{self.path}: {name} is a loop of links")

    def size(self, name: str) -> int:
        return self.resolve(name)[1].size

    def opener(self, name: str) -> Opener:
        info = self.resolve(name)[1]
        return functools.partial(self._open, info, f"{name} in {self.path}")

    @contextmanager
    def _open(self, info: tarfile.TarInfo, label: str) -> Iterator[BinaryIO]:
        import tarfile

        with ExitStack() as stack:
            try:
                if self.compressed:
                    f: Any = stack.enter_context(
                        tarfile.open(self.path, "r:*", tarinfo=bounded_tarinfo())
                    ).fileobj
                else:
                    f = stack.enter_context(open(self.path, "rb", buffering=0))
                f.seek(info.offset_data)
            except (OSError, EOFError, tarfile.TarError) as exc:
                raise InvalidInput(f"cannot read {label}: {exc}") from None
            yield io.BufferedReader(_Window(f, info.size, label), 1 << 20)


class DirStore(Store):
    """Files of an OCI layout directory (or the directory of a rootfs tarball)."""

    def __init__(self, root: Path):
        self.path = root

    def size(self, name: str) -> int:
        try:
            return (self.path / name).stat().st_size
        except FileNotFoundError:
            raise InvalidInput(
                f"{self.path} has no {name}", hint="the layout is incomplete"
            ) from None

    def opener(self, name: str) -> Opener:
        self.size(name)
        return functools.partial(self._open, self.path / name)

    @contextmanager
    def _open(self, file: Path) -> Iterator[BinaryIO]:
        with ExitStack() as stack:
            try:
                f = stack.enter_context(open(file, "rb", buffering=1 << 20))
            except OSError as exc:
                raise InvalidInput(f"cannot read {file}: {exc.strerror}") from None
            yield f


class ContentStore(DirStore):
    """The content-addressed blobs every image shares: ``<root>/blobs/sha256/<hex>``.

    A blob grows under ``ingest/<hex>`` (locked by its writer, so two pulls of
    one layer fetch it once and a cut download resumes where it stopped) and
    is renamed into place only once its size and sha256 match.
    """

    GC_LOCK = "gc.lock"

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Held (shared) by a pull from before its first blob until its image or
        kernel is stored: collecting unreferenced blobs (gc.py) waits for it."""
        from ignitevm.util.fs import flock

        self.path.mkdir(parents=True, exist_ok=True)
        with flock(self.path / self.GC_LOCK, shared=True):
            yield

    @staticmethod
    def blob_name(digest: str) -> str:
        if not DIGEST.fullmatch(digest):
            raise InvalidInput(f"unsupported digest {digest!r} (sha256 only)")
        return "blobs/sha256/" + digest[7:]

    def has(self, digest: str, size: int | None = None) -> bool:
        try:
            st = (self.path / self.blob_name(digest)).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    @contextmanager
    def ingest(self, digest: str, size: int) -> Iterator[Ingest | None]:
        """Yield None when the blob is already here; else an :class:`Ingest` to append to
        (from its ``offset``). It is checked and moved into place when the block ends."""
        from ignitevm.util.fs import flock

        name = self.blob_name(digest)
        if self.has(digest, size):
            yield None
            return
        work = self.path / "ingest"
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        work.mkdir(exist_ok=True)
        partial = work / digest[7:]
        lock = work / f"{digest[7:]}.lock"
        with flock(lock):
            if self.has(digest, size):  # another pull finished it meanwhile
                yield None
                return
            with Ingest(partial, digest, size) as ing:
                yield ing
                ing.commit(self.path / name)
            # Whoever still waits on this lock finds the blob in place once it has it.
            lock.unlink(missing_ok=True)


class Ingest:
    """A blob being written: hashed as it grows, checked against its digest and size."""

    def __init__(self, partial: Path, digest: str, size: int):
        self.partial = partial
        self.digest = digest
        self.size = size
        self.hash = hashlib.sha256()
        self._f: BinaryIO | None = None
        self.offset = 0

    def __enter__(self) -> Ingest:
        try:
            self._f = open(self.partial, "ab+", buffering=0)  # closed in __exit__
            self._f.seek(0)
            for chunk in iter(lambda: self._f.read(1 << 20), b""):  # type: ignore[union-attr]
                self.hash.update(chunk)
                self.offset += len(chunk)
        except OSError as exc:
            raise self._io_error(exc) from None
        if self.offset > self.size:
            self.reset()
        return self

    def _io_error(self, exc: OSError) -> IgniteError:
        return IgniteError(f"cannot write blob {self.digest} to {self.partial.parent}: "
                           f"{exc.strerror or exc}",
                           hint="free some space there; the next pull resumes the download"
                           if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else None)

    def __exit__(self, *exc: object) -> None:
        if self._f is not None:
            self._f.close()

    def reset(self) -> None:
        """Start again from byte 0."""
        assert self._f is not None
        self._f.truncate(0)
        self.hash = hashlib.sha256()
        self.offset = 0

    def write(self, data: bytes) -> None:
        assert self._f is not None
        if self.offset + len(data) > self.size:
            self.discard()
            raise InvalidInput(f"blob {self.digest} is longer than the {self.size} bytes its "
                               "descriptor says", hint="the registry or a proxy sent bad data")
        try:
            view = memoryview(data)
            while view:
                view = view[self._f.write(view) or 0:]
        except OSError as exc:
            raise self._io_error(exc) from None
        self.hash.update(data)
        self.offset += len(data)

    def discard(self) -> None:
        self.reset()
        self.partial.unlink(missing_ok=True)

    def check(self) -> None:
        """Raise (and drop what was written) unless the blob is complete and intact."""
        got = "sha256:" + self.hash.hexdigest()
        if self.offset != self.size:
            raise InvalidInput(f"blob {self.digest} is truncated ({self.offset} of {self.size}"
                               " bytes)", hint="pull again: the download resumes")
        if got != self.digest:
            self.discard()
            raise InvalidInput(
                f"blob {self.digest} does not match its digest (its content hashes to {got})",
                hint="the registry or a proxy sent corrupt data; nothing was kept")

    def commit(self, final: Path) -> None:
        self.check()
        assert self._f is not None
        try:
            self._f.flush()
            # (on disk before it has its name: after a power cut, a file renamed
            # unsynced can have its full size and none of its bytes, and has()
            # goes by the size)
            os.fdatasync(self._f.fileno())
            os.replace(self.partial, final)
        except OSError as exc:
            raise self._io_error(exc) from None
