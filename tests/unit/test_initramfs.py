"""Module load order, collecting modules from an image, and the cpio writer."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.kernels.cpio import CpioWriter
from ignitevm.kernels.initramfs import collect_modules, load_order, parse_modules_dep
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


def module_tree(root: Path, dep: str, files: dict[str, bytes]) -> Path:
    mods = root / "lib/modules/6.1.0"
    mods.mkdir(parents=True)
    (mods / "modules.dep").write_text(dep)
    for rel, data in files.items():
        (mods / rel).parent.mkdir(parents=True, exist_ok=True)
        (mods / rel).write_bytes(data)
    return mods


def test_collect_modules_copies_the_wanted_ones_in_order(tmp_path: Path) -> None:
    mods = module_tree(tmp_path / "img", DEP, {
        "kernel/drivers/virtio/virtio.ko": b"v", "kernel/drivers/virtio/virtio_ring.ko": b"r",
        "kernel/drivers/virtio/virtio_mmio.ko": b"m", "kernel/drivers/block/virtio_blk.ko": b"b",
    })
    # An in-tree link is followed as if the module folder were /.
    (mods / "kernel/drivers/block").rename(mods / "blk")
    (mods / "kernel/drivers/block").symlink_to("/blk")
    out = tmp_path / "out"
    assert collect_modules(mods, out) == ["virtio_ring.ko", "virtio.ko", "virtio_mmio.ko",
                                          "virtio_blk.ko"]
    assert (out / "virtio_blk.ko").read_bytes() == b"b"
    assert (out / "load.order").read_text().split() == ["virtio_ring.ko", "virtio.ko",
                                                        "virtio_mmio.ko", "virtio_blk.ko"]


@pytest.mark.parametrize("entry, message", [
    ("../../../../secret/virtio_mmio.ko:", "not a path below"),
    ("kernel/../../../../../secret/virtio_mmio.ko:", "not a path below"),
    ("SECRET/virtio_mmio.ko:", "not a path below"),  # absolute
    ("kernel/virtio_blk.ko: SECRET/virtio_mmio.ko", "not a path below"),  # as a dependency
    ("linkdir/virtio_mmio.ko:", "not a file in"),  # a link (absolute) to the host folder
    ("updir/secret/virtio_mmio.ko:", "not a file in"),  # a link (relative) climbing out
    ("kernel/virtio_mmio.ko:", "not a file in"),  # the module is a link to the host file
])
def test_modules_dep_cannot_name_host_files(tmp_path: Path, entry: str, message: str) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "virtio_mmio.ko").write_bytes(b"host secret")
    mods = module_tree(tmp_path / "img", entry.replace("SECRET", str(secret)) + "\n",
                       {"kernel/virtio_blk.ko": b"b"})
    (mods / "linkdir").symlink_to(secret)
    (mods / "updir").symlink_to("../../../..")
    (mods / "kernel/virtio_mmio.ko").symlink_to(secret / "virtio_mmio.ko")
    out = tmp_path / "out"
    with pytest.raises(InvalidInput, match=message):
        collect_modules(mods, out)
    assert not out.exists() or all(p.read_bytes() != b"host secret" for p in out.iterdir())


def test_modules_dep_that_is_a_link_out_is_not_read(tmp_path: Path) -> None:
    host = tmp_path / "host.dep"
    host.write_text("kernel/virtio_mmio.ko:\n")
    mods = module_tree(tmp_path / "img", "", {"kernel/virtio_mmio.ko": b"m"})
    (mods / "modules.dep").unlink()
    (mods / "modules.dep").symlink_to(host)
    with pytest.raises(IgniteError, match=r"has no modules\.dep"):
        collect_modules(mods, tmp_path / "out")


def test_initramfs_holds_the_init_agent_and_modules_only(tmp_path: Path) -> None:
    """/init is our static C init (no shell, no busybox: nothing forks per
    step), the agent is in /bin, the modules in load order."""
    import shutil

    from ignitevm.kernels.initramfs import build_initramfs

    if shutil.which("gcc") is None or shutil.which("cpio") is None:
        pytest.skip("gcc or cpio is not installed (run scripts/setup.sh)")
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "virtio_blk.ko").write_bytes(b"b")
    (mods / "load.order").write_text("virtio_blk.ko\n")
    out = tmp_path / "initrd.img"
    build_initramfs(out, mods, tmp_path / "cache")
    listed = subprocess.run(["cpio", "-t"], input=out.read_bytes(), capture_output=True,
                            check=True).stdout.decode().split()
    assert {"init", "bin/ignite-agent", "lib/modules/virtio_blk.ko", "lib/modules/load.order",
            "dev/console", "cfg", "newroot"} <= set(listed)
    assert not [n for n in listed if "busybox" in n or n.startswith("etc")]
    work = tmp_path / "x"
    work.mkdir()
    subprocess.run(["cpio", "-id", "init"], input=out.read_bytes(), cwd=work,
                   capture_output=True, check=True)
    elf = (work / "init").read_bytes()
    assert elf[:4] == b"\x7fELF"
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    size, count = (int.from_bytes(elf[o:o + 2], "little") for o in (0x36, 0x38))
    kinds = [int.from_bytes(elf[phoff + i * size:phoff + i * size + 4], "little")
             for i in range(count)]
    assert 3 not in kinds  # no PT_INTERP: a static program, runs with no libc in the initramfs
