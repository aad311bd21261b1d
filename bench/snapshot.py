"""Snapshots and clones, against baselines measured in the same run:

- `ignite run --from-snapshot` -> `ignite exec -- true` answers, vs a cold
  `ignite run` -> `exec -- true` answers of the same image (goal <= 0.10x);
  clones unconfined (RAM from the snapshot's file) and jailed (from a sealed memfd);
  with the CPU each took until then (the CLIs', the VM's QEMU's), steadier than
  wall time on a loaded host;
- ten clones' QEMU RSS (and PSS, which splits shared pages fairly), each vs
  one cold-booted VM's (goal <= 0.5x);
- the same with a spare ready (`snapshot spares SNAP 1`: a clone started,
  warmed and paused ahead, which the run takes; each round waits for the
  pool to be made full again first, and the host to be quiet);
- `ignite snapshot create` of a 256 MiB guest (goal <= 1 s), with and
  without the shared-RAM template.

Usage: python -m bench.snapshot [rounds]
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

from bench.common import ignite, median, report, run_bench, wait_file
from tests.helpers.images import busybox_image

MEM = ("--memory", "256MB", "--size", "256MB")


def to_exec(root: Path, *run_args: str, cpu: list[tuple[float, float]] | None = None
            ) -> float:
    """Seconds from `ignite run ...` until `ignite exec vm -- true` has answered;
    ``cpu`` gets (the two CLIs' CPU, with what they waited for; the VM's QEMU
    CPU until then), in ms: on a host other jobs load, CPU moves less than wall
    time does."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    uid = ignite(root, "run", "-q", *run_args).stdout.strip()
    ignite(root, "exec", uid, "--", "true")
    took = time.monotonic() - start
    if cpu is not None:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        clis = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
        cpu.append((clis, qemu_cpu_ms(root, uid)))
    return took


def qemu_cpu_ms(root: Path, uid: str) -> float:
    """The CPU time (all threads) of VM ``uid``'s QEMU so far, in ms."""
    pid = int((root / "vm" / uid / "run" / "qemu.pid").read_text())
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e6


def cpu_line(name: str, got: list[tuple[float, float]]) -> str:
    clis, qemu = median([c for c, _ in got]), median([q for _, q in got])
    return f"{name}: CLIs {clis:.0f} ms + QEMU {qemu:.0f} ms = {clis + qemu:.0f} ms"


def mem_kib(root: Path, vm: str) -> tuple[int, int]:
    """(RSS, PSS) of the VM's QEMU in KiB."""
    uid = ignite(root, "inspect", "vm", vm, "-t", "{{.ObjectMeta.UID}}").stdout.strip()
    pid = int((root / "vm" / uid / "run" / "qemu.pid").read_text())
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def spare_rounds(root: Path, rounds: int
                 ) -> tuple[list[tuple[float, tuple[float, float]]],
                            list[tuple[float, tuple[float, float]]]]:
    """Clones taken from a pool of one spare, unconfined and jailed (a
    snapshot each: a pool's spares are made with one sandbox mode); each
    round waits for the pool to be full, then a second for the host to
    settle. (time, (CLIs' CPU, QEMU's CPU)) per round."""
    out: tuple[list[tuple[float, tuple[float, float]]], ...] = ([], [])
    for name, mode, got in (("spn", "none", out[0]), ("spj", "jail", out[1])):
        ignite(root, "snapshot", "create", "src", name)
        ignite(root, "snapshot", "spares", name, "1", f"--sandbox={mode}")
        for i in range(rounds):
            wait_spares(root, name)
            time.sleep(1.0)
            cpu: list[tuple[float, float]] = []
            took = to_exec(root, "--from-snapshot", name, "--name", f"{name}{i}",
                           f"--sandbox={mode}", cpu=cpu)
            got.append((took, cpu[0]))
            ignite(root, "rm", "-f", f"{name}{i}")
        ignite(root, "snapshot", "rm", "-f", name)
    return out


def wait_spares(root: Path, snap: str, timeout: float = 120.0) -> None:
    """Wait until the snapshot's pool is full (``snapshot ls``'s SPARES)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [line.split() for line in ignite(root, "snapshot", "ls").stdout.splitlines()]
        got = next(cols[-1] for cols in rows if cols[1:2] == [snap])
        ready, _, want = got.partition("/")
        if ready == want:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the spares of {snap} were not made within {timeout:.0f}s")
        time.sleep(0.2)


def main(root: Path) -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    ignite(root, "kernel", "import", "debian")
    ignite(root, "image", "import", str(busybox_image(root.parent / "testbox.tar")))
    net = ("--network-plugin", "user")
    # The source, and the snapshots' creation times.
    uid = ignite(root, "run", "-q", "testbox:latest", "--name", "src", *MEM, *net).stdout.strip()
    ignite(root, "exec", "src", "--", "true")
    # A settled source, as one saves a VM whose service is up: the image's init
    # has printed its last line, and the kernel's deferred link-state work
    # (run up to a second after the link came up) is done. A snapshot taken
    # amid them hands what is left of them to every clone (~50 ms of QEMU's
    # CPU under TCG in one measure, anything from 0 to that by the moment).
    wait_file(root / "vm" / uid / "console.log", b"DISK=")
    time.sleep(1.5)
    creates, plain = [], []
    for i in range(rounds):
        for shared, out in ((True, creates), (False, plain)):
            name = f"s{i}{'' if shared else 'p'}"
            flags = () if shared else ("--no-shared-memory",)
            start = time.monotonic()
            ignite(root, "snapshot", "create", "src", name, *flags)
            out.append(time.monotonic() - start)
            if i < rounds - 1:
                ignite(root, "snapshot", "rm", name)
    snap = f"s{rounds - 1}"
    cold, clone_none, clone_jail = [], [], []
    cpu_cold: list[tuple[float, float]] = []
    cpu_none: list[tuple[float, float]] = []
    cpu_jail: list[tuple[float, float]] = []
    for i in range(rounds):
        cold.append(to_exec(root, "testbox:latest", "--name", f"cold{i}", *MEM, *net,
                            cpu=cpu_cold))
        ignite(root, "rm", "-f", f"cold{i}")
        clone_none.append(to_exec(root, "--from-snapshot", snap, "--name", f"cn{i}",
                                  "--sandbox=none", cpu=cpu_none))
        ignite(root, "rm", "-f", f"cn{i}")
        clone_jail.append(to_exec(root, "--from-snapshot", snap, "--name", f"cj{i}",
                                  cpu=cpu_jail))
        ignite(root, "rm", "-f", f"cj{i}")
    spare_none, spare_jail = spare_rounds(root, rounds)
    report("run --from-snapshot (unconfined, shared RAM) -> exec vs cold run -> exec",
           clone_none, cold)
    report("run --from-snapshot (jailed) -> exec vs cold run -> exec", clone_jail, cold)
    report("run --from-snapshot taking a spare (unconfined) -> exec vs cold run -> exec",
           [t for t, _ in spare_none], cold)
    report("run --from-snapshot taking a spare (jailed) -> exec vs cold run -> exec",
           [t for t, _ in spare_jail], cold)
    print("CPU until exec answered (medians; CLIs: run + exec with the processes they "
          "waited for): " + "; ".join(cpu_line(n, c) for n, c in (
              ("unconfined clone", cpu_none), ("jailed clone", cpu_jail), ("cold", cpu_cold),
              ("spare taken, unconfined (QEMU: with its making ahead)",
               [c for _, c in spare_none]),
              ("spare taken, jailed (the same)", [c for _, c in spare_jail]))))
    print(f"snapshot create (256 MiB guest): median {median(creates):.3f}s with the RAM "
          f"template, {median(plain):.3f}s without; goal <= 1 s")

    # Memory: one cold-booted VM against ten clones.
    ignite(root, "run", "testbox:latest", "--name", "coldm", *MEM, *net)
    ignite(root, "exec", "coldm", "--", "true")
    base_rss, base_pss = mem_kib(root, "coldm")
    names = [f"m{i}" for i in range(10)]
    for n in names:
        ignite(root, "run", "--from-snapshot", snap, "--name", n, "--sandbox=none")
    ignite(root, "exec", names[-1], "--", "true")
    got = [mem_kib(root, n) for n in names]
    rss = sum(r for r, _ in got) / len(got)
    pss = sum(p for _, p in got) / len(got)
    total = sum(r for r, _ in got) / 1024
    print(f"ten unconfined clones: RSS {rss / 1024:.0f} MiB each ({total:.0f} MiB in all), "
          f"PSS {pss / 1024:.0f} MiB each; one cold-booted VM: RSS "
          f"{base_rss / 1024:.0f} MiB, PSS {base_pss / 1024:.0f} MiB; ratio RSS "
          f"{rss / base_rss:.2f}, PSS {pss / base_pss:.2f} (goal <= 0.5)")
    jailed = [f"j{i}" for i in range(10)]
    for n in jailed:
        ignite(root, "run", "--from-snapshot", snap, "--name", n)
    got = [mem_kib(root, n) for n in jailed]
    print(f"jailed clones (RAM from a sealed memfd): RSS "
          f"{sum(r for r, _ in got) / len(got) / 1024:.0f} MiB each")


if __name__ == "__main__":
    run_bench(main)
