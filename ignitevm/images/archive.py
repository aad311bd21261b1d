"""Open an image source on local disk and describe it without unpacking it.

Four kinds of source are recognised by their content, not their name:

- ``docker-archive``: a tarball from ``docker save`` (it holds ``manifest.json``);
- ``oci-archive``: a tarball of an OCI image layout (``oci-layout`` + ``index.json``);
- ``oci-layout``: the same layout as a directory;
- ``rootfs-tar``: any other tarball (plain, gzip, bzip2, xz or zstd), taken as
  one layer holding the whole root file system.

Blobs inside a tarball are read in place, as windows on the outer file: nothing
is extracted to disk. Layer blobs are only opened when :mod:`layers` applies them.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import platform
import posixpath
import re
import tarfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ignitevm.errors import InvalidInput
from ignitevm.log import log

Opener = Callable[[], AbstractContextManager[BinaryIO]]

REF_ANNOTATION = "org.opencontainers.image.ref.name"
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
CONFIG_TYPES = {
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
}
LAYER_TYPES = {
    f"application/vnd.oci.image.layer.{kind}v1.tar{suffix}"
    for kind in ("", "nondistributable.")
    for suffix in ("", "+gzip", "+zstd")
} | {
    f"application/vnd.docker.image.rootfs.{t}.tar{z}"
    for t in ("diff", "foreign.diff")
    for z in ("", ".gzip")
}
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# Names found at the top of image archives; any other name means a plain rootfs tarball.
_ARCHIVE_NAME = re.compile(
    r"|manifest\.json|repositories|index\.json|oci-layout|(blobs|ingest)(/.*)?"
    r"|[0-9a-f]{64}(\.json|\.tar|/.*)?"
)
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_MAX_JSON = 64 << 20
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


@dataclass(frozen=True)
class Layer:
    digest: str  # "sha256:<hex>" of the blob as stored (for a rootfs tar: of the file)
    size: int
    open: Opener = field(repr=False, compare=False)  # yields the (maybe compressed) blob


@dataclass(frozen=True)
class ImageSource:
    kind: str  # "docker-archive" | "oci-archive" | "oci-layout" | "rootfs-tar"
    ref: str | None  # name embedded in the source, if any
    digest: str  # "sha256:<config digest>" (rootfs tar: sha256 of the file)
    config: dict[str, Any]  # the image config's "config" object; {} for a rootfs tar
    layers: list[Layer]
    size: int  # total of the layer sizes
    path: Path | None = None  # where the source was opened from, for messages


def compression(head: bytes) -> str | None:
    """Name the compression of a stream from its first bytes; None if uncompressed."""
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


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
        yield _oci(_DirStore(path), "oci-layout", path, ref)
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
        yield _docker(store, path, ref)
    elif kind == "oci-archive":
        yield _oci(store, kind, path, ref)
    else:
        yield _rootfs(path)


# --- tar helpers (shared with layers.py) ---------------------------------------------------------


def next_member(
    tf: tarfile.TarFile, label: str, *, lenient_end: bool = False
) -> tarfile.TarInfo | None:
    """Read the header after the current member: None at the end-of-archive marker.

    Unlike :meth:`tarfile.TarFile.next`, a truncated or damaged header is an
    error here, not a silent end of the archive. With ``lenient_end``, data
    that stops cleanly between two members without the end marker is accepted
    (some tools omit it; layer digests and compressed trailers catch real cuts).
    """
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


def _norm(name: str) -> str:
    name = posixpath.normpath(name.lstrip("/"))
    return "" if name == "." else name


class _Store:
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


class _TarIndex(_Store):
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
                name = _norm(posixpath.join(posixpath.dirname(name), info.linkname))
            elif info.islnk():
                name = _norm(info.linkname)
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
        with ExitStack() as stack:
            try:
                if self.compressed:
                    f: Any = stack.enter_context(tarfile.open(self.path, "r:*")).fileobj
                else:
                    f = stack.enter_context(open(self.path, "rb", buffering=0))
                f.seek(info.offset_data)
            except (OSError, EOFError, tarfile.TarError) as exc:
                raise InvalidInput(f"cannot read {label}: {exc}") from None
            yield io.BufferedReader(_Window(f, info.size, label), 1 << 20)


class _DirStore(_Store):
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


def _scan(path: Path, *, compressed: bool) -> tuple[str, _TarIndex]:
    """List the members of the tarball at ``path`` far enough to tell its kind."""
    members: dict[str, tarfile.TarInfo] = {}
    complete = True
    with ExitStack() as stack:
        try:
            tf = stack.enter_context(
                tarfile.open(path, "r:*", encoding="utf-8", errors="surrogateescape")
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
                name = _norm(info.name)
                if not _ARCHIVE_NAME.fullmatch(name):
                    complete = False
                    break
                members[name] = info
                info = next_member(tf, str(path))
        except (OSError, EOFError, tarfile.TarError) as exc:
            raise InvalidInput(f"{path} is corrupt or truncated: {exc}") from None
    index = _TarIndex(path, members, compressed)
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


def _json(store: _Store, name: str, what: str, digest: str | None = None) -> Any:
    data = store.read(name)
    if digest is not None and hashlib.sha256(data).hexdigest() != digest.split(":", 1)[1]:
        raise InvalidInput(f"{store.path}: {what} {name} does not match its digest {digest}")
    try:
        return json.loads(data)
    except ValueError:
        raise InvalidInput(f"{store.path}: {what} {name} is not valid JSON") from None


def _blob(store: _Store, desc: Any, what: str) -> tuple[str, str, int]:
    """Check an OCI descriptor; return (digest, blob path, size)."""
    if not isinstance(desc, dict):
        raise InvalidInput(f"{store.path}: the {what} descriptor is malformed")
    digest = desc.get("digest")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidInput(f"{store.path}: unsupported {what} digest {digest!r} (sha256 only)")
    name = "blobs/sha256/" + digest[7:]
    size = store.size(name)
    if desc.get("size", size) != size:
        raise InvalidInput(
            f"{store.path}: {what} {digest} has {size} bytes, its descriptor says {desc['size']}",
            hint="the source is truncated or corrupt; export it again",
        )
    return digest, name, size


def _platform(desc: dict[str, Any]) -> str | None:
    p = desc.get("platform")
    if not isinstance(p, dict):
        return None
    return f"{p.get('os')}/{p.get('architecture')}" + (f"/{p['variant']}" if "variant" in p else "")


def _choose(store: _Store, descs: Any, ref: str | None) -> dict[str, Any]:
    """Pick one descriptor from an index: by ref name, then by platform."""
    if not isinstance(descs, list) or not descs:
        raise InvalidInput(f"{store.path}: the image index lists no manifests")
    descs = [d for d in descs if isinstance(d, dict)]
    if ref is not None:
        names = [(d.get("annotations") or {}).get(REF_ANNOTATION) for d in descs]
        descs = [d for d, n in zip(descs, names, strict=True) if n and _ref_matches(ref, n)]
        if not descs:
            have = ", ".join(sorted(n for n in names if n)) or "none"
            raise InvalidInput(f"{store.path} holds no image named {ref} (it has: {have})")
    wanted = f"linux/{_ARCH}"
    platforms = [_platform(d) for d in descs]
    if len(descs) == 1 and platforms[0] is None:
        return descs[0]
    for d, p in zip(descs, platforms, strict=True):
        if p is not None and (p == wanted or p.startswith(wanted + "/")):
            return d
    if any(platforms):
        have = ", ".join(sorted({p for p in platforms if p}))
        raise InvalidInput(f"{store.path} has no {wanted} image (it has: {have})")
    names = [(d.get("annotations") or {}).get(REF_ANNOTATION) or d.get("digest") for d in descs]
    raise InvalidInput(
        f"{store.path} holds {len(descs)} images ({', '.join(map(str, names))})",
        hint="name the one to use",
    )


def _ref_matches(wanted: str, name: str) -> bool:
    return wanted == name or wanted.rsplit(":", 1)[-1] == name or name.endswith("/" + wanted)


def _oci(store: _Store, kind: str, path: Path, ref: str | None) -> ImageSource:
    index = _json(store, "index.json", "index")
    if not isinstance(index, dict):
        raise InvalidInput(f"{path}: index.json is not an image index")
    desc = _choose(store, index.get("manifests"), ref)
    annotations = desc.get("annotations") or {}
    name = annotations.get(REF_ANNOTATION) or annotations.get("io.containerd.image.name")
    for _ in range(4):
        media = desc.get("mediaType")
        digest, blob, _size = _blob(store, desc, "manifest")
        if media in INDEX_TYPES:
            nested = _json(store, blob, "index", digest)
            desc = _choose(
                store, nested.get("manifests") if isinstance(nested, dict) else None, None
            )
        elif media in MANIFEST_TYPES:
            manifest = _json(store, blob, "manifest", digest)
            break
        else:
            raise InvalidInput(f"{path}: {digest} has unsupported media type {media!r}")
    else:
        raise InvalidInput(f"{path}: image indexes are nested too deeply")
    if not isinstance(manifest, dict):
        raise InvalidInput(f"{path}: manifest {digest} is not an object")
    cdesc = manifest.get("config")
    cmedia = cdesc.get("mediaType") if isinstance(cdesc, dict) else None
    if cmedia not in CONFIG_TYPES:
        raise InvalidInput(
            f"{path}: manifest {digest} is not a container image (config type {cmedia!r})"
        )
    config_digest, config_blob, _ = _blob(store, cdesc, "config")
    config = _json(store, config_blob, "config", config_digest)
    layers = []
    for ldesc in manifest.get("layers") or []:
        media = ldesc.get("mediaType") if isinstance(ldesc, dict) else None
        if media not in LAYER_TYPES:
            raise InvalidInput(f"{path}: layer has unsupported media type {media!r}")
        ldigest, lblob, lsize = _blob(store, ldesc, "layer")
        layers.append(Layer(ldigest, lsize, store.opener(lblob)))
    return _image(
        kind, name if isinstance(name, str) else None, config_digest, config, layers, path
    )


def _image(
    kind: str, ref: str | None, digest: str, config: Any, layers: list[Layer], path: Path
) -> ImageSource:
    if not isinstance(config, dict):
        raise InvalidInput(f"{path}: the image config is not an object")
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise InvalidInput(f'{path}: the image config\'s "config" is not an object')
    total = sum(layer.size for layer in layers)
    return ImageSource(kind, ref, digest, inner, layers, total, path)


def _docker(store: _TarIndex, path: Path, ref: str | None) -> ImageSource:
    entries = _json(store, "manifest.json", "manifest")
    if (
        not isinstance(entries, list)
        or not entries
        or not all(isinstance(e, dict) for e in entries)
    ):
        raise InvalidInput(f"{path}: manifest.json lists no images")
    if ref is not None:
        entries = [e for e in entries if any(_ref_matches(ref, t) for t in e.get("RepoTags") or [])]
        if not entries:
            raise InvalidInput(f"{path} holds no image named {ref}")
    elif len(entries) > 1:
        log.debug("%s holds %d images; using the first one", path, len(entries))
    entry = entries[0]
    tags = entry.get("RepoTags") or []
    config_name = _norm(str(entry.get("Config", "")))
    data = store.read(config_name)
    config_digest = "sha256:" + hashlib.sha256(data).hexdigest()
    named = re.search(r"([0-9a-f]{64})(\.json)?$", config_name)
    if named and named.group(1) != config_digest[7:]:
        raise InvalidInput(f"{path}: config {config_name} does not match its digest")
    try:
        config = json.loads(data)
    except ValueError:
        raise InvalidInput(f"{path}: config {config_name} is not valid JSON") from None
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") if isinstance(config, dict) else []
    layer_names = entry.get("Layers") or []
    layers = []
    for i, lname in enumerate(layer_names):
        name, info = store.resolve(_norm(str(lname)))
        opener = store.opener(name)
        layers.append(Layer(_docker_digest(name, i, diff_ids, opener), info.size, opener))
    return _image("docker-archive", tags[0] if tags else None, config_digest, config, layers, path)


def _docker_digest(name: str, i: int, diff_ids: Any, opener: Opener) -> str:
    """The sha256 of a docker-archive layer blob, computed only when no name gives it."""
    named = re.fullmatch(r"blobs/sha256/([0-9a-f]{64})", name)
    if named:
        return "sha256:" + named.group(1)
    with opener() as f:
        head = f.read(8)
        if (
            isinstance(diff_ids, list)
            and len(diff_ids) > i
            and isinstance(diff_ids[i], str)
            and _DIGEST.fullmatch(diff_ids[i])
            and compression(head) is None
        ):
            return diff_ids[i]  # an uncompressed layer's blob digest is its diff id
        h = hashlib.sha256(head)
        while chunk := f.read(1 << 20):
            h.update(chunk)
        return "sha256:" + h.hexdigest()


def _rootfs(path: Path) -> ImageSource:
    try:
        with open(path, "rb") as f:
            digest = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    layer = Layer(digest, size, _DirStore(path.parent).opener(path.name))
    return ImageSource("rootfs-tar", None, digest, {}, [layer], size, path)
