"""What confinement costs at launch: QEMU started by the provider until it is
up (QMP greets, or -daemonize returns), jailed against unconfined, on the
same stopped VM, alternating. Also `ignite run` to guest init ready, jailed
against --sandbox=none. Usage: python -m bench.sandbox [rounds]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.common import ignite, report, run_bench, time_run
from tests.helpers.images import busybox_image

MARKER = b"TEST-READY"


def launch_once(root: Path, name: str, mode: str) -> float:
    """The provider's launch alone (no guest boot wait)."""
    from ignitevm.api.types import VM
    from ignitevm.operations import vms
    from ignitevm.operations.context import Context
    from ignitevm.providers.vmm.qemu import QemuVMM

    ctx = Context(root=root, accel="tcg", sandbox=mode)
    vm = ctx.store.find(VM, name)
    assert vm is not None
    launched: list[float] = []
    real = QemuVMM.launch

    def timed(self: QemuVMM, spec):  # type: ignore[no-untyped-def]
        start = time.monotonic()
        try:
            return real(self, spec)
        finally:
            launched.append(time.monotonic() - start)

    QemuVMM.launch = timed  # type: ignore[method-assign]
    try:
        vms.start(ctx, vm)
    finally:
        QemuVMM.launch = real  # type: ignore[method-assign]
        vms.stop(ctx, vm, force=True)
    return launched[0]


def boot_once(root: Path, i: int, mode: str) -> float:
    return time_run(root, f"s{mode}{i}", MARKER, f"--sandbox={mode}")


def main(root: Path) -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    ignite(root, "kernel", "import", "debian")
    archive = busybox_image(root.parent / "testbox.tar")
    ignite(root, "image", "import", str(archive))
    ignite(root, "create", "testbox:latest", "--name", "l", "--memory", "256MB",
           "--size", "256MB")
    launch_once(root, "l", "jail")  # warm-up: builds the helper, probes accel
    launch_once(root, "l", "none")
    jail, none = [], []
    for _ in range(rounds):
        jail.append(launch_once(root, "l", "jail"))
        none.append(launch_once(root, "l", "none"))
    report("QEMU launch until up, jailed vs unconfined", jail, none)
    jail, none = [], []
    for i in range(rounds):
        jail.append(boot_once(root, i, "jail"))
        none.append(boot_once(root, i, "none"))
    report("ignite run to guest init ready, jailed vs --sandbox=none", jail, none)


if __name__ == "__main__":
    run_bench(main)
