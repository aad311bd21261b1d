"""Boot time: `ignite run -d` until the guest's init reports ready, against two
raw qemu-system-x86_64 command lines, interleaved in the same run:

- the project's own: the same kernel, initramfs (our init, agent, modules),
  config disk and command line as ignitevm's VM: the host side's cost only;
- the minimal one (bench/rawboot.py): Debian's cloud kernel, a busybox
  initramfs that loads virtio_mmio + virtio_blk, mounts the image's ext4 and
  switch_roots into its init: the guest side's cost shows too. Its kernel
  arguments are the issue's (the TSC pinned), its CPU `-cpu max` as by hand;
  it is timed once more with ignitevm's own TCG kernel arguments and CPU
  model (args.TCG_CPU), to show what those are worth by themselves.

`ignite run` is timed as a user runs it: ``--memory 256MB`` and the default disk
size (the guest grows the filesystem to 4 GB as it boots; the project's raw boot
gets a disk of that size too, the minimal one boots the image's ext4 as it is).

Target (issue 15): <= 1.10x the minimal raw boot. Usage: python -m bench.boot [rounds]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from bench import rawboot
from bench.common import ignite, report, run_bench, time_qemu, time_run, wait_file
from ignitevm.api.defaults import DEFAULT_DISK_SIZE
from ignitevm.providers.vmm.qemu.args import TCG_CPU
from tests.helpers.images import busybox_image

MARKER = b"TEST-READY"


def raw_boot(root: Path, kernel: str, initrd: str, image: Path, work: Path,
             cmdline: str) -> float:
    """The baseline: QEMU started by hand on the same kernel/initramfs/image."""
    work.mkdir(parents=True, exist_ok=True)
    disk = work / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image),
                    str(disk), str(DEFAULT_DISK_SIZE)], check=True)  # (as `ignite run`'s)
    cfg = next((root / "vm").glob("*/config.tar"))
    shutil.copy(cfg, work / "config.tar")
    log = work / "console.log"
    log.unlink(missing_ok=True)
    cmd = ["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on",
           "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-accel", "tcg,tb-size=64", "-cpu", TCG_CPU, "-smp", "1", "-m", "256M",
           "-kernel", kernel, "-initrd", initrd,
           "-append", cmdline,
           "-drive", f"id=d0,file={disk},format=qcow2,if=none",
           "-device", "virtio-blk-device,drive=d0,serial=ignite-root",
           "-drive", f"id=d1,file={work / 'config.tar'},format=raw,if=none,readonly=on",
           "-device", "virtio-blk-device,drive=d1,serial=ignite-cfg",
           "-serial", f"file:{log}"]
    return time_qemu(cmd, log, MARKER)


def ours(root: Path, i: int) -> float:
    return time_run(root, f"b{i}", MARKER)


def main(root: Path) -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    ignite(root, "kernel", "import", "debian")
    archive = busybox_image(root.parent / "testbox.tar")
    ignite(root, "image", "import", str(archive))
    image = next((root / "image").glob("*/image.ext4"))
    # One warm-up run of each (page cache, accel probe cache), then alternate.
    ignite(root, "run", "testbox:latest", "--name", "warm", "--memory", "256MB")
    uid = ignite(root, "inspect", "vm", "warm", "-t", "{{.ObjectMeta.UID}}").stdout.strip()
    wait_file(root / "vm" / uid / "console.log", MARKER)
    # The same kernel, initramfs and kernel command line as ignitevm's own VM.
    words = (root / "vm" / uid / "qemu.cmdline").read_text().split("\n")
    kernel, initrd, cmdline = (words[words.index(flag) + 1]
                               for flag in ("-kernel", "-initrd", "-append"))
    raw = root.parent / "raw"
    minimal = root.parent / "minimal"
    minimal.mkdir()
    kdir = Path(kernel).parent
    rawboot.build_initramfs(kdir / "modules", minimal / "initrd.cpio")
    from ignitevm.providers.vmm.qemu.accel import kernel_args

    def minimal_boot(args: list[str], cpu: str = "max") -> float:
        return rawboot.boot(kernel, minimal / "initrd.cpio", image, minimal, args, MARKER, cpu)

    raw_boot(root, kernel, initrd, image, raw, cmdline)
    minimal_boot(rawboot.baseline_args())
    base, least, least_ours, mine = [], [], [], []
    for i in range(rounds):
        least.append(minimal_boot(rawboot.baseline_args()))
        base.append(raw_boot(root, kernel, initrd, image, raw, cmdline))
        mine.append(ours(root, i))
        least_ours.append(minimal_boot(kernel_args("tcg"), TCG_CPU))
    ignite(root, "rm", "-f", "warm")
    report("boot to guest init ready (busybox image, TCG) vs the project's raw boot",
           mine, base)
    report("boot to guest init ready (busybox image, TCG) vs the minimal raw boot",
           mine, least)
    report("the same, vs the minimal raw boot given ignitevm's kernel arguments and CPU "
           "model too",
           mine, least_ours)
    report("the project's raw boot vs the minimal raw boot (guest-side cost)", base, least)


if __name__ == "__main__":
    run_bench(main)
