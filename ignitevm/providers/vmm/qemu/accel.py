"""Choose KVM or TCG by booting a real guest, never by assumption.

``/dev/kvm`` can exist and still be useless: a nested hypervisor may accept
the VM and then never run a stock kernel to its init. So the probe boots the
kernel and initramfs the VM will use, with KVM and a deadline, and takes KVM
only if our init reported in. The answer is cached per kernel, QEMU and host
(not per initramfs, which changes with the guest's sources): for
good when it is definite (the guest booted, or QEMU refused KVM), for an hour
when the probe only ran out of time (a busy host may do better later), then
for twice as long after each further timeout, up to a week (a host where KVM
never boots a guest pays the probe's deadline rarely).
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import subprocess
import time
from pathlib import Path

from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.log import log
from ignitevm.util.fs import atomic_write
from ignitevm.util.proc import spawn

PROBE_DEADLINE = 20.0
RETRY_AFTER = 3600.0  # seconds a timed-out probe's "use TCG" is kept, at first
RETRY_MAX = 7 * 86400.0
PROBE_MARKER = b"ignitevm-init: probe ok"


def kvm_usable() -> tuple[bool, str]:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, "/dev/kvm does not exist (no hardware virtualisation, or kvm not loaded)"
    except PermissionError:
        return False, "no permission to open /dev/kvm"
    except OSError as exc:
        return False, f"cannot open /dev/kvm: {exc.strerror}"
    os.close(fd)
    return True, ""


def host_tsc_khz() -> int | None:
    """The host TSC frequency; a TCG microvm guest cannot calibrate its own."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":", 1)[1]) * 1000)
    except (OSError, ValueError):
        pass
    return None


def kernel_args(accel: str) -> list[str]:
    if accel != "tcg":
        return []
    # cryptomgr.notests: the kernel's self-tests of its crypto algorithms cost
    # ~0.15-0.2 s of every boot under TCG (not in FIPS mode, where they run anyway).
    out = ["tsc=reliable", "cryptomgr.notests"]
    khz = host_tsc_khz()
    if khz:
        out.insert(0, f"tsc_early_khz={khz}")
    return out


def _cache_key(kernel: Path, jailed: bool) -> str:
    """What decides whether KVM boots a guest here: the kernel, the QEMU
    binary, the host (its kernel and CPU) and whether the probe is jailed. Not
    the initramfs: it is rebuilt whenever the guest's sources change, and our
    init only prints the probe's marker (a broken init fails every boot, not
    only KVM's)."""
    import shutil

    h = hashlib.sha256()
    qemu = shutil.which("qemu-system-x86_64")
    for path in (kernel, Path(os.path.realpath(qemu)) if qemu else None):
        if path is not None:
            st = path.stat()
            h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
    # (os.uname(), not platform.release(): its import costs ~5 ms)
    h.update(f"{os.uname().release}:{'jail' if jailed else 'none'}".encode())
    try:
        with open("/proc/cpuinfo") as f:
            h.update(next((line for line in f if line.startswith("model name")), "").encode())
    except OSError:
        pass
    return h.hexdigest()[:24]


def choose(kernel: Path, initrd: Path | None, cache: Path, force: str | None = None,
           sandbox: str = "jail") -> str:
    if force not in (None, "", "auto", "kvm", "tcg"):
        raise InvalidInput(f"invalid accelerator {force!r}", hint="use kvm, tcg or auto")
    if force == "tcg":
        return "tcg"
    ok, why = kvm_usable()
    if force == "kvm":
        if not ok:
            raise IgniteError(f"KVM was asked for but {why}", hint="use --accel tcg")
        return "kvm"
    if not ok:
        log.debug("using TCG: %s", why)
        return "tcg"
    jail_in = cache if sandbox != "none" and os.geteuid() == 0 else None
    cache_file = cache / "accel" / f"{_cache_key(kernel, jail_in is not None)}.json"
    timeouts = 0
    try:
        cached = json.loads(cache_file.read_text())
        if time.time() < float(cached.get("expires", "inf")):
            return str(cached["accel"])
        timeouts = int(cached.get("timeouts", 0))
    except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
        pass
    works, detail, definite = probe_kvm(kernel, initrd, jail_in=jail_in)
    accel = "kvm" if works else "tcg"
    log.info("KVM %s on this host (%s); using %s", "works" if works else "is not usable",
             detail, accel.upper())
    entry: dict[str, object] = {"accel": accel, "detail": detail}
    if not definite:
        entry["timeouts"] = timeouts + 1
        entry["expires"] = time.time() + min(RETRY_AFTER * 2 ** min(timeouts, 20), RETRY_MAX)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cache_file, json.dumps(entry))
    return accel


def probe_argv(kernel: Path, initrd: Path | None, jail_in: Path | None = None,
               accel: str = "kvm") -> list[str]:
    """The probe's command line; with ``jail_in`` (the cache folder holding the
    jail helper), confined as VMs are (its own uid, namespaces, no capabilities,
    no-new-privs, seccomp), dying with its caller."""
    cmd = ["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,isa-serial=on", "-nodefaults",
           "-no-user-config", "-display", "none", "-no-reboot", "-accel", accel, "-cpu",
           "host" if accel == "kvm" else "max",
           "-m", "128M", "-kernel", str(kernel), "-serial", "stdio",
           "-append", " ".join(["console=ttyS0 panic=-1 reboot=k ignite.probe=1 quiet",
                                *kernel_args(accel)])]
    if initrd is not None:
        cmd += ["-initrd", str(initrd)]
    if jail_in is None:
        return cmd
    from ignitevm.providers.sandbox import build, jail
    from ignitevm.providers.vmm.qemu import args
    from ignitevm.util.proc import which

    qemu = which(cmd[0])
    files = [kernel, *([initrd] if initrd is not None else [])]
    plan = jail.probe_plan(qemu, files, accel == "kvm")
    return [*plan.argv(build.helper(jail_in)), qemu, *cmd[1:], *args.sandbox("jail")]


def probe_kvm(kernel: Path, initrd: Path | None, deadline: float = PROBE_DEADLINE,
              jail_in: Path | None = None, accel: str = "kvm") -> tuple[bool, str, bool]:
    """Boot the kernel under KVM until our init reports in, or the deadline passes.
    Returns (KVM works, why, whether the answer is definite). The probe QEMU
    dies with this process, however it ends. ``jail_in``: see :func:`probe_argv`
    (``accel`` is for tests: the same probe under TCG)."""
    cmd = probe_argv(kernel, initrd, jail_in, accel)
    start = time.monotonic()
    output = b""
    with spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
               die_with_parent=True) as proc:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        try:
            while (left := start + deadline - time.monotonic()) > 0:
                if not sel.select(left):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                output = (output + chunk)[-65536:]  # a chatty guest: keep the end
                if PROBE_MARKER in output:
                    return True, f"a guest booted in {time.monotonic() - start:.1f}s", True
        finally:
            if proc.poll() is None:
                proc.kill()
    tail = output.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    if time.monotonic() - start >= deadline:
        return False, f"a guest did not reach its init within {deadline:.0f}s", False
    return False, f"QEMU said: {tail[0][:160]}", True
