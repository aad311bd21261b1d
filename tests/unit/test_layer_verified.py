"""A blob the content store checked as it came is not hashed again when it is
applied, but its tar is (one pass): a stored plain-tar layer damaged since
(same size, other bytes) is refused, not unpacked under the image's identity."""

from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from ignitevm.errors import InvalidInput
from ignitevm.images.layers import apply_layers
from ignitevm.images.source import ImageSource, Layer


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("etc/hello")
        data = b"hello\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _source(stored: bytes, digest: str) -> ImageSource:
    @contextlib.contextmanager
    def opener() -> Iterator[BinaryIO]:
        yield io.BytesIO(stored)

    layer = Layer(digest, len(stored), opener, diff_id=digest, verified=True)
    return ImageSource("registry", None, "sha256:" + "0" * 64, {}, [layer], len(stored))


def test_a_verified_plain_layer_applies(tmp_path: Path) -> None:
    tar = _tar()
    digest = "sha256:" + hashlib.sha256(tar).hexdigest()
    apply_layers(_source(tar, digest), tmp_path)
    assert (tmp_path / "etc" / "hello").read_bytes() == b"hello\n"


def test_a_stored_plain_layer_damaged_since_is_refused(tmp_path: Path) -> None:
    tar = _tar()
    digest = "sha256:" + hashlib.sha256(tar).hexdigest()
    damaged = bytes(len(tar))  # (a zeroed file reads as an empty tar)
    with pytest.raises(InvalidInput, match="does not match its digest"):
        apply_layers(_source(damaged, digest), tmp_path)
