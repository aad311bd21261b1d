"""A pull into a file system that fills up (a real one: a small tmpfs as the
store's root), then the same pull once there is room again."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Ignite
from tests.helpers.registry import Registry

pytestmark = pytest.mark.registry


@pytest.fixture
def small_root(ig: Ignite, tmp_path: Path) -> Iterator[Ignite]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system for the store needs root")
    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k,mode=0700", "tmpfs", str(root)],
                   check=True)
    try:
        yield Ignite(root, env=ig.env)
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_a_full_file_system_mid_pull(small_root: Ignite, plain_registry: Registry) -> None:
    """No space left while a layer is written: one error line that says so and what
    to do, exit 1, no image, no blob under its final name that is not whole; with
    room again the same pull completes."""
    import hashlib

    ig = small_root
    ref = f"{plain_registry.host}/test/busybox:1"
    # (--unpack-limit: a limit set by the user is taken as given; by default it comes
    # from the free space, and the pull would be refused before anything is written)
    res = ig("image", "pull", "--unpack-limit", "1GB", ref, check=False)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "space" in res.stderr and "free some space" in res.stderr, res.stderr
    assert ig("image", "ls", "-q").stdout == ""
    blobs = ig.root / "content" / "blobs" / "sha256"
    for blob in (blobs.iterdir() if blobs.is_dir() else ()):
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name  # (whole or absent)
    subprocess.run(["mount", "-o", "remount,size=256m", str(ig.root)], check=True)
    ig("image", "pull", ref)
    assert ig("image", "ls", "-q").stdout.strip()
