"""Shared by the containerd tests: one private containerd for the module, test images
loaded into it, and the CLI pointed at it."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Ignite
from tests.helpers.containerd import Containerd, missing, running_containerd
from tests.helpers.images import OCILayout, _dir, _file, _tar_bytes, busybox_layers


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    why = missing()
    if why:
        pytest.skip(why)
    try:
        with running_containerd() as ctrd:
            yield ctrd
    except RuntimeError as exc:
        if "did not start" not in str(exc):
            raise
        pytest.skip(f"containerd cannot start here: {exc}")


def host_arch() -> str:
    from ignitevm.images.registry.manifests import host_platform

    return host_platform().split("/")[1]


def oci_archive(layout: OCILayout, out: Path) -> Path:
    """The layout folder as an oci-archive tarball."""
    with tarfile.open(out, "w") as tf:
        for p in sorted(layout.dir.rglob("*")):
            tf.add(p, p.relative_to(layout.dir).as_posix(), recursive=False)
    return out


def one_layer(text: str) -> bytes:
    """A small layer of its own (tests that damage content must not share blobs)."""
    return _tar_bytes([_dir("etc"), _file("etc/marker", text.encode())])


class Images:
    """The test images, as OCI archives (the import to compare with) loaded into containerd."""

    def __init__(self, folder: Path):
        self.folder = folder

    def build(self, name: str, layers: list[bytes], *, arch: str | None = None,
              other_arch: bool = False, compression: str | None = "gzip") -> tuple[Path, str]:
        """An archive holding an index (this host's image, or ``arch``'s, plus an arm64 or
        amd64 one with ``other_arch``) tagged ``name``; returns it and the manifest digest."""
        layout = OCILayout(self.folder / hashlib.sha256(name.encode()).hexdigest()[:12])
        arch = arch or host_arch()
        main = layout.image(layers, {"Cmd": ["/sbin/init"]}, arch=arch,
                            compression=compression)
        entries = [main]
        if other_arch:
            entries.append(layout.image(layers[:1], arch="arm64" if arch != "arm64"
                                        else "amd64"))
        layout.tag(layout.index(entries), name)
        return oci_archive(layout, layout.dir.with_suffix(".tar")), str(main["digest"])


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    return Images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def box(containerd: Containerd, images: Images) -> tuple[Path, str]:
    """docker.io/test/box:1 (busybox, whiteouts) in the default namespace: archive, digest."""
    archive, digest = images.build("docker.io/test/box:1", busybox_layers(), other_arch=True)
    containerd.load(archive)
    return archive, digest


@pytest.fixture
def ig(tmp_path: Path) -> Ignite:
    return Ignite(tmp_path / "root", env={"CONTAINERD_ADDRESS": "", "CONTAINERD_NAMESPACE": ""})
