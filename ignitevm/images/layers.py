"""Apply an image's layers, in order, into a directory.

Each layer blob is streamed once: its sha256 is computed on the way in and
checked against the digest the source names, it is decompressed by its magic
bytes (gzip, zstd, xz, bzip2 or none) and its tar entries are written by
:class:`~ignitevm.images.unpack.Unpacker`, with OCI layer semantics and
never through a symbolic link.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import lzma
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.images.blobs import compression
from ignitevm.images.limits import Budget, UnpackLimits
from ignitevm.images.source import ImageSource, Layer
from ignitevm.images.unpack import CHUNK, Fill, Stream, Unpacker
from ignitevm.log import step


def apply_layers(
    source: ImageSource, dest: Path, progress: Callable[[int], None] | None = None,
    limits: UnpackLimits | None = None,
) -> None:
    """Unpack ``source``'s layers into the existing directory ``dest``.

    ``progress`` is called with the number of blob bytes read since its last
    call (they add up to ``source.size``). ``limits`` bound what the image may
    make the host write (default: from the free space under ``dest``). On
    error ``dest`` is left half filled: the caller discards it.
    """
    root = os.path.realpath(dest)
    if not os.path.isdir(root):
        raise IgniteError(f"cannot unpack the image into {dest}: not a directory")
    label = str(source.path or source.ref or source.digest)
    budget = Budget(limits or UnpackLimits(), root, f"image {label}")
    with Unpacker(root, budget) as unpacker:
        for layer in source.layers:
            with step(f"applying layer {layer.digest} ({layer.size} bytes)"):
                _apply_layer(layer, unpacker, f"layer {layer.digest} of {label}", progress)
        unpacker.report()


def _apply_layer(
    layer: Layer, unpacker: Unpacker, what: str, progress: Callable[[int], None] | None
) -> None:
    with layer.open() as blob:
        raw = _Hashing(blob, progress, hashing=not layer.verified)
        head = raw.read(8)
        # The diff_id is the sha256 of the uncompressed tar: the blob's own for a
        # plain tar. A verified blob (the content store hashed it as it came) is
        # not hashed again, but its tar is: one pass that still catches a stored
        # file damaged since, whatever its compression.
        plain = compression(head) is None
        tar_hash = hashlib.sha256() if not plain or layer.verified else None
        with _decompress(head, raw, what) as (fill, initial):
            if tar_hash is not None:
                tar_hash.update(initial)
                fill = _hashed(fill, tar_hash)
            if unpacker.budget is not None:
                unpacker.budget.take(len(initial))
                fill = _counted(fill, unpacker.budget)
            if head:
                unpacker.apply_tar(Stream(fill, initial), what)
            while fill(CHUNK):  # the rest of the stream: padding, gzip trailers
                pass
        while raw.read(CHUNK):
            pass
    if not layer.verified:
        digest = "sha256:" + raw.hash.hexdigest()
    elif plain and tar_hash is not None:
        digest = "sha256:" + tar_hash.hexdigest()
    else:
        digest = layer.digest
    if digest != layer.digest:
        raise InvalidInput(
            f"{what} does not match its digest (its content hashes to {digest})",
            hint="the source is corrupt or was modified; fetch or export it again",
        )
    diff_id = digest if plain or tar_hash is None else "sha256:" + tar_hash.hexdigest()
    if layer.diff_id is not None and diff_id != layer.diff_id:
        raise InvalidInput(
            f"{what} is not the layer its image config names: its tar hashes to {diff_id},"
            f" the config's diff_id is {layer.diff_id}",
            hint="the source is corrupt or was assembled from parts of other images;"
            " fetch or export it again",
        )


def _hashed(fill: Fill, into: Any) -> Fill:
    """``fill``, hashing what it returns into ``into``."""

    def hashing_fill(n: int) -> bytes:
        data = fill(n)
        into.update(data)
        return data

    return hashing_fill


def _counted(fill: Fill, budget: Budget) -> Fill:
    """``fill``, counting what it returns against ``budget`` (the decompressed bytes)."""

    def counting_fill(n: int) -> bytes:
        data = fill(n)
        budget.take(len(data))
        return data

    return counting_fill


class _Hashing:
    """Read a blob, hashing it (unless it was checked as it was stored) and reporting
    progress."""

    def __init__(self, f: BinaryIO, progress: Callable[[int], None] | None,
                 hashing: bool = True):
        self._f = f
        self._progress = progress
        self._hashing = hashing
        self.hash = hashlib.sha256()

    def read(self, n: int) -> bytes:
        data = self._f.read(n)
        if data:
            if self._hashing:
                self.hash.update(data)
            if self._progress is not None:
                self._progress(len(data))
        return data


@contextmanager
def _decompress(head: bytes, raw: _Hashing, what: str) -> Iterator[tuple[Fill, bytes]]:
    """Yield (fill, initial): fill(n) returns up to n more bytes of tar data."""
    kind = compression(head)
    if kind is None:
        yield raw.read, head
        return
    if kind == "zstd":
        with _unzstd(head, raw, what) as fill:
            yield fill, b""
        return
    blob: Any = _Prefixed(head, raw)
    # These handle concatenated members or streams and check CRCs.
    opener: Any = {
        "gzip": functools.partial(gzip.GzipFile, fileobj=blob, mode="rb"),
        "xz": functools.partial(lzma.LZMAFile, blob),
        "bzip2": functools.partial(bz2.BZ2File, blob),
    }[kind]
    with opener() as f:

        def fill(n: int) -> bytes:
            try:
                return bytes(f.read(n))
            except EOFError:
                raise InvalidInput(f"{what} is truncated (its {kind} data ends early)") from None
            except (OSError, zlib.error, lzma.LZMAError) as exc:
                raise InvalidInput(f"{what} is not valid {kind} data ({exc})") from None

        yield fill, b""


class _Prefixed:
    """The blob again, with the bytes read to sniff its compression put back in front."""

    def __init__(self, head: bytes, raw: _Hashing):
        self._head = head
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = CHUNK  # nobody asks for "all"; a chunk is enough
        if self._head:
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._raw.read(n)


ZSTD_MAX_WINDOW = 1 << 27  # 128 MiB: what the zstd program allows without --memory
AHEAD = 4  # decompressed pieces (of CHUNK) a zstd layer is read ahead


@contextmanager
def _unzstd(head: bytes, raw: _Hashing, what: str) -> Iterator[Fill]:
    """Decompress with the zstandard library, streaming: each read returns at most what
    was asked (a bomb costs time, not memory; the unpack budget counts the output as
    for gzip), frames are decoded one after another, a frame asking for a window over
    :data:`ZSTD_MAX_WINDOW` is refused, and data that ends inside a frame (which the
    library's reader would take as a clean end) is said truncated. A thread decompresses
    up to :data:`AHEAD` pieces ahead (the library lets go of the GIL meanwhile), so the
    tar is applied while the next piece is decompressed, as the zstd program did in a
    process of its own."""
    import queue

    import zstandard

    frames = _ZstdFrames()

    class Source:  # (the blob, its sniffed head put back, seen by the frame walker)
        def __init__(self) -> None:
            self._blob = _Prefixed(head, raw)

        def read(self, n: int = -1) -> bytes:
            data = self._blob.read(n)
            frames.feed(data)
            return data

    dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
    reader = dctx.stream_reader(Source(), read_size=CHUNK, read_across_frames=True,
                                closefd=False)
    pieces: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=AHEAD)
    stop = threading.Event()

    def produce() -> None:
        item: bytes | BaseException
        while not stop.is_set():
            try:
                item = reader.read(CHUNK)
                if not item and not frames.complete():
                    raise InvalidInput(f"{what} is truncated (its zstd data ends early)")
            except zstandard.ZstdError as exc:
                item = InvalidInput(f"{what} is not valid zstd data ({exc})")
            except BaseException as exc:
                item = exc
            while not stop.is_set():
                try:
                    pieces.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not isinstance(item, bytes) or not item:
                return

    left = b""
    done = False

    def fill(n: int) -> bytes:
        nonlocal left, done
        if not left and not done:
            item = pieces.get()
            if isinstance(item, BaseException):
                done = True
                raise item
            done = not item
            left = item
        data, left = left[:n], left[n:]
        return data

    thread = threading.Thread(target=produce, name="unzstd", daemon=True)
    thread.start()
    try:
        yield fill
    finally:
        stop.set()
        while thread.is_alive():
            try:
                pieces.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()
        reader.close()


class _ZstdFrames:
    """Follows the frame and block headers of a zstd stream (RFC 8878) as it is read,
    to tell whether it ends between frames. Contents are skipped, not decoded."""

    _MAGIC = b"\x28\xb5\x2f\xfd"

    def __init__(self) -> None:
        self._state = "magic"
        self._want = 4  # header bytes the state needs
        self._buf = b""
        self._skip = 0  # content bytes to pass over before the next header
        self._checksum = False
        self._frames = 0
        self.lost = False  # not a zstd stream as far as it can tell (the library says why)

    def complete(self) -> bool:
        return self.lost or (self._frames > 0 and self._state == "magic" and not self._buf
                             and not self._skip)

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and not self.lost:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            step = min(self._want - len(self._buf), end - pos)
            self._buf += data[pos:pos + step]
            pos += step
            if len(self._buf) == self._want:
                header, self._buf = self._buf, b""
                self._header(header)

    def _header(self, h: bytes) -> None:
        state = self._state
        if state == "magic":
            self._frames += 1
            if h == self._MAGIC:
                self._next("descriptor", 1)
            elif h[0] & 0xF0 == 0x50 and h[1:] == b"\x2a\x4d\x18":  # a skippable frame
                self._next("skippable", 4)
            else:
                self.lost = True
        elif state == "descriptor":
            d = h[0]
            single = d >> 5 & 1
            self._checksum = bool(d >> 2 & 1)
            rest = (0 if single else 1) + (0, 1, 2, 4)[d & 3] + (single, 2, 4, 8)[d >> 6]
            if rest:
                self._next("header", rest)
            else:
                self._next("block", 3)
        elif state == "header":
            self._next("block", 3)
        elif state == "block":
            value = int.from_bytes(h, "little")
            kind = value >> 1 & 3
            if kind == 3:  # reserved
                self.lost = True
                return
            self._skip = 1 if kind == 1 else value >> 3  # (RLE: one byte repeated)
            if not value & 1:
                self._next("block", 3)
            elif self._checksum:
                self._next("checksum", 4)
            else:
                self._next("magic", 4)
        elif state == "checksum":
            self._next("magic", 4)
        elif state == "skippable":
            self._skip = int.from_bytes(h, "little")
            self._next("magic", 4)

    def _next(self, state: str, want: int) -> None:
        self._state, self._want = state, want
