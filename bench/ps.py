"""CLI latency: `ignite ps -a` with many VM objects in the store, and start-up cost.

Baselines, measured in the same run: `python -c pass` (the interpreter alone).
Targets: `ps -a` with 50 VMs <= 150 ms wall time (1000 VMs with --many: <= 300 ms);
`ignite version` and `ignite ps` on an empty store <= +80 ms over the baseline.

The VM objects are written straight into the store (no boot, no disk): realistic,
defaulted VM objects that `ps` shows as Stopped, some with a stale run/qemu.pid left
by a VMM that died.

Usage: python3 -m bench.ps [--many] [rounds]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, ignite, median, report, temp_root
from ignitevm.api.defaults import default_vm
from ignitevm.api.types import VM, KernelRef, ObjectMeta, OCIRef, OCISource, Size, VMSpec
from ignitevm.store import Store
from ignitevm.util.ids import new_uid

IMAGE_ID = "sha256:" + "ab" * 32
KERNEL_ID = "sha256:" + "cd" * 32


def fill_store(root: Path, count: int) -> None:
    """Write ``count`` stopped VMs, as `ignite create` would have left them."""
    store = Store(root)
    for i in range(count):
        vm = VM(metadata=ObjectMeta(name=f"bench-vm-{i:04d}", uid=new_uid(),
                                    labels={"app": "bench", "tier": ("web", "db")[i % 2]}),
                spec=VMSpec(image=OCIRef(oci="base:latest"), kernel=KernelRef(),
                            cpus=1 + i % 4, memory=Size(512 << 20), disk_size=Size(4 << 30)))
        default_vm(vm)
        vm.status.image = OCISource(id=IMAGE_ID, size=Size(230 << 20))
        vm.status.kernel = OCISource(id=KERNEL_ID, size=Size(48 << 20))
        vm.status.runtime.name = "qemu"
        crashed = i % 5 == 0  # the VMM died without the CLI noticing: pid file left behind
        if crashed:
            vm.status.running = True
            vm.status.start_time = vm.metadata.created
            vm.status.runtime.id = f"ignite-{vm.metadata.uid}"
            vm.status.runtime.accel = "tcg"
        with store.creating(vm, unique_name=False) as stage:
            (stage / "console.log").write_bytes(b"")
            if crashed:
                (stage / "run").mkdir()
                (stage / "run" / "qemu.pid").write_text(f"{os.getpid()}\n")


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def timed_ignite(root: Path, *args: str) -> float:
    start = time.perf_counter()
    ignite(root, *args)
    return time.perf_counter() - start


def compare(name: str, root: Path, args: list[str], rounds: int,
            target_abs: float | None = None, target_extra: float | None = None) -> None:
    base_cmd = [sys.executable, "-c", "pass"]
    ignite(root, *args)  # warm the page cache once
    timed(base_cmd)
    ours, base = [], []
    for _ in range(rounds):
        base.append(timed(base_cmd))
        ours.append(timed_ignite(root, *args))
    report(name, ours, base)
    mo, mb = median(ours), median(base)
    if target_abs is not None:
        verdict = "ok" if mo <= target_abs else "MISSED"
        print(f"  target: <= {target_abs * 1000:.0f} ms wall time -> {mo * 1000:.0f} ms, {verdict}")
    if target_extra is not None:
        verdict = "ok" if mo - mb <= target_extra else "MISSED"
        print(f"  target: <= +{target_extra * 1000:.0f} ms over the interpreter -> "
              f"+{(mo - mb) * 1000:.0f} ms, {verdict}")


def main() -> None:
    argv = sys.argv[1:]
    many = "--many" in argv
    argv = [a for a in argv if a != "--many"]
    rounds = int(argv[0]) if argv else 15
    count, target = (1000, 0.300) if many else (50, 0.150)
    empty = temp_root()
    full = temp_root()
    try:
        print(f"CLI: {' '.join(ignite_cmd())}; baseline: {sys.executable} -c pass")
        compare("ignite version", empty, ["version"], rounds, target_extra=0.080)
        compare("ignite ps (empty store)", empty, ["ps"], rounds, target_extra=0.080)
        start = time.perf_counter()
        fill_store(full, count)
        print(f"(wrote {count} VM objects in {time.perf_counter() - start:.2f}s)")
        out = ignite(full, "ps", "-a").stdout.splitlines()
        assert len(out) == count + 1 and all("Stopped" in line for line in out[1:]), out[:3]
        compare(f"ignite ps -a ({count} VMs)", full, ["ps", "-a"], rounds, target_abs=target)
    finally:
        shutil.rmtree(empty.parent, ignore_errors=True)
        shutil.rmtree(full.parent, ignore_errors=True)


def ignite_cmd() -> list[str]:
    exe = REPO / ".venv" / "bin" / "ignite"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ignitevm"]


if __name__ == "__main__":
    main()
