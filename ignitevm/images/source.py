"""What an opened image source looks like: its layers, config and digest."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from ignitevm.errors import InvalidInput

Opener = Callable[[], AbstractContextManager[BinaryIO]]


class Layer(NamedTuple):
    digest: str  # "sha256:<hex>" of the blob as stored (for a rootfs tar: of the file)
    size: int
    open: Opener  # yields the (maybe compressed) blob


class ImageSource(NamedTuple):
    kind: str  # "docker-archive" | "oci-archive" | "oci-layout" | "rootfs-tar"
    ref: str | None  # name embedded in the source, if any
    digest: str  # "sha256:<config digest>" (rootfs tar: sha256 of the file)
    config: dict[str, Any]  # the image config's "config" object; {} for a rootfs tar
    layers: list[Layer]
    size: int  # total of the layer sizes
    path: Path | None = None  # where the source was opened from, for messages


def make_image(
    kind: str, ref: str | None, digest: str, config: Any, layers: list[Layer], path: Path
) -> ImageSource:
    """An :class:`ImageSource` from a parsed image config (the whole JSON document)."""
    if not isinstance(config, dict):
        raise InvalidInput(f"{path}: the image config is not an object")
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise InvalidInput(f'{path}: the image config\'s "config" is not an object')
    total = sum(layer.size for layer in layers)
    return ImageSource(kind, ref, digest, inner, layers, total, path)


def ref_matches(wanted: str, name: str) -> bool:
    """Whether the name ``wanted`` designates the image named ``name`` in a source."""
    return wanted == name or wanted.rsplit(":", 1)[-1] == name or name.endswith("/" + wanted)
