"""`ignite image prune` and the collection of the shared content store, against images
and a kernel pulled from a real docker-registry on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, Ignite
from tests.helpers.registry import Registry

pytestmark = pytest.mark.registry


def _blobs(ig: Ignite) -> set[str]:
    folder = ig.root / "content" / "blobs" / "sha256"
    return {f"sha256:{n}" for n in os.listdir(folder)} if folder.is_dir() else set()


def _needs(ig: Ignite, kind: str, name: str) -> set[str]:
    """The blobs an image or kernel needs: its manifest, config and layers."""
    ident = json.loads(ig("inspect", kind, name).stdout)["status"]["ociSource"]["id"]
    digest = ident.rpartition("@")[2]
    blobs = ig.root / "content" / "blobs" / "sha256"
    doc = json.loads((blobs / digest[7:]).read_bytes())
    return {digest, doc["config"]["digest"], *(d["digest"] for d in doc["layers"])}


def test_prune(ig: Ignite, plain_registry: Registry) -> None:
    box, zstd = f"{plain_registry.host}/test/busybox:1", f"{plain_registry.host}/test/zstd:1"
    kernel = f"{plain_registry.host}/test/kernel:1"
    ig("image", "pull", box)
    ig("image", "pull", zstd)
    ig("kernel", "import", kernel)
    ig("create", box, "--name", "user", "--kernel-image", kernel, "--size", "64MB")
    box_blobs, zstd_blobs = _needs(ig, "image", box), _needs(ig, "image", zstd)
    kernel_blobs = _needs(ig, "kernel", kernel)
    assert box_blobs | zstd_blobs | kernel_blobs <= _blobs(ig)

    # Nothing unused: nothing goes (every image here has a name: none is dangling).
    out = ig("image", "prune", "-f").stdout
    assert out == "Total reclaimed space: 0B\n"
    # A removed image's blobs go, not those another image or the kernel needs.
    ig("image", "rm", zstd)
    gone = zstd_blobs - box_blobs - kernel_blobs
    assert gone
    out = ig("image", "prune", "-f").stdout
    assert out.startswith("Deleted Images:\n")
    assert {ln.split(": ", 1)[1] for ln in out.splitlines() if ln.startswith("deleted: ")} \
        == gone
    assert out.splitlines()[-1].startswith("Total reclaimed space: ")
    assert not gone & _blobs(ig) and box_blobs | kernel_blobs <= _blobs(ig)

    # -a: an image a VM uses stays; asked first, and "no" changes nothing.
    res = ig("image", "prune", "-a", input="n\n")
    assert "WARNING! This will remove all images without at least one VM" in res.stdout
    assert ig("image", "prune", "-a", "-f").stdout == "Total reclaimed space: 0B\n"
    assert ig("image", "ls", "-q").stdout.strip()
    ig("rm", "user")
    uid = ig("image", "ls", "-q").stdout.strip()
    res = ig("image", "prune", "--all", input="y\n")
    assert f"untagged: {box}\ndeleted: {uid}\n" in res.stdout
    assert not ig("image", "ls", "-q").stdout.strip()
    assert _blobs(ig) == kernel_blobs
    ig("kernel", "import", kernel)  # (still there: nothing to fetch)
    # The pulled image comes back in full.
    ig("image", "pull", box)
    assert box_blobs <= _blobs(ig)


def test_partial_downloads_go_unless_being_written(ig: Ignite) -> None:
    from ignitevm.util.fs import flock

    ingest = ig.root / "content" / "ingest"
    ingest.mkdir(parents=True)
    (ingest / ("a" * 64)).write_bytes(b"x" * 1000)
    (ingest / ("b" * 64)).write_bytes(b"y" * 10)
    with flock(ingest / f"{'b' * 64}.lock"):
        out = ig("image", "prune", "-f").stdout
    assert out == f"Deleted Images:\ndeleted: ingest/{'a' * 64}\n\nTotal reclaimed space: 1kB\n"
    assert sorted(os.listdir(ingest)) == ["b" * 64, f"{'b' * 64}.lock"]


def test_collection_waits_for_a_pull(ig: Ignite, plain_registry: Registry) -> None:
    """A pull holds the store from before its first blob until its image is stored: a
    prune meanwhile waits for it (else the blobs it wrote would go before its image
    records them), then collects only what no image needs."""
    from ignitevm.images.blobs import ContentStore

    box = f"{plain_registry.host}/test/busybox:1"
    ig("image", "pull", box)
    ig("image", "rm", box)
    orphans = _blobs(ig)
    assert orphans
    env = {**os.environ, "IGNITE_ROOT": str(ig.root), "PYTHONPATH": str(REPO), **ig.env}
    with ContentStore(ig.root / "content").in_use():   # as a pull does
        prune = subprocess.Popen([sys.executable, "-m", "ignitevm", "image", "prune", "-f"],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        assert prune.stderr is not None
        line = prune.stderr.readline()       # (the event: it says it waits)
        assert "Waiting for pulls to finish" in line
        assert prune.poll() is None and _blobs(ig) == orphans
    out, _ = prune.communicate(timeout=60)
    assert prune.returncode == 0 and _blobs(ig) == set()
    assert out.endswith("\n\nTotal reclaimed space: " + out.rsplit(": ", 1)[1])


def test_unreadable_manifest_removes_nothing(ig: Ignite, plain_registry: Registry) -> None:
    box = f"{plain_registry.host}/test/busybox:1"
    ig("image", "pull", box)
    needed = _needs(ig, "image", box)
    ident = json.loads(ig("inspect", "image", box).stdout)["status"]["ociSource"]["id"]
    manifest = ig.root / "content" / "blobs" / "sha256" / ident.rpartition("@")[2][7:]
    manifest.chmod(0o600)
    manifest.write_bytes(b"{not json")
    (ig.root / "content" / "blobs" / "sha256" / ("c" * 64)).write_bytes(b"orphan")
    res = ig("image", "prune", "-f", check=False)
    assert res.returncode == 1 and "cannot be read; no blob was removed" in res.stderr
    assert needed | {"sha256:" + "c" * 64} <= _blobs(ig)
