"""A pull whose content another image already has shares that image's file; that
image removed meanwhile (`image rm`, `image prune -a`) is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from ignitevm.api.types import Image, ImageSpec, ObjectMeta
from ignitevm.errors import NotFound
from ignitevm.operations import images
from ignitevm.operations.context import Context


def test_twin_removed_meanwhile(tmp_path: Path) -> None:
    ctx = Context(root=tmp_path / "root")
    twin = Image(metadata=ObjectMeta(name="a:1", uid="0a"), spec=ImageSpec(oci="a:1"))
    with ctx.store.creating(twin) as stage:
        (stage / images.IMAGE_FILE).write_bytes(b"ext4")
        (stage / images.CONFIG_FILE).write_text("{}")
    ctx.store.delete(twin)                  # (as an `image prune -a` meanwhile)
    new = Image(metadata=ObjectMeta(name="b:1", uid="0b"), spec=ImageSpec(oci="b:1"))
    with pytest.raises(NotFound, match="was removed meanwhile"):
        images._store_pulled(ctx, new, True, [twin], None)
    assert ctx.store.list(Image) == [] and not list((ctx.root / "tmp").glob("0*"))
