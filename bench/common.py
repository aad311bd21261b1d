"""Shared bench helpers: a throwaway state root, the real CLI, medians and ratios."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ignite(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = cli_env(root)
    exe = REPO / ".venv" / "bin" / "ignite"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ignitevm"]
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, check=check,
                          stdin=subprocess.DEVNULL)


def cli_env(root: Path) -> dict[str, str]:
    """The CLI's environment, as a user's shell has it: bytecode caching on."""
    env = dict(os.environ, IGNITE_ROOT=str(root), PYTHONPATH=str(REPO))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def temp_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="ignite-bench-")) / "root"


def wait_file(path: Path, marker: bytes, timeout: float = 120.0, poll: float = 0.005) -> float:
    """Time (monotonic) at which ``marker`` appeared in ``path``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if marker in path.read_bytes():
                return time.monotonic()
        except FileNotFoundError:
            pass
        time.sleep(poll)
    raise TimeoutError(f"{marker!r} did not appear in {path}")


def time_qemu(cmd: list[str], log: Path, marker: bytes) -> float:
    """Seconds from launching a raw QEMU (``cmd``, its serial console to ``log``)
    until ``marker`` appears in ``log``; the QEMU is killed after."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    try:
        return wait_file(log, marker) - start
    finally:
        proc.kill()
        proc.wait()


def time_run(root: Path, name: str, marker: bytes, *flags: str) -> float:
    """Seconds from `ignite run -d` of the test image until ``marker`` is on the
    VM's console; the VM is removed after. ``--memory 256MB`` and the default disk
    size (4 GB: the guest grows the image's filesystem to it as it boots), as a user
    runs it."""
    start = time.monotonic()
    # -q: the VM's ID on stdout (no second CLI call competing with the boot for CPU)
    uid = ignite(root, "run", "-q", "-d", "testbox:latest", "--name", name, "--memory",
                 "256MB", *flags).stdout.strip()
    t = wait_file(root / "vm" / uid / "console.log", marker) - start
    ignite(root, "rm", "-f", name)
    return t


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def report(name: str, ours: list[float], base: list[float], unit: str = "s") -> None:
    mo, mb = median(ours), median(base)
    print(f"{name}: ignitevm median {mo:.3f}{unit}, baseline median {mb:.3f}{unit}, "
          f"ratio {mo / mb:.3f} (+{(mo - mb) * 1000:.0f} ms), n={len(ours)}")


def cleanup(root: Path) -> None:
    """Remove every VM of a bench root (also when the bench failed half-way),
    and every snapshot (with the spares they keep, which no listing shows)."""
    ids = ignite(root, "ps", "-a", "-q", check=False).stdout.split()
    if ids:
        ignite(root, "rm", "-f", *ids, check=False)
    snaps = ignite(root, "snapshot", "ls", "-q", check=False).stdout.split()
    if snaps:
        ignite(root, "snapshot", "rm", "-f", *snaps, check=False)
    subprocess.run(["rm", "-rf", str(root.parent)], check=False)


def run_bench(main: Callable[[Path], None]) -> None:
    """Run a bench in a fresh state root, and remove its VMs whatever happens."""
    root = temp_root()
    try:
        main(root)
    finally:
        cleanup(root)
