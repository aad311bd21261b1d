"""QEMU's command line is data: check it without starting QEMU."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    argv = args.argv(_spec("tcg"), console_fd=9)
    joined = " ".join(argv)
    assert argv[0] == "qemu-system-x86_64"
    assert "-M microvm," in joined
    assert "-accel tcg,tb-size=64 -cpu max,-erms,-fsrm" in joined
    assert "-smp 2 -m 512M" in joined
    assert "-kernel /k/vmlinuz -append console=ttyS0 -initrd /k/initramfs.img" in joined
    assert "virtio-blk-device,drive=disk0,serial=ignite-root" in joined
    assert "format=raw,if=none,discard=unmap,readonly=on" in joined
    # QEMU writes the console into the console writer's pipe, never the log itself.
    assert "-add-fd fd=9,set=7 -chardev socket,id=console,path=/r/vm/0123456789abcdef/run/" \
        "console.sock,server=on,wait=off,logfile=/dev/fdset/7,logappend=on" in joined
    assert "console.log" not in joined
    assert "-qmp unix:/r/vm/0123456789abcdef/run/qmp.sock,server=on,wait=off" in joined
    assert argv[-1] == "-daemonize" and "-no-reboot" in argv


def test_kvm_argv() -> None:
    assert "-accel kvm -cpu host" in " ".join(args.argv(_spec("kvm"), console_fd=9))


def test_commas_in_paths_are_escaped() -> None:
    assert args._escape("/a,b") == "/a,,b"


def test_tcg_kernel_args_pin_the_tsc() -> None:
    words = accel.kernel_args("tcg")
    assert "tsc=reliable" in words and "cryptomgr.notests" in words
    assert any(w.startswith("tsc_early_khz=") for w in words)
    assert accel.kernel_args("kvm") == []


def test_a_forward_cannot_add_qemu_options() -> None:
    """Defence in depth: even if a hostile bindAddress got past the API layer, the
    argv builder refuses it instead of pasting it into -netdev."""
    import pytest

    from ignitevm.errors import InvalidInput
    from ignitevm.providers.network.base import Forward, NetPlan

    evil = "127.0.0.1:1-:1,guestfwd=tcp:10.0.2.100:9-cmd:touch /tmp/x,hostfwd=tcp:127.0.0.1"
    net = NetPlan("user", "02:00:00:00:00:01", "10.0.2.15/24", "10.0.2.2", "10.0.2.3",
                  forwards=(Forward("tcp", evil, 8080, 80),))
    with pytest.raises(InvalidInput, match="not an IPv4 address"):
        args.network(net)
    with pytest.raises(InvalidInput, match="protocol"):
        args.network(net._replace(forwards=(Forward("tcp,guestfwd=x", "127.0.0.1", 1, 1),)))
    ok = args.network(net._replace(forwards=(Forward("udp", "127.0.0.1", 5353, 53),)))
    assert ok[1] == "user,id=net0,hostfwd=udp:127.0.0.1:5353-:53"


def test_option_values_refuse_control_characters() -> None:
    import pytest

    from ignitevm.errors import InvalidInput

    with pytest.raises(InvalidInput):
        args._escape("/a\nb")
    with pytest.raises(InvalidInput, match="control character"):
        args.checked(["qemu", "-append", "console=ttyS0\ninit=/bin/sh"])
    spec = _spec("tcg")
    with pytest.raises(InvalidInput):
        args.argv(spec._replace(cmdline="a\x00b"), console_fd=9)


def test_long_volume_names_fit_the_disk_serial(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A virtio disk's serial holds 20 bytes: a volume's is a short id of its
    name, which the config disk's mount list names too, so the guest finds
    volumes with names as manifests give them ("database-files")."""
    from ignitevm.api.defaults import default_vm, validate_vm
    from ignitevm.api.types import VM, BlockDevice, Volume, VolumeMount, volume_id
    from ignitevm.operations import vms
    from ignitevm.operations.guestconfig import env_script

    vm = VM()
    vm.metadata.name, vm.metadata.uid = "web", "0123456789abcdef"
    vm.spec.image.oci = "base"
    names = ["database-files", "x" * 253, "-logs"]  # (a leading "-" was valid before)
    (tmp_path / "dev").touch()
    vm.spec.storage.volumes = [Volume(name=n, block_device=BlockDevice(path=str(tmp_path / "dev")))
                               for n in names]
    vm.spec.storage.volume_mounts = [VolumeMount(name=n, mount_path=f"/mnt/{i}")
                                     for i, n in enumerate(names)]
    validate_vm(default_vm(vm))
    monkeypatch.setattr("stat.S_ISBLK", lambda mode: True)  # (a file stands for the device)
    env = env_script(vm)
    found = {d.serial for d in vms.volume_disks(vm)}
    assert len(found) == 3 and all(len(s.encode()) <= 20 for s in found)
    for i, name in enumerate(names):
        assert f"ignite-vol-{volume_id(name)}" in found
        assert f"{volume_id(name)}:/mnt/{i}" in env   # what the guest looks for
