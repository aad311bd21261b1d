"""Pulls from real docker-registry processes on loopback (no VM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ignitevm.api.types import Image
from ignitevm.operations.context import Context
from ignitevm.operations.images import PullOptions, image_config, pull_image
from tests.helpers.registry import Registry

pytestmark = pytest.mark.registry
QUIET = PullOptions(show="quiet")


def test_pull_plain(plain_registry: Registry, tmp_path: Path) -> None:
    ctx = Context(tmp_path / "root")
    image = pull_image(ctx, f"{plain_registry.host}/test/busybox:1", QUIET)
    assert image.metadata.name == f"{plain_registry.host}/test/busybox:1"
    assert image.status.oci_source.id.startswith(f"oci://{plain_registry.host}/test/busybox@sha256:")
    assert image_config(ctx, image)["Cmd"] == ["/sbin/init"]
    again = pull_image(ctx, f"{plain_registry.host}/test/busybox:1", QUIET)
    assert again.metadata.uid == image.metadata.uid
    assert len(ctx.store.list(Image)) == 1
    assert not list((ctx.root / "content" / "ingest").glob("*[0-9a-f]"))
