"""The KVM probe: its QEMU never outlives the CLI, and only definite answers last.

This host's /dev/kvm cannot boot a guest (a nested hypervisor: the probe always
ends in a timeout here), so the other outcomes are played by stand-ins: a fake
``qemu-system-x86_64`` on PATH that prints what a real one would and exits, or
a fake probe result."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ignitevm.providers.vmm.qemu import accel
from ignitevm.providers.vmm.qemu.accel import DEFINITE, TIMEOUT, UNCLEAR, Outcome

DEADLINE = 60.0  # generous: only a hang reaches it


def test_probe_qemu_dies_with_the_cli(tmp_path: Path) -> None:
    """A CLI killed with -9 mid-probe leaves no QEMU behind. QEMU is a stand-in
    here (a script that reports its pid and waits), because a real guest that
    hangs under KVM cannot be had on demand."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fifo = tmp_path / "pid.fifo"
    os.mkfifo(fifo)
    fake = bindir / "qemu-system-x86_64"
    fake.write_text(f"#!/bin/sh\necho $$ > {fifo}\nexec sleep 100000\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    cli = subprocess.Popen([sys.executable, "-c", "from pathlib import Path; "
                            "from ignitevm.providers.vmm.qemu.accel import probe_kvm; "
                            "probe_kvm(Path('/nonexistent'), None, deadline=100000)"], env=env)
    qemu = 0
    try:
        poller = select.poll()
        poller.register(reader, select.POLLIN)
        assert poller.poll(DEADLINE * 1000), "the probe never started its QEMU"
        qemu = int(os.read(reader, 64).decode())
        cli.send_signal(signal.SIGKILL)
        cli.wait()
        pidfd = os.pidfd_open(qemu)
        try:
            gone = select.poll()
            gone.register(pidfd, select.POLLIN)
            assert gone.poll(DEADLINE * 1000), "the probe's QEMU outlived the CLI"
        finally:
            os.close(pidfd)
        qemu = 0
    finally:
        os.close(reader)
        cli.kill()
        cli.wait()
        if qemu:
            os.kill(qemu, signal.SIGKILL)


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Outcome]:
    """Answers the probe gives, in order (a stand-in: a probe that times out under
    load cannot be had on demand); /dev/kvm taken as usable."""
    answers: list[Outcome] = []
    monkeypatch.setattr(accel, "kvm_usable", lambda: (True, ""))
    monkeypatch.setattr(accel, "probe_kvm", lambda kernel, initrd, **kw: answers.pop(0))
    (tmp_path / "vmlinux").write_bytes(b"\x7fELF")
    return answers


def test_a_timed_out_probe_is_tried_again_later(tmp_path: Path,
                                               probes: list[Outcome]) -> None:
    kernel, cache = tmp_path / "vmlinux", tmp_path / "cache"
    probes += [Outcome(False, "a guest did not reach its init within 20s", TIMEOUT),
               Outcome(True, "a guest booted in 0.4s", DEFINITE)]
    assert accel.choose(kernel, None, cache) == "tcg"
    assert accel.choose(kernel, None, cache) == "tcg"  # cached for a while: no probe
    (entry,) = (cache / "accel").iterdir()
    data = json.loads(entry.read_text())
    assert data["expires"] > time.time()
    data["expires"] = time.time() - 1  # the while is over
    entry.write_text(json.dumps(data))
    assert accel.choose(kernel, None, cache) == "kvm"
    assert "expires" not in json.loads(entry.read_text())
    assert probes == []


def test_repeated_timeouts_are_tried_again_less_often(
        tmp_path: Path, probes: list[Outcome]) -> None:
    kernel, cache = tmp_path / "vmlinux", tmp_path / "cache"
    for k in range(12):
        probes.append(Outcome(False, "a guest did not reach its init within 20s", TIMEOUT))
        before = time.time()
        assert accel.choose(kernel, None, cache) == "tcg"
        after = time.time()
        (entry,) = (cache / "accel").iterdir()
        data = json.loads(entry.read_text())
        want = min(accel.RETRY_AFTER * 2 ** k, accel.RETRY_MAX)  # 1 h, 2 h, 4 h ... a week
        assert data["expires"] - after <= want <= data["expires"] - before
        data["expires"] = 0  # as if that wait were over
        entry.write_text(json.dumps(data))
    assert probes == []


def test_a_definite_no_is_kept(tmp_path: Path, probes: list[Outcome]) -> None:
    kernel, cache = tmp_path / "vmlinux", tmp_path / "cache"
    probes += [Outcome(False, "QEMU said: failed to set MSR 0x10a", DEFINITE)]
    assert accel.choose(kernel, None, cache) == "tcg"
    (entry,) = (cache / "accel").iterdir()
    assert "expires" not in json.loads(entry.read_text())
    assert accel.choose(kernel, None, cache) == "tcg"


def test_the_answer_outlives_a_new_initramfs_but_not_a_new_qemu(
        tmp_path: Path, probes: list[Outcome],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The initramfs is rebuilt whenever the guest's sources change: that must
    not cost another probe (20 s where KVM never boots). Another QEMU or
    kernel asks again."""
    kernel, cache = tmp_path / "vmlinux", tmp_path / "cache"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    qemu = bin_dir / "qemu-system-x86_64"
    qemu.write_text("#!/bin/sh\n")
    qemu.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    probes += [Outcome(False, "QEMU said: failed to set MSR 0x10a", DEFINITE),
               Outcome(True, "a guest booted in 0.4s", DEFINITE),
               Outcome(True, "a guest booted in 0.5s", DEFINITE)]
    for k in range(3):
        initrd = tmp_path / f"initrd-{k}.img"  # (each guest build: its own file)
        initrd.write_bytes(b"x" * (k + 1))
        assert accel.choose(kernel, initrd, cache) == "tcg"
    assert len(probes) == 2
    qemu.write_text("#!/bin/sh\n# a QEMU upgrade\n")
    assert accel.choose(kernel, initrd, cache) == "kvm"
    kernel.write_bytes(b"\x7fELF another kernel")
    assert accel.choose(kernel, initrd, cache) == "kvm"
    assert probes == []


# What a QEMU (or the jail helper, or the guest) says, for the stand-in QEMU.
MARKER = 'echo "[    0.6] PCI: Fatal: No config space access function found"\n' \
         'echo "ignitevm-init: probe ok"\nexec sleep 100000\n'
PANIC = ('echo "[    0.9] Kernel panic - not syncing: VFS: Unable to mount root fs on '
         'unknown-block(0,0)"\nexit 0\n')  # panic=-1 and -no-reboot: QEMU exits
JAIL = 'echo "ignite-jail: mount: tmpfs root: Cannot allocate memory" >&2\nexit 125\n'
ENOMEM = ('echo "qemu-system-x86_64: -accel kvm: ioctl(KVM_CREATE_VM) failed: 12 Cannot '
          'allocate memory" >&2\n'
          'echo "qemu-system-x86_64: -accel kvm: failed to initialize kvm: Cannot allocate '
          'memory" >&2\nexit 1\n')
JAILED_NODE = ('echo "Could not access KVM kernel module: Permission denied" >&2\n'
               'echo "qemu-system-x86_64: -accel kvm: failed to initialize kvm: Permission '
               'denied" >&2\nexit 1\n')
KILLED = "kill -KILL $$\n"  # (the OOM killer, say)
LATE_ERROR = ('echo "[    0.4] Linux version 6.1.0"\n'
              'echo "KVM internal error. Suberror: 1" >&2\nkill -ABRT $$\n')
MSR = ('echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x2000000000" >&2\n'
       'echo "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3235: kvm_buf_set_msrs: '
       'Assertion \\`ret == cpu->kvm_msr_buf->nmsrs'"'"' failed." >&2\nkill -ABRT $$\n')
EINVAL = ('echo "qemu-system-x86_64: -accel kvm: failed to initialize kvm: Invalid argument" >&2'
          '\nexit 1\n')
HANG = "exec sleep 100000\n"


@pytest.fixture
def fake_qemu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A stand-in QEMU on PATH (no real KVM failure but this host's hang can be
    had here); it runs the shell text of the file returned, which a test
    rewrites to play another QEMU run. QEMU's own file, part of the cache key,
    stays as it is. /dev/kvm is taken as usable."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    act = tmp_path / "act.sh"
    act.write_text(HANG)
    fake = bindir / "qemu-system-x86_64"
    fake.write_text(f"#!/bin/sh\n. {act}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setattr(accel, "kvm_usable", lambda: (True, ""))
    (tmp_path / "vmlinux").write_bytes(b"\x7fELF")
    return act


@pytest.mark.parametrize("failure", [PANIC, JAIL, ENOMEM, JAILED_NODE, KILLED, LATE_ERROR],
                         ids=["guest-panic", "jail", "enomem", "jail-node", "killed",
                              "kvm-error-after-output"])
def test_a_failure_of_the_guest_jail_or_moment_is_not_kept(
        tmp_path: Path, fake_qemu: Path, failure: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe that ends early for a reason of the initramfs (not in the cache
    key), the jail or the moment says nothing of KVM: TCG for this start, with
    a warning, and once the cause is gone the next start probes and takes KVM."""
    kernel, cache = tmp_path / "vmlinux", tmp_path / "cache"
    warned: list[str] = []
    monkeypatch.setattr(accel.log, "warning", lambda msg, *a: warned.append(msg % a))
    fake_qemu.write_text(failure)
    assert accel.choose(kernel, None, cache, sandbox="none") == "tcg"
    assert len(warned) == 1 and "inconclusive" in warned[0], warned
    assert not list((cache / "accel").glob("*.json"))
    fake_qemu.write_text(MARKER)  # the cause fixed: a new initramfs, memory freed...
    assert accel.choose(kernel, None, cache, sandbox="none") == "kvm"
    fake_qemu.write_text(HANG)  # kept for good now: no probe
    assert accel.choose(kernel, None, cache, sandbox="none") == "kvm"


@pytest.mark.parametrize("refusal", [MSR, EINVAL], ids=["msr", "einval"])
def test_qemu_refusing_kvm_before_the_guest_runs_is_kept(tmp_path: Path, fake_qemu: Path,
                                                         refusal: str) -> None:
    """QEMU naming a KVM failure before the guest printed anything, with no
    errno that can pass: TCG for good (a second start does not probe)."""
    kernel, cache = tmp_path / "vmlinux", tmp_path / "cache"
    fake_qemu.write_text(refusal)
    assert accel.choose(kernel, None, cache, sandbox="none") == "tcg"
    (entry,) = (cache / "accel").iterdir()
    data = json.loads(entry.read_text())
    assert data["accel"] == "tcg" and "expires" not in data
    assert data["detail"].startswith("QEMU said: ")
    assert "MSR" in data["detail"] or "Invalid argument" in data["detail"]
    fake_qemu.write_text(MARKER)
    assert accel.choose(kernel, None, cache, sandbox="none") == "tcg"


def test_a_silent_hang_is_a_timeout(tmp_path: Path, fake_qemu: Path) -> None:
    """This host's KVM: the guest never prints a byte. It is kept only for a
    while (see test_a_timed_out_probe_is_tried_again_later), because a guest
    whose init hangs quietly looks just the same."""
    out = accel.probe_kvm(tmp_path / "vmlinux", None, deadline=0.5)
    assert out.kind == TIMEOUT and not out.works and "(no output)" in out.detail


@pytest.mark.parametrize("guest, said, returncode, kind", [
    (b"", b"KVM internal error. Suberror: 1\nRAX=0\n", None, DEFINITE),  # paused: a timeout
    (b"", b"KVM: entry failed, hardware error 0x80000021\n", None, DEFINITE),
    (b"", b"error: kvm run failed Cannot allocate memory\n", -6, UNCLEAR),
    (b"", b"qemu-system-x86_64: warning: kvm does not support MSR_x\n", None, TIMEOUT),
    (b"", b"ignite-jail: exec: /usr/bin/qemu-system-x86_64: kvm run failed\n", 125, UNCLEAR),
    (b"", b"", 0, UNCLEAR),  # reset before a word: nothing names KVM
    (b"Linux\n", b"", None, TIMEOUT),
])
def test_judge(guest: bytes, said: bytes, returncode: int | None, kind: str) -> None:
    assert accel.judge(guest, said, returncode, 20).kind == kind


@pytest.mark.parametrize("bad", [{"accel": "xen"}, {"accel": "kvm -device x"}, {"accel": ["kvm"]},
                                 {"accel": "kvm", "expires": "later"},
                                 {"accel": "kvm", "expires": None},
                                 {"accel": "kvm", "timeouts": "1"}, ["kvm"], "kvm"])
def test_a_malformed_cache_entry_is_probed_again(tmp_path: Path, probes: list[Outcome],
                                                 bad: object) -> None:
    kernel, cache = tmp_path / "vmlinux", tmp_path / "cache"
    probes += [Outcome(False, "QEMU said: failed to set MSR 0x10a", DEFINITE),
               Outcome(False, "QEMU said: failed to set MSR 0x10a", DEFINITE)]
    assert accel.choose(kernel, None, cache) == "tcg"
    (entry,) = (cache / "accel").iterdir()
    entry.write_text(json.dumps(bad))
    assert accel.choose(kernel, None, cache) == "tcg"
    assert probes == []
    assert json.loads(entry.read_text())["accel"] == "tcg"


def test_a_new_jail_helper_or_probe_format_asks_again(
        tmp_path: Path, probes: list[Outcome], monkeypatch: pytest.MonkeyPatch) -> None:
    """The jailed probe's answer is the jail helper's too (a helper whose
    mounts failed must not speak for a fixed one), and a new probe format
    does not take the old probe's answers."""
    from ignitevm.providers.sandbox import build

    kernel, cache = tmp_path / "vmlinux", tmp_path / "cache"
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # (the probe runs jailed)
    source = tmp_path / "jail.c"
    source.write_text("/* one */\n")
    monkeypatch.setattr(build, "SOURCE", source)
    probes += [Outcome(False, "QEMU said: failed to set MSR 0x10a", DEFINITE),
               Outcome(True, "a guest booted in 0.4s", DEFINITE),
               Outcome(False, "QEMU said: failed to set MSR 0x10a", DEFINITE)]
    assert accel.choose(kernel, None, cache) == "tcg"
    assert accel.choose(kernel, None, cache) == "tcg"  # kept
    source.write_text("/* two */\n")
    assert accel.choose(kernel, None, cache) == "kvm"
    monkeypatch.setattr(accel, "PROBE_FORMAT", accel.PROBE_FORMAT + 1)
    assert accel.choose(kernel, None, cache) == "tcg"
    assert probes == []


@pytest.mark.skipif(not accel.kvm_usable()[0] or not shutil.which("qemu-system-x86_64"),
                    reason="needs QEMU and an openable /dev/kvm")
def test_an_initramfs_too_big_for_the_probe_is_not_kept(tmp_path: Path) -> None:
    """The real QEMU, with KVM: an initramfs larger than the probe's memory
    stops it before the guest runs. That is the initramfs's fault (and it is
    not in the cache key): nothing is kept, the next start probes again."""
    kernel, cache, initrd = tmp_path / "bzImage", tmp_path / "cache", tmp_path / "initrd.img"
    header = bytearray(16384)  # a kernel's boot header, no more: QEMU stops before running it
    header[0x1F1] = 4  # setup sectors
    header[0x1FE:0x200] = b"\x55\xaa"
    header[0x202:0x208] = b"HdrS\x0f\x02"  # boot protocol 2.15
    header[0x211] = 1  # loaded high
    header[0x22C:0x230] = (0x7FFFFFFF).to_bytes(4, "little")  # initrd_addr_max
    kernel.write_bytes(header)
    with open(initrd, "wb") as f:
        f.truncate(200 << 20)  # (sparse) the probe has 128 MiB
    found = accel.probe_kvm(kernel, initrd)
    assert found.kind == UNCLEAR and "initrd is too large" in found.detail, found
    assert accel.choose(kernel, initrd, cache, sandbox="none") == "tcg"
    assert not list((cache / "accel").glob("*.json"))
