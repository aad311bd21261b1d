"""Import, build and remove images.

An image is an ext4 file built from the OCI layers (``mkfs.ext4 -d``, no
mount) plus the image config; both are shared read-only by every VM.
Importing content that is already here (same identity: the digest of the
image's manifest, see :mod:`ignitevm.images.identity`) costs a lookup; each
layer is checked against its digest and the config's diff_id as it is unpacked.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.api import refs
from ignitevm.api.defaults import now
from ignitevm.api.types import Image, ImageSpec, ObjectMeta, Size
from ignitevm.errors import Conflict, InvalidInput
from ignitevm.log import log
from ignitevm.operations.context import Context
from ignitevm.util.ids import new_uid

if TYPE_CHECKING:
    from ignitevm.images.source import ImageSource

IMAGE_FILE = "image.ext4"
CONFIG_FILE = "config.json"


def image_file(ctx: Context, image: Image) -> Path:
    return ctx.store.dir(image) / IMAGE_FILE


def image_config(ctx: Context, image: Image) -> dict[str, object]:
    try:
        data = json.loads((ctx.store.dir(image) / CONFIG_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def import_image(ctx: Context, source: str, name: str | None = None,
                 progress: bool = False) -> Image:
    """Import a docker-archive, oci-archive, OCI layout folder or plain rootfs tar."""
    from ignitevm.images.archive import open_source

    path = Path(source)
    if not path.exists():
        raise InvalidInput(
            f"unknown image {source!r}: not an imported image, nor a file or folder",
            hint="list images with 'ignite image ls', or import an archive: "
            "ignite image import ./app.tar",
        )
    with open_source(path) as src:
        ref = refs.normalize(name or src.ref or _name_from_path(path))
        # A second import of the same content waits for the first, then reuses it.
        with ctx.store.key_lock(f"image:{src.identity}"):
            return _import(ctx, src, ref, progress)


def _import(ctx: Context, src: ImageSource, ref: str, progress: bool) -> Image:
    existing = ctx.store.find(Image, ref)
    if existing is not None:
        if existing.status.oci_source.id == src.identity:
            log.info("Image %r is already imported (ID %r)", ref, existing.metadata.uid)
            return existing
        raise Conflict(
            f"image {ref!r} already exists with other content",
            hint=f"remove it first (ignite image rm {ref}) or import under another "
            "name with --name",
        )
    image = Image(metadata=ObjectMeta(name=ref, uid=new_uid(), created=now()),
                  spec=ImageSpec(oci=ref))
    image.status.oci_source.id = src.identity
    twin = next((i for i in ctx.store.list(Image)
                 if i.status.oci_source.id == src.identity), None)
    with ctx.store.creating(image) as stage:
        if twin is not None:
            # Same content under another name: share the file, build nothing.
            with ctx.store.using(twin):
                os.link(image_file(ctx, twin), stage / IMAGE_FILE)
                shutil.copyfile(ctx.store.dir(twin) / CONFIG_FILE, stage / CONFIG_FILE)
            size = (stage / IMAGE_FILE).stat().st_size
        else:
            size = _build(src, stage, progress)
        image.status.oci_source.size = Size(size)
    log.info("Imported OCI image %r (%s) to base image with UID %r", ref, src.identity,
             image.metadata.uid)
    return image


def _build(src: ImageSource, stage: Path, show_progress: bool) -> int:
    from ignitevm.images.layers import apply_layers
    from ignitevm.images.rootfs import build_ext4, prepare_tree
    from ignitevm.util.progress import progress

    tree = stage / "rootfs"
    tree.mkdir()
    with progress("Unpacking layers", src.size, enabled=show_progress) as callback:
        apply_layers(src, tree, progress=callback)
    prepare_tree(tree)
    size = build_ext4(tree, stage / IMAGE_FILE)
    shutil.rmtree(tree)
    (stage / CONFIG_FILE).write_text(json.dumps(src.config or {}, indent=2))
    return size


def _name_from_path(path: Path) -> str:
    stem = path.name
    for ext in (".tar.gz", ".tgz", ".tar", ".oci"):
        stem = stem.removesuffix(ext)
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem.lower()).strip("-._")
    return stem or "image"


def ensure_image(ctx: Context, ref: str) -> Image:
    """An image by name, ID prefix, or a local archive path to import."""
    found = ctx.store.find(Image, ref)
    if found is not None:
        return found
    if Path(ref).exists() and ("/" in ref or ref.endswith((".tar", ".tgz", ".gz"))):
        return import_image(ctx, ref)
    try:
        normalized = refs.normalize(ref)
    except InvalidInput:
        normalized = ref
    found = ctx.store.find(Image, normalized)
    if found is not None:
        return found
    return ctx.store.resolve(Image, ref)
