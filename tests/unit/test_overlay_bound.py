"""A VM's qcow2 overlay cannot outgrow its virtual size plus metadata: the bound
the jailed QEMU's RLIMIT_FSIZE is set from (providers/vmm/qemu/jailed.py).
Written by QEMU's own block layer (qemu-io) as the guest would: every cluster,
then discarded and written again."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ignitevm.providers.vmm.base import Disk, LaunchSpec
from ignitevm.providers.vmm.qemu.jailed import file_size_limit
from ignitevm.providers.vmm.qemu.machine import QemuVMM

MiB = 1 << 20


@pytest.mark.skipif(shutil.which("qemu-io") is None, reason="needs qemu-io (qemu-utils)")
def test_a_full_overlay_stays_under_the_file_size_limit(tmp_path: Path) -> None:
    base = tmp_path / "image.ext4"
    with open(base, "wb") as f:
        f.truncate(16 * MiB)
    size = 256 * MiB
    disk = QemuVMM().create_disk(base, tmp_path, size)
    spec = LaunchSpec("x", tmp_path, base, None, "", 1, 64,
                      (Disk(disk.path, "r", "qcow2", backing=base, size=size),), "tcg")
    limit = file_size_limit(spec)
    io = ["qemu-io", "-f", "qcow2", "-d", "unmap"]
    # Every cluster with data, in an order that scatters allocation.
    cmds = [f"write -P {i % 250 + 1} {off} 1M" for i, off in
            enumerate(list(range(0, size, 2 * MiB)) + list(range(MiB, size, 2 * MiB)))]
    subprocess.run([*io, *[w for c in cmds for w in ("-c", c)], str(disk.path)],
                   check=True, capture_output=True)
    full = disk.path.stat().st_size
    # Half of it discarded, then everything written again.
    again = [f"discard {off} 1M" for off in range(0, size, 2 * MiB)] + cmds
    subprocess.run([*io, *[w for c in again for w in ("-c", c)], str(disk.path)],
                   check=True, capture_output=True)
    after = disk.path.stat().st_size
    assert size < full <= after < limit, (full, after, limit)
    assert after <= size + size // 64  # the metadata is far under the allowance
    # A memory file (or a state saved in the overlay) fits too.
    big_ram = spec._replace(memory_mib=1024)
    assert file_size_limit(big_ram) > size + 1024 * MiB
