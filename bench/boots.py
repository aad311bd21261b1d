"""Many cold boots in a row: hangs and the boot-time spread, against raw QEMU.

Each boot is a new VM (`ignite run -q -d` of the test image) timed from the
command until the image's init prints its ready line on the console, then
removed. A boot with no ready line within the deadline is a hang (its
console tail is printed); a guest that dies first is a failure. A raw QEMU
baseline (the same kernel, initramfs, kernel command line, disk image and
accelerator, started by hand) runs interleaved in the same run, so both see
the same load. Exit status 1 on any hang or failure.

    python3 -m bench.boots                 # 200 boots, a baseline every 5th
    python3 -m bench.boots --count 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import cleanup, ignite, temp_root

MARKER = b"TEST-READY"
POLL = 0.01


def wait_ready(log: Path, alive: Callable[[], bool], deadline: float) -> str:
    """Read ``log`` as it grows until the ready line: "ready", "hang" (deadline
    passed) or "died" (the guest's QEMU exited, or the kernel panicked)."""
    f = None
    seen = b""
    try:
        while True:
            if f is None:
                with contextlib.suppress(FileNotFoundError):
                    f = open(log, "rb")  # noqa: SIM115 (closed below)
            chunk = f.read() if f is not None else b""
            if chunk:
                seen = seen[-64:] + chunk
                if MARKER in seen:
                    return "ready"
                if b"Kernel panic" in seen:
                    return "died"
            elif not alive():
                return "died"
            if time.monotonic() > deadline:
                return "hang"
            time.sleep(POLL)
    finally:
        if f is not None:
            f.close()


def tail(path: Path, n: int = 25) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(os.fstat(f.fileno()).st_size - 16384, 0))
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(no console log: {exc})"
    return "\n".join(text.splitlines()[-n:])


def pid_alive(folder: Path) -> bool:
    """Is the VM's QEMU alive (its pid file in the VM's folder or a folder of it)?"""
    try:
        pid = int(next(folder.rglob("qemu.pid")).read_text())
    except (StopIteration, OSError, ValueError):
        return True  # not written yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Boots:
    def __init__(self, root: Path, timeout: float):
        self.root = root
        self.timeout = timeout
        self.hangs: list[str] = []
        self.died: list[str] = []

    def ours(self, i: int) -> float | None:
        name = f"boot{i}"
        start = time.monotonic()
        res = ignite(self.root, "run", "-q", "-d", "testbox:latest", "--name", name,
                     "--memory", "256MB", "--size", "256MB", check=False)
        try:
            if res.returncode != 0:
                self.died.append(f"{name}: ignite run failed: {res.stderr.strip()[-300:]}")
                return None
            folder = self.root / "vm" / res.stdout.strip()
            state = wait_ready(folder / "console.log", lambda: pid_alive(folder),
                               start + self.timeout)
            return self.outcome(name, state, start, folder / "console.log")
        finally:
            ignite(self.root, "rm", "-f", name, check=False)

    def raw(self, i: int, argv: list[str], work: Path, image: Path) -> float | None:
        disk, log = work / "disk.qcow2", work / "console.log"
        disk.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        str(image), str(disk), "256M"], check=True)
        cmd = [*argv, "-serial", f"file:{log}"]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            state = wait_ready(log, lambda: proc.poll() is None, start + self.timeout)
            return self.outcome(f"raw{i}", state, start, log)
        finally:
            proc.kill()
            proc.wait()

    def outcome(self, name: str, state: str, start: float, log: Path) -> float | None:
        if state == "ready":
            return time.monotonic() - start
        what = "no ready line" if state == "hang" else "the guest died"
        msg = f"{name}: {what} after {time.monotonic() - start:.1f}s; console tail:\n" \
              f"{tail(log)}"
        print(msg, file=sys.stderr, flush=True)
        (self.hangs if state == "hang" else self.died).append(msg)
        return None


def raw_argv(root: Path, uid: str, work: Path) -> list[str]:
    """Raw QEMU on what ignitevm gave the VM ``uid``: its kernel, initramfs, kernel
    command line, accelerator and memory; no agent, console socket, QMP or network."""
    folder = root / "vm" / uid
    words = next(folder.rglob("qemu.cmdline")).read_text().split("\n")
    words = words[next(i for i, w in enumerate(words) if "qemu-system" in Path(w).name):]

    def after(flag: str) -> str:
        return words[words.index(flag) + 1]

    cpu = ["-cpu", after("-cpu")] if "-cpu" in words else []
    shutil.copy(next(folder.rglob("config.tar")), work / "config.tar")
    return [words[0], "-M", after("-M"), "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-accel", after("-accel"), *cpu, "-smp", "1", "-m", after("-m"),
            "-kernel", after("-kernel"), "-initrd", after("-initrd"),
            "-append", after("-append"),
            "-drive", f"id=d0,file={work / 'disk.qcow2'},format=qcow2,if=none",
            "-device", "virtio-blk-device,drive=d0,serial=ignite-root",
            "-drive", f"id=d1,file={work / 'config.tar'},format=raw,if=none,readonly=on",
            "-device", "virtio-blk-device,drive=d1,serial=ignite-cfg"]


def stats(xs: list[float]) -> dict[str, float | int]:
    if not xs:
        return {"n": 0}
    p95 = statistics.quantiles(xs, n=20, method="inclusive")[18] if len(xs) > 1 else xs[0]
    return {"n": len(xs), "median": round(statistics.median(xs), 3), "p95": round(p95, 3),
            "min": round(min(xs), 3), "max": round(max(xs), 3)}


def run(count: int, every: int, timeout: float) -> dict[str, object]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.helpers.images import busybox_image

    root = temp_root()
    try:
        ignite(root, "kernel", "import", "debian")
        ignite(root, "image", "import", str(busybox_image(root.parent / "testbox.tar")))
        image = next((root / "image").glob("*/image.ext4"))
        # A warm-up boot (page cache, accelerator probe) that also gives the baseline's
        # command line; it is not counted.
        uid = ignite(root, "run", "-q", "-d", "testbox:latest", "--name", "warm",
                     "--memory", "256MB", "--size", "256MB").stdout.strip()
        bench = Boots(root, timeout)
        wait_ready(root / "vm" / uid / "console.log", lambda: True, time.monotonic() + timeout)
        work = root.parent / "raw"
        work.mkdir()
        argv = raw_argv(root, uid, work)
        ignite(root, "rm", "-f", "warm")
        ours: list[float] = []
        base: list[float] = []
        started = time.monotonic()
        for i in range(count):
            if every and i % every == 0:
                t = bench.raw(i, argv, work, image)
                if t is not None:
                    base.append(t)
            t = bench.ours(i)
            if t is not None:
                ours.append(t)
            said = "FAILED" if t is None else f"{t:.2f}s"
            print(f"boot {i + 1}/{count}: {said}", file=sys.stderr, flush=True)
        summary: dict[str, object] = {
            "boots": count, "hangs": len(bench.hangs), "failures": len(bench.died),
            "seconds": round(time.monotonic() - started, 1),
            "accel": argv[argv.index("-accel") + 1],
            "ignitevm": stats(ours), "raw qemu": stats(base)}
        if ours and base:
            mo, mb = statistics.median(ours), statistics.median(base)
            summary["median overhead"] = f"+{(mo - mb) * 1000:.0f} ms ({mo / mb:.3f}x)"
        if bench.died:
            summary["failed"] = [m.splitlines()[0] for m in bench.died]
        return summary
    finally:
        cleanup(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="boots of ignitevm (default 200)")
    parser.add_argument("--baseline-every", type=int, default=5, metavar="N",
                        help="one raw QEMU boot before every Nth (default 5; 0: none)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to the ready line before a boot counts as a hang")
    opts = parser.parse_args(argv)
    summary = run(opts.count, opts.baseline_every, opts.timeout)
    print(json.dumps(summary, indent=2))
    return 1 if summary["hangs"] or summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
