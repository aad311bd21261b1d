"""A VM's "QEMU" for the unit layer, where no guest can boot."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def fake_qemu(folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    # A real QEMU with no machine (no guest, no cost): the store only trusts a
    # pid whose executable is QEMU's and whose command line names the folder.
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86_64 is not installed (run scripts/setup.sh)")
    proc = subprocess.Popen([qemu, "-M", "none", "-display", "none", "-nodefaults", "-S",
                             "-name", str(folder)], stdin=subprocess.DEVNULL)
    try:
        (folder / "run").mkdir(exist_ok=True)
        (folder / "run" / "qemu.pid").write_text(f"{proc.pid}\n")
        from ignitevm.providers.vmm.qemu.running import is_our_qemu

        deadline = time.monotonic() + 30  # (until /proc shows QEMU as the store checks it)
        while not is_our_qemu(proc.pid, folder):
            assert proc.poll() is None, f"the stand-in QEMU exited ({proc.returncode})"
            assert time.monotonic() < deadline, "the stand-in QEMU is not seen as one"
            time.sleep(0.01)
        yield proc
    finally:
        proc.kill()
        proc.wait()
