"""QEMU's command line is data: check it without starting QEMU."""

from __future__ import annotations

from pathlib import Path

from ignitevm.providers.vmm.base import Disk, LaunchSpec
from ignitevm.providers.vmm.qemu import accel, args


def _spec(accel_name: str, sandbox: str = "none") -> LaunchSpec:
    w = Path("/r/vm/0123456789abcdef")
    return LaunchSpec(uid="0123456789abcdef", workdir=w, kernel=Path("/k/vmlinuz"),
                      initrd=Path("/k/initramfs.img"), cmdline="console=ttyS0", cpus=2,
                      memory_mib=512,
                      disks=(Disk(w / "disk.qcow2", "ignite-root", "qcow2"),
                             Disk(w / "config.tar", "ignite-cfg", "raw", readonly=True)),
                      accel=accel_name, sandbox=sandbox)


def test_tcg_argv() -> None:
    argv = args.argv(_spec("tcg"))
    joined = " ".join(argv)
    assert argv[0] == "qemu-system-x86_64"
    assert "-M microvm," in joined
    assert "-accel tcg,tb-size=64 -cpu max" in joined
    assert "-smp 2 -m 512M" in joined
    assert "-kernel /k/vmlinuz -append console=ttyS0 -initrd /k/initramfs.img" in joined
    assert "virtio-blk-device,drive=disk0,serial=ignite-root" in joined
    assert "format=raw,if=none,discard=unmap,readonly=on" in joined
    assert "logfile=/r/vm/0123456789abcdef/console.log" in joined
    assert "-qmp unix:/r/vm/0123456789abcdef/run/qmp.sock,server=on,wait=off" in joined
    assert argv[-1] == "-daemonize" and "-no-reboot" in argv


def test_kvm_argv() -> None:
    assert "-accel kvm -cpu host" in " ".join(args.argv(_spec("kvm")))


def test_commas_in_paths_are_escaped() -> None:
    assert args._escape("/a,b") == "/a,,b"


def test_tcg_kernel_args_pin_the_tsc() -> None:
    words = accel.kernel_args("tcg")
    assert "tsc=reliable" in words
    assert any(w.startswith("tsc_early_khz=") for w in words)
    assert accel.kernel_args("kvm") == []
