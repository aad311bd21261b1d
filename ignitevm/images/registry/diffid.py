"""The diff_id of a layer (sha256 of its uncompressed tar), computed as its blob streams in.

gzip (several members allowed), zstd (several frames allowed) and plain
layers; the output is hashed in bounded pieces, so a decompression bomb costs
time, not memory, and with ``max_bytes`` it stops once the layer decompresses
to more (the time is bounded too).
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

from ignitevm.errors import InvalidInput
from ignitevm.images.blobs import compression

_PIECE = 256 << 10  # (decompressed output in pieces malloc recycles: larger ones are fresh
# memory, faulted in page by page, ~80k faults for ~200 MB)


class _Sink:
    def __init__(self, owner: DiffHasher):
        self._owner = owner

    def write(self, data: bytes) -> int:
        self._owner.update(data)
        return len(data)


class DiffHasher:
    def __init__(self, what: str, max_bytes: int | None = None):
        self.what = what
        self.max_bytes = max_bytes
        self.out = 0  # decompressed bytes so far
        self.hash = hashlib.sha256()
        self._kind: str | None = None
        self._started = False
        self._head = b""
        self._z: Any = None
        self._zstd: Any = None

    def reset(self) -> None:
        """Forget everything fed so far."""
        self.__init__(self.what, self.max_bytes)  # type: ignore[misc]

    def update(self, data: bytes) -> None:
        """Hash decompressed bytes, counting them against ``max_bytes``."""
        self.out += len(data)
        if self.max_bytes is not None and self.out > self.max_bytes:
            raise InvalidInput(
                f"{self.what} decompresses to more than the {self.max_bytes} bytes an image "
                "may unpack to here; nothing was kept",
                hint="the image may be hostile; if it is trusted, raise the limit with "
                     "--unpack-limit or the Configuration's spec.unpackLimit")
        self.hash.update(data)

    def feed(self, data: bytes) -> None:
        if not self._started:
            self._head += data
            if len(self._head) < 8 and data:
                return
            data, self._head = self._head, b""
            self._start(data[:8])
        if self._kind is None:
            self.update(data)
        elif self._kind == "gzip":
            self._gunzip(data)
        else:
            try:
                self._zstd.write(data)
            except InvalidInput:
                raise  # (past max_bytes)
            except Exception as exc:  # zstandard.ZstdError
                raise InvalidInput(f"{self.what} is not valid zstd data ({exc})") from None

    def _start(self, head: bytes) -> None:
        self._started = True
        self._kind = compression(head)
        if self._kind == "gzip":
            self._z = zlib.decompressobj(wbits=31)
        elif self._kind == "zstd":
            import zstandard

            self._zstd = zstandard.ZstdDecompressor().stream_writer(
                _Sink(self), write_return_read=True, closefd=False)
        elif self._kind is not None:
            raise InvalidInput(f"{self.what} is compressed with {self._kind}, which registry "
                               "layers may not use (gzip, zstd or none)")

    def _gunzip(self, data: bytes) -> None:
        try:
            while data:
                if self._z.eof:
                    self._z = zlib.decompressobj(wbits=31)
                out = self._z.decompress(data, _PIECE)
                self.update(out)
                data = self._z.unconsumed_tail or (self._z.unused_data if self._z.eof else b"")
        except zlib.error as exc:
            raise InvalidInput(f"{self.what} is not valid gzip data ({exc})") from None

    def digest(self) -> str:
        if not self._started:
            data, self._head = self._head, b""
            self._start(data[:8])
            self.feed(data)
        if self._kind == "gzip":
            self._gunzip(b"")
            if not self._z.eof:
                raise InvalidInput(f"{self.what} is truncated (its gzip data ends early)")
        elif self._kind == "zstd":
            try:
                self._zstd.flush()
            except Exception as exc:
                raise InvalidInput(f"{self.what} is not valid zstd data ({exc})") from None
        return "sha256:" + self.hash.hexdigest()
