"""A tag that moved replaces its image only if, once the new image is built,
no VM and no snapshot needs the old one: checked again under the image's
exclusive hold (a VM made over it during the build, which can take minutes,
would otherwise boot on the new image's file under its old overlay). Refused:
the new image goes and the old one stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from ignitevm.api.types import VM, Image, ObjectMeta, Snapshot
from ignitevm.errors import Conflict
from ignitevm.operations import images
from ignitevm.operations.context import Context


def _image(ctx: Context, uid: str) -> Image:
    img = Image(metadata=ObjectMeta(name="app:1", uid=uid, created="2000-01-01T00:00:00Z"))
    with ctx.store.creating(img, unique_name=False):
        pass
    return img


def _uids(ctx: Context) -> list[str]:
    return sorted(i.metadata.uid for i in ctx.store.list(Image))


def test_the_old_image_goes_when_nothing_needs_it(tmp_path: Path) -> None:
    ctx = Context(root=tmp_path)
    old, new = _image(ctx, "0000000000000001"), _image(ctx, "0000000000000002")
    images._swap(ctx, old, new)
    assert _uids(ctx) == [new.metadata.uid]


@pytest.mark.parametrize("user", ["vm", "snapshot"])
def test_a_user_that_came_during_the_build_keeps_the_old_image(tmp_path: Path,
                                                               user: str) -> None:
    ctx = Context(root=tmp_path)
    old, new = _image(ctx, "0000000000000001"), _image(ctx, "0000000000000002")
    meta = ObjectMeta(name="u", uid="00000000000000aa", created="2000-01-01T00:00:00Z")
    obj: VM | Snapshot
    if user == "vm":
        obj = VM(metadata=meta)
        obj.spec.image.oci = "app:1"
    else:
        obj = Snapshot(metadata=meta)
        obj.spec.vm_spec.image.oci = "app:1"
    with ctx.store.creating(obj):
        pass
    with pytest.raises(Conflict, match="now names other content"):
        images._swap(ctx, old, new)
    assert _uids(ctx) == [old.metadata.uid]
