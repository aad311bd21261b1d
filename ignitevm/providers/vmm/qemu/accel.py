"""Choose KVM or TCG by booting a real guest, never by assumption.

``/dev/kvm`` can exist and still be useless: a nested hypervisor may accept
the VM and then never run a stock kernel to its init. So the probe boots the
kernel and initramfs the VM will use, with KVM and a deadline, and takes KVM
only if our init reported in. The answer is cached per kernel, QEMU, host,
jail helper and probe format (not per initramfs, which changes with the
guest's sources), and how long depends on what the probe saw:

- the guest printed the probe's marker: KVM, for good;
- QEMU refused KVM before the guest printed anything, naming KVM in its
  error (a KVM init, vCPU, MSR or entry failure), with no errno that can
  pass (out of memory, busy, interrupted...) and no complaint of the jail:
  TCG, for good;
- the deadline passed: TCG for an hour (a busy host may do better later,
  and a guest that hangs quietly prints nothing either, so silence is not
  proof), then for twice as long after each further timeout, up to a week
  (a host where KVM never runs a guest, as ours, pays the deadline rarely);
- anything else (the guest panicked, the jail failed, QEMU died of a
  signal or of a passing shortage): TCG for this start only, with a
  warning. Such a failure is the initramfs's (not in the key), the jail's
  or the moment's: once fixed, it must not leave VMs on TCG.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import selectors
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.log import log
from ignitevm.util.fs import atomic_write
from ignitevm.util.proc import spawn

PROBE_DEADLINE = 20.0
RETRY_AFTER = 3600.0  # seconds a timed-out probe's "use TCG" is kept, at first
RETRY_MAX = 7 * 86400.0
PROBE_MARKER = b"ignitevm-init: probe ok"
# Part of the cache key: bump it when what the probe runs or how its outcome
# is read changes, so that answers of the old probe are not taken for new ones.
PROBE_FORMAT = 3  # (3: the TCG probe's CPU is args.TCG_CPU)
ACCELS = ("kvm", "tcg")


class Outcome(NamedTuple):
    works: bool  # the guest reached its init under KVM
    detail: str  # what was seen, for the log
    kind: str  # DEFINITE, TIMEOUT or UNCLEAR: how long the answer may be kept


DEFINITE, TIMEOUT, UNCLEAR = "definite", "timeout", "unclear"


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
    binary, the host (its kernel and CPU), the jail the probe runs in (its
    helper's source, from which the helper is built) and the probe's format.
    Not the initramfs: it is rebuilt whenever the guest's sources change, and
    our init only prints the probe's marker; a failure of its own (a panic,
    a hang) is never taken as a definite answer (see the module's docs)."""
    import shutil

    h = hashlib.sha256(f"probe-format:{PROBE_FORMAT}\0".encode())
    qemu = shutil.which("qemu-system-x86_64")
    for path in (kernel, Path(os.path.realpath(qemu)) if qemu else None):
        if path is not None:
            st = path.stat()
            h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
    # (os.uname(), not platform.release(): its import costs ~5 ms)
    h.update(f"{os.uname().release}:".encode())
    if jailed:
        from ignitevm.providers.sandbox import build

        h.update(b"jail:" + hashlib.sha256(build.SOURCE.read_bytes()).digest())
    else:
        h.update(b"none")
    try:
        with open("/proc/cpuinfo") as f:
            h.update(next((line for line in f if line.startswith("model name")), "").encode())
    except OSError:
        pass
    return h.hexdigest()[:24]


def _read_cache(path: Path) -> tuple[str | None, int]:
    """A cached answer still in force (``kvm`` or ``tcg``, else None) and the
    number of timeouts in a row it records. Anything malformed counts as no
    entry: the probe runs again."""
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, 0
    if not isinstance(entry, dict) or entry.get("accel") not in ACCELS:
        return None, 0
    timeouts = entry.get("timeouts", 0)
    if type(timeouts) is not int or timeouts < 0:
        return None, 0
    if "expires" not in entry:
        return str(entry["accel"]), timeouts
    expires = entry["expires"]
    if type(expires) not in (int, float) or expires != expires:  # (NaN)
        return None, 0
    return (str(entry["accel"]) if time.time() < expires else None), timeouts


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
    cached, timeouts = _read_cache(cache_file)
    if cached is not None:
        return cached
    found = probe_kvm(kernel, initrd, jail_in=jail_in)
    accel = "kvm" if found.works else "tcg"
    if found.kind == UNCLEAR:
        log.warning("the KVM probe was inconclusive (%s): using TCG for now, "
                    "the next start probes again", found.detail)
        return accel
    log.info("KVM %s on this host (%s); using %s", "works" if found.works else "is not usable",
             found.detail, accel.upper())
    entry: dict[str, object] = {"accel": accel, "detail": found.detail}
    if found.kind == TIMEOUT:
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
    from ignitevm.providers.vmm.qemu.args import TCG_CPU

    cmd = ["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,isa-serial=on", "-nodefaults",
           "-no-user-config", "-display", "none", "-no-reboot", "-accel", accel, "-cpu",
           "host" if accel == "kvm" else TCG_CPU,
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


# QEMU's own words (7.2) when KVM cannot run the guest: at KVM's or a vCPU's
# set-up, writing the boot MSRs (an assertion follows), or entering the guest.
# (Patterns compiled where a probe is judged, not at import: every start
# imports this module, a clone's before its QEMU starts.)
_KVM_FAILURE = (
    r"failed to initialize kvm|KVM_CREATE_VM|kvm version|kvm does not support|"
    r"Missing KVM capability|kvm_init_vcpu|failed to set MSR|kvm_buf_set_msrs|"
    r"KVM internal error|KVM: entry failed|kvm run failed|KVM: exception|"
    r"KVM: unknown exit")
# errnos that say "not now" or "not in this jail" rather than "not on this
# host": an answer that carries one is not definite.
_PASSING = (
    r"Cannot allocate memory|Resource temporarily unavailable|Interrupted system call|"
    r"Too many open files|Device or resource busy|No space left on device|"
    r"No such file or directory|Permission denied|Operation not permitted|"
    r"Bad file descriptor")
JAIL_PREFIX = "ignite-jail:"


def judge(guest: bytes, qemu: bytes, returncode: int | None, waited: float) -> Outcome:
    """What a probe that never printed the marker says: ``guest`` is what came
    on the serial console, ``qemu`` what QEMU (and the jail helper) wrote to
    stderr, ``returncode`` None when it was still running at the deadline
    (``waited`` seconds)."""
    said = [line.strip() for line in qemu.decode(errors="replace").splitlines() if line.strip()]
    printed = [line.strip() for line in guest.decode(errors="replace").splitlines()
               if line.strip()]
    jail = next((line for line in said if line.startswith(JAIL_PREFIX)), None)
    failure, passing = re.compile(_KVM_FAILURE, re.I), re.compile(_PASSING, re.I)
    refusal = next((line for line in said if failure.search(line)
                    and "warning" not in line.lower()), None)
    if jail is not None:
        return Outcome(False, f"the probe's jail failed: {jail[:160]}", UNCLEAR)
    if refusal is not None and not guest and not any(passing.search(line) for line in said):
        return Outcome(False, f"QEMU said: {refusal[:160]}", DEFINITE)
    if returncode is None:
        return Outcome(False, f"a guest did not reach its init within {waited:.0f}s"
                       + ("" if guest else " (no output)"), TIMEOUT)
    last = (said or printed or ["no output"])[-1]  # QEMU's words first, else the guest's
    how = f"exit status {returncode}" if returncode >= 0 else f"signal {-returncode}"
    return Outcome(False, f"QEMU ended ({how}) before the guest's init: {last[:160]}", UNCLEAR)


def probe_kvm(kernel: Path, initrd: Path | None, deadline: float = PROBE_DEADLINE,
              jail_in: Path | None = None, accel: str = "kvm") -> Outcome:
    """Boot the kernel under KVM until our init reports in, or the deadline
    passes, and judge the outcome (see :func:`judge`). The probe QEMU dies
    with this process, however it ends. ``jail_in``: see :func:`probe_argv`
    (``accel`` is for tests: the same probe under TCG)."""
    cmd = probe_argv(kernel, initrd, jail_in, accel)
    start = time.monotonic()
    end = start + deadline
    out = {"guest": b"", "qemu": b""}
    with spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
               die_with_parent=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, "guest")
        sel.register(proc.stderr, selectors.EVENT_READ, "qemu")
        returncode: int | None = None
        try:
            while sel.get_map() and (left := end - time.monotonic()) > 0:
                for key, _ in sel.select(left):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    out[key.data] = (out[key.data] + chunk)[-65536:]  # a chatty guest: the end
                    if key.data == "guest" and PROBE_MARKER in out["guest"]:
                        took = time.monotonic() - start
                        return Outcome(True, f"a guest booted in {took:.1f}s", DEFINITE)
            if not sel.get_map():  # both closed: QEMU has ended, or is ending
                try:
                    returncode = proc.wait(max(0.0, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        finally:
            sel.close()
            if proc.poll() is None:
                proc.kill()
    return judge(out["guest"], out["qemu"], returncode, deadline)
