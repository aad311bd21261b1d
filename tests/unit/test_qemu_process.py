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
