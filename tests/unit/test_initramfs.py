"""Module load order and the cpio writer."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from ignitevm.kernels.cpio import CpioWriter
from ignitevm.kernels.initramfs import load_order, parse_modules_dep
from ignitevm.kernels.version import kernel_version

DEP = """kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/char/hw_random/rng-core.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/char/hw_random/rng-core.ko:
"""  # noqa: E501


def test_load_order_puts_dependencies_first() -> None:
    wanted = ("virtio_mmio", "virtio_blk", "virtio-rng", "nope")
    order = load_order(parse_modules_dep(DEP), wanted)
    names = [p.rsplit("/", 1)[1] for p in order]
    assert names == ["virtio_ring.ko", "virtio.ko", "virtio_mmio.ko", "virtio_blk.ko",
                     "rng-core.ko", "virtio-rng.ko"]


def test_cpio_is_readable_by_cpio(tmp_path: Path) -> None:
    if subprocess.run(["which", "cpio"], capture_output=True).returncode:
        pytest.skip("cpio is not installed")
    buf = io.BytesIO()
    w = CpioWriter(buf)
    w.file("bin/hello", b"hi\n", 0o755)
    w.symlink("bin/sh", "hello")
    w.close()
    out = subprocess.run(["cpio", "-t"], input=buf.getvalue(), capture_output=True)
    assert out.stdout.decode().split() == ["bin", "bin/hello", "bin/sh"]


def test_kernel_version_from_bzimage_header(tmp_path: Path) -> None:
    data = bytearray(0x1000)
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x300).to_bytes(2, "little")
    data[0x500:0x520] = b"6.1.0-test (builder@host) #1\0\0\0"
    f = tmp_path / "bz"
    f.write_bytes(bytes(data))
    assert kernel_version(f) == "6.1.0-test"
