"""Soak: many create/start/exec/cp/stop/rm cycles from concurrent workers, with faults.

Faults injected at random: the CLI killed with -9 in the middle of a command,
the VM's QEMU killed, the guest agent killed inside the guest, and the store's
filesystem filled up (the state root lives on a small loop-mounted ext4, when
this runs as root). Afterwards every command must still work, and the report
counts what leaked (processes, sockets, temp folders, mounts, network
namespaces, links, iptables rules, leases), what was lost or hidden (objects
the workers know of that ps does not show, damaged objects), and whether every
surviving VM answers exec. The run fails (exit 1) on any of these.

    python3 -m bench.soak                # 1,000 cycles, 4 workers
    python3 -m bench.soak --short        # the CI's cut: 12 cycles, 2 workers
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import REPO, cli_env

CLI = [sys.executable, "-m", "ignitevm"]
FAULTS = ("none", "kill-cli", "kill-qemu", "kill-agent", "disk-full")


def deck(cycles: int, seed: int) -> list[str]:
    """The cycles' faults: each kind as often as the others (so that even a short
    run has every one), in an order drawn from ``seed``."""
    faults = [FAULTS[i % len(FAULTS)] for i in range(cycles)]
    random.Random(seed).shuffle(faults)
    return faults


@dataclass
class Report:
    cycles: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # unexpected, after a clean cycle
    bad_errors: list[str] = field(default_factory=list)  # tracebacks instead of one line
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)
        print(f"soak: FAILURE {what}", file=sys.stderr, flush=True)


class Soak:
    def __init__(self, root: Path, image: str, network: str, report: Report,
                 faults: list[str]):
        self.root = root
        self.faults = faults
        self.image = image
        self.network = network
        self.report = report
        self.env = cli_env(root)
        # A disk-full episode runs alone (other workers' commands would fail by design).
        self.gate = Gate()
        # Filling the filesystem is only done to one made for the soak.
        self.can_fill = os.path.ismount(root.parent)

    # --- the CLI ------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        try:
            res = subprocess.run([*CLI, *args], env=self.env, capture_output=True, text=True,
                                 timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:  # (run() killed it)
            self.report.fail(f"ignite {' '.join(args)}: still running after {timeout:.0f}s")
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
            return subprocess.CompletedProcess(exc.cmd, 124, "", err)
        if "Traceback (most recent call last)" in res.stderr:
            with self.report.lock:
                self.report.bad_errors.append(f"ignite {' '.join(args)}: {res.stderr[-600:]}")
            print(f"soak: TRACEBACK ignite {' '.join(args)}: {res.stderr[-600:]}",
                  file=sys.stderr, flush=True)
        return res

    def must(self, *args: str) -> str:
        res = self.cli(*args)
        if res.returncode != 0:
            raise RuntimeError(f"ignite {' '.join(args)} failed: {res.stderr.strip()[-300:]}")
        return res.stdout

    def killed_cli(self, *args: str, rng: random.Random) -> None:
        """Run a command and kill it with -9 at a random moment."""
        proc = subprocess.Popen([*CLI, *args], env=self.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=rng.uniform(0.05, 2.5))
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()

    def uid(self, name: str) -> str | None:
        res = self.cli("inspect", "vm", name, "-t", "{{.ObjectMeta.UID}}")
        return (res.stdout.strip() or None) if res.returncode == 0 else None

    # --- one cycle -----------------------------------------------------------
    def cycle(self, worker: int, n: int, rng: random.Random, scratch: Path) -> None:
        name = f"soak-{worker}-{n}"
        with self.report.lock:
            fault = self.faults.pop()
            self.report.faults[fault] += 1
        create = ["create", self.image, "--name", name, "--memory", "192MB", "--size", "64MB",
                  "--network-plugin", self.network]
        try:
            if fault == "disk-full" and not self.can_fill:
                with self.report.lock:
                    self.report.faults["disk-full skipped (no own filesystem)"] += 1
                with self.gate.shared():
                    self.steps("none", create, name, rng, scratch)
            elif fault == "disk-full":
                with self.gate.alone():
                    self.fault_disk(create, name)
            else:
                with self.gate.shared():
                    self.steps(fault, create, name, rng, scratch)
        except RuntimeError as exc:
            self.report.fail(f"{name} ({fault}): {exc}")
        except Exception as exc:  # a fault in the bench itself: say it, go on
            self.report.fail(f"{name} ({fault}): soak error {type(exc).__name__}: {exc}")
        # Whatever happened, the VM must be removable.
        with self.gate.shared():
            res = self.cli("rm", "-f", name)
        if res.returncode != 0 and "can't find vm" not in res.stderr:
            self.report.fail(f"{name}: rm -f failed: {res.stderr.strip()[-300:]}")
        with self.report.lock:
            self.report.cycles += 1
            done = self.report.cycles
        # A line a cycle on stderr: a long run can be followed (and read if cut short).
        print(f"soak: cycle {done} done ({name}, {fault})", file=sys.stderr, flush=True)

    def steps(self, fault: str, create: list[str], name: str, rng: random.Random,
              scratch: Path) -> None:
        if fault == "kill-cli":
            step = rng.choice(("create", "start", "exec", "cp", "stop", "rm"))
            self.fault_cli(step, create, name, rng, scratch)
        else:
            self.must(*create)
            self.must("start", name)
            if fault == "kill-qemu":
                self.kill_qemu(name)
                time.sleep(rng.uniform(0, 0.3))
                line = [ln for ln in self.must("ps", "-a").splitlines()
                        if ln.rstrip().endswith(f" {name}")]
                if line and " Up " in line[0]:
                    self.report.fail(f"{name}: ps says Up after its QEMU was killed")
                self.must("start", name)  # it starts again
            self.must("exec", name, "--timeout", "60", "--", "true")
            src = scratch / "in.txt"
            src.write_text(f"{name}\n")
            self.must("cp", str(src), f"{name}:/tmp/in.txt")
            out = scratch / "out.txt"
            out.unlink(missing_ok=True)
            self.must("cp", f"{name}:/tmp/in.txt", str(out))
            if out.read_text() != f"{name}\n":
                self.report.fail(f"{name}: cp round trip changed the file")
            if fault == "kill-agent":
                # The guest (root in its VM) kills its agent: exec fails with one
                # line (checked for every command), stop still stops the VM.
                self.cli("exec", name, "--timeout", "10", "--", "sh", "-c",
                         "kill -9 $(/bin/busybox pidof ignite-agent)", timeout=120)
                if self.cli("exec", name, "--timeout", "5", "--", "true",
                            timeout=120).returncode == 0:
                    self.report.fail(f"{name}: exec worked with the guest's agent killed")
            self.must("stop", name, "--timeout", "5")

    def fault_cli(self, step: str, create: list[str], name: str, rng: random.Random,
                  scratch: Path) -> None:
        if step == "create":
            self.killed_cli(*create, rng=rng)
            self.recover(name)
            return
        self.must(*create)
        if step == "start":
            self.killed_cli("start", name, rng=rng)
            self.recover(name)
            return
        self.must("start", name)
        src = scratch / "big.bin"
        if not src.exists():
            src.write_bytes(os.urandom(8 << 20))
        args = {"exec": ("exec", name, "--", "sh", "-c", "sleep 1; true"),
                "cp": ("cp", str(src), f"{name}:/tmp/big.bin"),
                "stop": ("stop", name, "--timeout", "5"),
                "rm": ("rm", "-f", name)}[step]
        self.killed_cli(*args, rng=rng)
        if step in ("exec", "cp"):  # the VM must still serve the next client
            self.must("exec", name, "--timeout", "60", "--", "true")
        elif step == "stop":
            self.recover(name)

    def recover(self, name: str) -> None:
        """After a killed create/start/stop the VM is there or not (a create may
        have been killed before it made it); if it is, it starts and answers."""
        if self.uid(name) is None:
            return
        res = self.cli("start", name)
        if res.returncode != 0 and "already running" not in res.stderr:
            raise RuntimeError(f"start after a killed command failed: "
                               f"{res.stderr.strip()[-300:]}")
        self.must("exec", name, "--timeout", "60", "--", "true")

    def fault_disk(self, create: list[str], name: str) -> None:
        with filled(self.root):
            res = self.cli(*create)
            if res.returncode == 0:
                self.cli("start", name)
        # Room again: the VM (if it was made) must work or be removable.

    def kill_qemu(self, name: str) -> None:
        uid = self.uid(name)
        if uid:
            for pid in qemu_pids(self.root, uid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


class Gate:
    """Many shared holders, or one alone (a readers-writer lock)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.holders = 0
        self.closed = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self.cond:
            self.cond.wait_for(lambda: not self.closed)
            self.holders += 1
        try:
            yield
        finally:
            with self.cond:
                self.holders -= 1
                self.cond.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        with self.cond:
            self.cond.wait_for(lambda: not self.closed)
            self.closed = True
            self.cond.wait_for(lambda: self.holders == 0)
        try:
            yield
        finally:
            with self.cond:
                self.closed = False
                self.cond.notify_all()


@contextlib.contextmanager
def filled(root: Path) -> Iterator[None]:
    """Fill the filesystem holding ``root`` (leaving a few KiB), for as long as the block runs."""
    filler = root / "tmp-soak-filler"
    try:
        st = os.statvfs(root)
        free = st.f_bfree * st.f_frsize  # (root may use the reserved blocks too)
        with open(filler, "wb") as f, contextlib.suppress(OSError):
            os.posix_fallocate(f.fileno(), 0, max(free - (64 << 10), 0))
        yield
    finally:
        filler.unlink(missing_ok=True)


def qemu_pids(root: Path, uid: str = "") -> list[int]:
    from ignitevm.util.proc import pids_where

    needle = str(root / "vm" / uid).encode() if uid else str(root).encode()
    return pids_where("cmdline", lambda cmd: b"qemu-system" in cmd and needle in cmd)


# --- what the host holds for the soak's VMs once they are all gone ----------------
class Seen:
    """The IDs of every VM folder the soak's store held (looked at every 0.2 s: a
    VM's folder exists long before its first start makes anything on the host)."""

    def __init__(self, root: Path):
        self.root = root
        self.uids: set[str] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while True:
            self.look()
            if self.stopping.wait(0.2):
                return

    def look(self) -> None:
        with contextlib.suppress(OSError):
            self.uids.update(os.listdir(self.root / "vm"))

    def stop(self) -> set[str]:
        self.stopping.set()
        self.thread.join()
        self.look()
        return self.uids


def host_state(root: Path, uids: set[str]) -> dict[str, list[str]]:
    """What on the host names one of ``uids`` (network namespaces, links, iptables
    rules, CNI leases), and the mounts beneath ``root``. Other users of the host
    come and go meanwhile: only what names the soak's own VMs counts."""
    def ours(text: str) -> bool:
        return any(uid in text for uid in uids)

    def lines(cmd: list[str]) -> list[str]:
        if shutil.which(cmd[0]) is None:
            return []
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return sorted(ln for ln in res.stdout.splitlines() if ours(ln))

    leases = []
    for path in Path("/var/lib/cni/networks").glob("*/*"):
        with contextlib.suppress(OSError):
            if ours(path.name) or ours(path.read_text(errors="replace")):
                leases.append(str(path))
    netns = sorted(str(p) for p in Path("/run/netns").glob("*") if ours(p.name)) \
        if Path("/run/netns").is_dir() else []
    return {
        "links": lines(["ip", "-o", "link"]),
        "netns": netns,
        "iptables": lines(["iptables-save"]),
        "leases": sorted(leases),
        "mounts": [ln for ln in Path("/proc/mounts").read_text().splitlines()
                   if str(root) in ln and ln.split()[1] != str(root.parent)],
    }


def stale_locks(root: Path) -> list[str]:
    """Lock files of staging folders that are gone (a CLI killed in create): the
    store's next create sweeps those older than a minute (a younger one may be
    a creator's that has not yet locked it); not a leak."""
    tmp = root / "tmp"
    return sorted(str(p) for p in tmp.glob("*.lock") if not (tmp / p.name[:-5]).exists()) \
        if tmp.is_dir() else []


def leftovers(root: Path) -> dict[str, list[str]]:
    """What a store with no VMs must not hold: processes, sockets, temp folders."""
    stale = set(stale_locks(root))
    found: dict[str, list[str]] = {
        "qemu processes": [str(p) for p in qemu_pids(root)],
        "temp folders": sorted(str(p) for p in (root / "tmp").glob("*") if str(p) not in stale)
        if (root / "tmp").is_dir() else [],
        "vm folders": sorted(str(p) for p in (root / "vm").glob("*"))
        if (root / "vm").is_dir() else [],
        "sockets": [],
    }
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            path = Path(dirpath) / f
            with contextlib.suppress(OSError):
                if path.is_socket():
                    found["sockets"].append(str(path))
    return found


@contextlib.contextmanager
def store_root(small: bool) -> Iterator[Path]:
    """A state root; as root, on its own loop-mounted ext4 so that it can be filled."""
    base = Path(tempfile.mkdtemp(prefix="ignite-soak-"))
    mnt = base / "fs"
    mounted = False
    try:
        if small and os.geteuid() == 0 and shutil.which("mkfs.ext4"):
            img = base / "fs.img"
            with open(img, "wb") as f:
                f.truncate(1536 << 20)
            # -m 0: no blocks kept for root (the soak runs as root and must fill it)
            subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(img)], check=True)
            mnt.mkdir()
            subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
            mounted = True
        else:
            mnt.mkdir()
        yield mnt / "root"
    finally:
        for pid in qemu_pids(mnt):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def run(cycles: int, workers: int, network: str, seed: int, deb_cache: Path | None = None
        ) -> tuple[Report, dict[str, object]]:
    sys.path.insert(0, str(REPO))
    from tests.helpers.images import busybox_image

    report = Report()
    with store_root(small=True) as root, tempfile.TemporaryDirectory() as tmp:
        soak = Soak(root, "testbox:latest", network, report, deck(cycles, seed))
        if deb_cache is not None:  # (a run offline: apt-get download finds them there)
            debs = root / "cache" / "debs"
            debs.mkdir(parents=True)
            for deb in deb_cache.glob("*.deb"):
                shutil.copy(deb, debs)
        soak.must("kernel", "import", "debian")
        soak.must("image", "import", str(busybox_image(Path(tmp) / "testbox.tar")))
        seen = Seen(root)
        # A VM that runs through the whole soak: others' faults must not touch it.
        soak.must("run", "testbox:latest", "--name", "soak-keeper", "--memory", "192MB",
                  "--network-plugin", network)
        per_worker = [cycles // workers + (1 if w < cycles % workers else 0)
                      for w in range(workers)]

        def work(w: int) -> None:
            rng = random.Random(seed * 1000 + w)
            scratch = Path(tmp) / f"w{w}"
            scratch.mkdir()
            for n in range(per_worker[w]):
                soak.cycle(w, n, rng, scratch)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started

        # Every command still works; the survivor is reachable; nothing lost or hidden.
        listed = json.loads(soak.must("ps", "-a", "-o", "json") or "[]")
        names = sorted(v["metadata"]["name"] for v in listed)
        damaged = soak.cli("ps", "-a").stderr.count("is damaged")
        keeper_ok = soak.cli("exec", "soak-keeper", "--timeout", "60", "--",
                             "true").returncode == 0
        soak.must("rm", "-f", "soak-keeper")
        found = {**leftovers(root), **host_state(root, seen.stop())}
        leaks: dict[str, list[str]] = {k: v for k, v in found.items() if v}
        summary: dict[str, object] = {
            "cycles": report.cycles, "of cycles": cycles, "workers": workers,
            "seconds": round(elapsed, 1),
            "faults": dict(report.faults), "failures": report.failures,
            "tracebacks": report.bad_errors, "leaked": leaks,
            "objects lost or extra": [n for n in names if n != "soak-keeper"],
            "damaged objects": damaged, "survivor answers exec": keeper_ok,
            "stale lock files (swept later, not counted)": stale_locks(root),
        }
    return report, summary


def problems(summary: dict[str, object]) -> list[str]:
    """What makes a soak fail, one line each (none: a clean run)."""
    said = []
    if summary["cycles"] != summary["of cycles"]:
        said.append(f"only {summary['cycles']} of {summary['of cycles']} cycles ran")
    for key in ("failures", "tracebacks", "leaked", "objects lost or extra", "damaged objects"):
        if summary[key]:
            said.append(f"{key}: {summary[key]}")
    if not summary["survivor answers exec"]:
        said.append("the VM kept through the soak no longer answers exec")
    return said


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--short", action="store_true", help="12 cycles, 2 workers (CI)")
    parser.add_argument("--network-plugin", default="user")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--deb-cache", type=Path, metavar="DIR",
                        help="kernel .debs to seed the state root with (to run offline, "
                             "e.g. in a network namespace of its own)")
    opts = parser.parse_args(argv)
    if opts.short:
        opts.cycles, opts.workers = 12, 2
    _report, summary = run(opts.cycles, opts.workers, opts.network_plugin, opts.seed,
                           opts.deb_cache)
    print(json.dumps({"seed": opts.seed, **summary}, indent=2))
    ok = not problems(summary)
    print("soak:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
