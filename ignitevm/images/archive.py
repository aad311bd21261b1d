"""Open an image source on local disk and describe it without unpacking it.

Four kinds of source are recognised by their content, not their name:

- ``docker-archive``: a tarball from ``docker save`` (it holds ``manifest.json``);
- ``oci-archive``: a tarball of an OCI image layout (``oci-layout`` + ``index.json``);
- ``oci-layout``: the same layout as a directory;
- ``rootfs-tar``: any other tarball (plain, gzip, bzip2, xz or zstd), taken as
  one layer holding the whole root file system.

Blobs inside a tarball are read in place, as windows on the outer file
(:mod:`blobs`): nothing is extracted to disk. :mod:`oci` and :mod:`docker`
read the two image formats; layer blobs are only opened when :mod:`layers`
applies them.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ignitevm.errors import InvalidInput
from ignitevm.images.blobs import (
    BoundedTarInfo,
    DirStore,
    TarIndex,
    compression,
    next_member,
    norm,
)
from ignitevm.images.docker import open_docker
from ignitevm.images.oci import open_oci
from ignitevm.images.source import ImageSource, Layer, Opener

__all__ = ["ImageSource", "Layer", "Opener", "compression", "next_member", "open_source"]

# Names found at the top of image archives; any other name means a plain rootfs tarball.
_ARCHIVE_NAME = re.compile(
    r"|manifest\.json|repositories|index\.json|oci-layout|(blobs|ingest)(/.*)?"
    r"|[0-9a-f]{64}(\.json|\.tar|/.*)?"
)


@contextmanager
def open_source(path: Path, *, ref: str | None = None) -> Iterator[ImageSource]:
    """Describe the image at ``path``; ``ref`` picks one image when a source holds several."""
    path = Path(path)
    if path.is_dir():
        if not (path / "oci-layout").is_file() or not (path / "index.json").is_file():
            raise InvalidInput(
                f"{path} is a directory but not an OCI image layout (no oci-layout or index.json)",
                hint="give an OCI layout directory, a docker-archive or oci-archive tarball,"
                " or a rootfs tarball",
            )
        yield open_oci(DirStore(path), "oci-layout", path, ref)
        return
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise InvalidInput(f"cannot read image source {path}: {exc.strerror}") from None
    if compression(head) == "zstd":
        yield _rootfs(path)
        return
    kind, store = _scan(path, compressed=compression(head) is not None)
    if kind == "docker-archive":
        yield open_docker(store, path, ref)
    elif kind == "oci-archive":
        yield open_oci(store, kind, path, ref)
    else:
        yield _rootfs(path)


def _scan(path: Path, *, compressed: bool) -> tuple[str, TarIndex]:
    """List the members of the tarball at ``path`` far enough to tell its kind."""
    members: dict[str, tarfile.TarInfo] = {}
    complete = True
    with ExitStack() as stack:
        try:
            tf = stack.enter_context(
                tarfile.open(path, "r:*", encoding="utf-8", errors="surrogateescape",
                             tarinfo=BoundedTarInfo)
            )
        except (tarfile.TarError, OSError, EOFError):
            raise InvalidInput(
                f"{path} is neither a tar archive nor an OCI layout directory",
                hint="give a docker-archive (docker save), an oci-archive, an OCI layout"
                " directory or a rootfs tarball",
            ) from None
        try:
            info = tf.firstmember
            tf.firstmember = None
            while info is not None:
                name = norm(info.name)
                if not _ARCHIVE_NAME.fullmatch(name):
                    complete = False
                    break
                members[name] = info
                info = next_member(tf, str(path))
        except (OSError, EOFError, tarfile.TarError) as exc:
            raise InvalidInput(f"{path} is corrupt or truncated: {exc}") from None
    index = TarIndex(path, members, compressed)
    if not complete:
        return "rootfs-tar", index
    if "manifest.json" in members:
        return "docker-archive", index
    if "index.json" in members and "oci-layout" in members:
        return "oci-archive", index
    if any(members):
        raise InvalidInput(
            f"{path} looks like an image archive but has neither manifest.json nor index.json",
            hint="it may be truncated; export the image again",
        )
    raise InvalidInput(f"{path} is an empty tar archive")


def _rootfs(path: Path) -> ImageSource:
    try:
        with open(path, "rb") as f:
            digest = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    layer = Layer(digest, size, DirStore(path.parent).opener(path.name))
    return ImageSource("rootfs-tar", None, digest, {}, [layer], size, path)
