"""What an opened image source looks like: its layers, config and digest."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from ignitevm.api.platform import config_platform
from ignitevm.api.refs import DIGEST
from ignitevm.errors import InvalidInput

Opener = Callable[[], AbstractContextManager[BinaryIO]]


class Layer(NamedTuple):
    digest: str  # "sha256:<hex>" of the blob as stored (for a rootfs tar: of the file)
    size: int
    open: Opener  # yields the (maybe compressed) blob
    diff_id: str | None = None  # sha256 of the uncompressed tar, from the image config
    # Its bytes were checked against ``digest`` as they were stored (the content store
    # commits a blob only then): applying it does not hash them a second time.
    verified: bool = False


class ImageSource(NamedTuple):
    kind: str  # "docker-archive" | "oci-archive" | "oci-layout" | "rootfs-tar" | "registry"
    # | "containerd"
    ref: str | None  # name embedded in the source, if any
    digest: str  # "sha256:<config digest>" (rootfs tar: sha256 of the file)
    config: dict[str, Any]  # the image config's "config" object; {} for a rootfs tar
    layers: list[Layer]
    size: int  # total of the layer sizes
    path: Path | None = None  # where the source was opened from, for messages
    manifest: str | None = None  # digest of its manifest (carried or canonical); see identity
    platform: str = ""  # "os/arch[/variant]" from its image config ("" when it names none)

    @property
    def identity(self) -> str:
        """What makes two sources the same image (:mod:`ignitevm.images.identity`)."""
        from ignitevm.images.identity import image_identity

        return image_identity(self.manifest, self.digest)


def make_image(
    kind: str,
    ref: str | None,
    digest: str,
    config: Any,
    layers: list[Layer],
    path: Path,
    manifest: str,
) -> ImageSource:
    """An :class:`ImageSource` from a parsed image config (the whole JSON document).

    Each layer gets its diff_id from the config's ``rootfs.diff_ids``, which
    must name one sha256 per layer.
    """
    if not isinstance(config, dict):
        raise InvalidInput(f"{path}: the image config is not an object")
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise InvalidInput(f'{path}: the image config\'s "config" is not an object')
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if (
        not isinstance(diff_ids, list)
        or len(diff_ids) != len(layers)
        or not all(isinstance(d, str) and DIGEST.fullmatch(d) for d in diff_ids)
    ):
        raise InvalidInput(
            f"{path}: the image config's rootfs.diff_ids do not list one sha256 digest for each"
            f" of its {len(layers)} layer(s)",
            hint="the image is malformed; export or build it again",
        )
    layers = [layer._replace(diff_id=d) for layer, d in zip(layers, diff_ids, strict=True)]
    total = sum(layer.size for layer in layers)
    return ImageSource(kind, ref, digest, inner, layers, total, path, manifest,
                       config_platform(config))


def ref_matches(wanted: str, name: str) -> bool:
    """Whether the name ``wanted`` designates the image named ``name`` in a source."""
    return wanted == name or wanted.rsplit(":", 1)[-1] == name or name.endswith("/" + wanted)
