"""The minimal raw boot bench/boot.py compares against: QEMU started by hand
on Debian's cloud kernel with a busybox initramfs made here that loads only
virtio_mmio, virtio_blk and what they need, mounts /dev/vda (the image's ext4
file, as it is) and switch_roots into the image's /sbin/init. No config disk,
no agent, no resize: what any VM booting that image must do, and no more."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

from bench.common import time_qemu
from ignitevm.kernels.cpio import CpioWriter

WANTED = ("virtio_mmio", "virtio_blk")

INIT = """#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
for m in {modules}; do /bin/busybox insmod /lib/modules/$m.ko; done
while [ ! -b /dev/vda ]; do /bin/busybox usleep 2000; done
/bin/busybox mount -t ext4 /dev/vda /newroot
/bin/busybox mount --move /dev /newroot/dev
exec /bin/busybox switch_root /newroot /sbin/init
"""


def modules(modules_dir: Path) -> list[str]:
    """Module names in load order, up to the last one wanted (the kernel's
    folder keeps them in modules.dep order: each after what it needs)."""
    order = [n.removesuffix(".ko") for n in (modules_dir / "load.order").read_text().split()]
    last = max(order.index(m) for m in WANTED)
    return order[: last + 1]


def build_initramfs(modules_dir: Path, out: Path) -> list[str]:
    names = modules(modules_dir)
    buf = io.BytesIO()
    w = CpioWriter(buf)
    for d in ("dev", "proc", "newroot", "lib/modules"):
        w.mkdir(d)
    w.file("bin/busybox", Path(shutil.which("busybox") or "/bin/busybox").read_bytes(), 0o755)
    for name in names:
        w.file(f"lib/modules/{name}.ko", (modules_dir / f"{name}.ko").read_bytes())
    w.file("init", INIT.format(modules=" ".join(names)).encode(), 0o755)
    w.close()
    out.write_bytes(buf.getvalue())
    return names


def baseline_args() -> list[str]:
    """The minimal boot's own kernel arguments under TCG, as issue 15 defines
    it: the TSC pinned (tsc_early_khz, tsc=reliable), nothing more. ignitevm's
    VMs get more (ignitevm.providers.vmm.qemu.accel.kernel_args); bench/boot.py
    also times the minimal boot with those, to show what they alone are worth."""
    from ignitevm.providers.vmm.qemu.accel import kernel_args

    return [a for a in kernel_args("tcg") if a.startswith("tsc")]


def boot(kernel: str, initrd: Path, image: Path, work: Path, kernel_args: list[str],
         marker: bytes, cpu: str = "max") -> float:
    """QEMU's launch -> ``marker`` on the console, on a fresh copy of ``image``;
    ``cpu``: the guest's CPU model (by hand: ``max``, for RDRAND)."""
    work.mkdir(parents=True, exist_ok=True)
    disk = work / "disk.ext4"
    subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True)
    log = work / "console.log"
    log.unlink(missing_ok=True)
    cmd = ["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on",
           "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-accel", "tcg,tb-size=64", "-cpu", cpu, "-smp", "1", "-m", "256M",
           "-kernel", kernel, "-initrd", str(initrd),
           "-append", " ".join(["console=ttyS0", "reboot=k", "panic=1", *kernel_args]),
           "-drive", f"id=d0,file={disk},format=raw,if=none",
           "-device", "virtio-blk-device,drive=d0",
           "-serial", f"file:{log}"]
    return time_qemu(cmd, log, marker)
