"""VM tests: real QEMU guests, one state root and one kernel for the session.

Booted VMs are shared across tests where they can be (TCG boots cost
seconds); every VM is removed at the end, and a leaked QEMU fails the run.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Ignite
from tests.helpers.images import busybox_image


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)


def _qemu_pids(root: Path) -> list[int]:
    from ignitevm.util.proc import pids_where

    return pids_where("cmdline", lambda cmd: b"qemu-system" in cmd and str(root).encode() in cmd)


@pytest.fixture(scope="session")
def vm_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    for tool in ("qemu-system-x86_64", "qemu-img", "busybox", "mkfs.ext4"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (run scripts/setup.sh)")
    root = tmp_path_factory.mktemp("ignite") / "root"
    yield root
    cli = Ignite(root)
    ids = cli("ps", "-a", "-q", check=False).stdout.split()
    if ids:
        cli("rm", "-f", *ids, check=False)
    leaked = _qemu_pids(root)
    for pid in leaked:
        os.kill(pid, 9)
    assert not leaked, f"QEMU processes outlived their VMs: {leaked}"


@pytest.fixture(scope="session")
def cli(vm_root: Path) -> Ignite:
    return Ignite(vm_root)


@pytest.fixture(scope="session")
def kernel(cli: Ignite) -> str:
    cli("kernel", "import", "debian")
    return "debian-cloud:latest"


@pytest.fixture(scope="session")
def kernel_debs(vm_root: Path, kernel: str) -> list[Path]:
    """The kernel package the session's import downloaded: tests with a state
    root of their own seed it there instead of downloading it again (the host
    may have lost its way out since)."""
    return sorted((vm_root / "cache" / "debs").glob("*.deb"))


@pytest.fixture(scope="session")
def testbox(cli: Ignite, kernel: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    archive = busybox_image(tmp_path_factory.mktemp("img") / "testbox.tar")
    cli("image", "import", str(archive))
    return "testbox:latest"


def wait_console(cli: Ignite, vm: str, marker: str, timeout: float = 120) -> str:
    """Wait until the VM's console shows ``marker``; fail early if the guest died."""
    log_path = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log_path is None:
            uid = cli("inspect", "vm", vm, "-t", "{{.ObjectMeta.UID}}").stdout.strip()
            log_path = cli.root / "vm" / uid / "console.log"
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if marker in text:
            return text
        if "Kernel panic" in text or "ignitevm-init: error" in text:
            raise AssertionError(f"guest failed before {marker!r}:\n{text[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"no {marker!r} on the console of {vm} within {timeout}s")


def kvm_unusable(cli: Ignite, kernel: str) -> str | None:
    """Why KVM cannot boot a guest of ``kernel`` on this host (None: it can),
    as the provider decides it: /dev/kvm must open, and its probe must boot a
    real guest to its init (a nested hypervisor may offer /dev/kvm and never
    run a stock kernel; see ignitevm/providers/vmm/qemu/accel.py)."""
    from ignitevm.api.types import Kernel
    from ignitevm.operations import kernels
    from ignitevm.operations.context import Context
    from ignitevm.providers.vmm.qemu import accel

    ok, why = accel.kvm_usable()
    if not ok:
        return why
    ctx = Context(cli.root)
    found = ctx.store.find(Kernel, kernel)
    assert found is not None
    kpath, initrd = kernels.kernel_files(ctx, found)
    outcome = accel.probe_kvm(kpath, initrd, jail_in=ctx.cache if os.geteuid() == 0 else None)
    return None if outcome.works else f"KVM cannot boot a guest on this host: {outcome.detail}"
