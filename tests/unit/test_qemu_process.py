"""Which process is a VM's QEMU: pid files that outlived their process (a reboot,
a reused pid) must never make an unrelated process look like the VM."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ignitevm.providers.vmm.qemu import args
from ignitevm.providers.vmm.qemu.machine import QemuVMM


def test_impostor_naming_the_folder_is_not_the_vm(tmp_path: Path) -> None:
    """After a reboot the pid may belong to anything, even a process whose
    command line names the VM's folder (an editor, a shell loop, a backup)."""
    workdir = tmp_path / "vm" / ("a" * 16)
    workdir.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()",
                             str(workdir)], stdin=subprocess.PIPE)
    try:
        (workdir / args.PIDFILE).parent.mkdir(exist_ok=True)
        (workdir / args.PIDFILE).write_text(f"{proc.pid}\n")
        assert QemuVMM().pid(workdir) is None
    finally:
        proc.kill()
        proc.wait()


def test_recorded_start_tells_this_qemu_from_a_stale_record(tmp_path: Path) -> None:
    from ignitevm.providers.vmm.qemu.machine import process_start

    qemu = shutil.which(args.QEMU)
    if qemu is None:
        pytest.skip(f"{args.QEMU} is not installed")
    workdir = tmp_path / "vm" / ("b" * 16)
    workdir.mkdir(parents=True)
    # An idle QEMU (no machine, no guest) whose command line names the folder.
    proc = subprocess.Popen([qemu, "-M", "none", "-display", "none", "-nodefaults",
                             "-monitor", "stdio", "-L", str(workdir)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        (workdir / args.PIDFILE).parent.mkdir(exist_ok=True)
        (workdir / args.PIDFILE).write_text(f"{proc.pid}\n")
        vmm = QemuVMM()
        assert vmm.pid(workdir) == proc.pid  # no record (an older launch): the folder check
        started = process_start(proc.pid)
        assert started is not None
        (workdir / args.PIDSTART).write_text(f"{proc.pid} {started}\n")
        assert vmm.pid(workdir) == proc.pid
        boot, ticks = started.split()
        (workdir / args.PIDSTART).write_text(f"{proc.pid} {'0' * len(boot)} {ticks}\n")
        assert vmm.pid(workdir) is None  # recorded in another boot
        (workdir / args.PIDSTART).write_text(f"{proc.pid} {boot} {int(ticks) + 1}\n")
        assert vmm.pid(workdir) is None  # another process with the same pid
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("plant", ["fifo", "zero", "big"])
def test_a_pid_file_planted_by_a_jailed_qemu_neither_hangs_nor_swamps(tmp_path: Path,
                                                                      plant: str) -> None:
    """A jailed QEMU may write in run/: its pid file swapped for a FIFO (a read
    would block for ever), a link to /dev/zero (an endless read) or a huge file
    must be ignored, not read by every root command."""
    import os

    workdir = tmp_path / "vm" / ("c" * 16)
    pidfile = workdir / args.PIDFILE
    pidfile.parent.mkdir(parents=True)
    if plant == "fifo":
        os.mkfifo(pidfile)
    elif plant == "zero":
        pidfile.symlink_to("/dev/zero")
    else:
        with open(pidfile, "wb") as f:
            f.truncate(1 << 40)  # sparse: 1 TiB of zeros
    assert QemuVMM().pid(workdir) is None


def test_the_hosts_launch_record_names_the_pid(tmp_path: Path) -> None:
    """Once launched, QEMU is found by the host's own record: its pid file can
    go (QEMU removes it as it exits, a guest-controlled QEMU could change it)."""
    qemu = shutil.which(args.QEMU)
    if qemu is None:
        pytest.skip(f"{args.QEMU} is not installed (run scripts/setup.sh)")
    from ignitevm.providers.vmm.qemu.machine import process_start

    workdir = tmp_path / "vm" / ("d" * 16)
    workdir.mkdir(parents=True)
    proc = subprocess.Popen([qemu, "-M", "none", "-display", "none", "-nodefaults", "-S"],
                            stdin=subprocess.DEVNULL)
    try:
        started = process_start(proc.pid)
        assert started is not None
        (workdir / args.PIDSTART).write_text(f"{proc.pid} {started}\n")
        assert QemuVMM().pid(workdir) == proc.pid   # no pid file at all
        (workdir / args.PIDFILE).parent.mkdir(exist_ok=True)
        (workdir / args.PIDFILE).write_text("1\n")  # a lie in run/ changes nothing
        assert QemuVMM().pid(workdir) == proc.pid
    finally:
        proc.kill()
        proc.wait()
    assert QemuVMM().pid(workdir) is None
