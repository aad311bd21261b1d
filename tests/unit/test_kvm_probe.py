"""The KVM probe: its QEMU never outlives the CLI, and only definite answers last."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ignitevm.providers.vmm.qemu import accel

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
def probes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[bool, str, bool]]:
    """Answers the probe gives, in order (a stand-in: a probe that times out under
    load cannot be had on demand); /dev/kvm taken as usable."""
    answers: list[tuple[bool, str, bool]] = []
    monkeypatch.setattr(accel, "kvm_usable", lambda: (True, ""))
    monkeypatch.setattr(accel, "probe_kvm", lambda kernel, initrd, **kw: answers.pop(0))
    (tmp_path / "vmlinux").write_bytes(b"\x7fELF")
    return answers


def test_a_timed_out_probe_is_tried_again_later(tmp_path: Path,
                                               probes: list[tuple[bool, str, bool]]) -> None:
    kernel, cache = tmp_path / "vmlinux", tmp_path / "cache"
    probes += [(False, "a guest did not reach its init within 20s", False),
               (True, "a guest booted in 0.4s", True)]
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
        tmp_path: Path, probes: list[tuple[bool, str, bool]]) -> None:
    kernel, cache = tmp_path / "vmlinux", tmp_path / "cache"
    for k in range(12):
        probes.append((False, "a guest did not reach its init within 20s", False))
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


def test_a_definite_no_is_kept(tmp_path: Path, probes: list[tuple[bool, str, bool]]) -> None:
    kernel, cache = tmp_path / "vmlinux", tmp_path / "cache"
    probes += [(False, "QEMU said: failed to set MSR 0x10a", True)]
    assert accel.choose(kernel, None, cache) == "tcg"
    (entry,) = (cache / "accel").iterdir()
    assert "expires" not in json.loads(entry.read_text())
    assert accel.choose(kernel, None, cache) == "tcg"


def test_the_answer_outlives_a_new_initramfs_but_not_a_new_qemu(
        tmp_path: Path, probes: list[tuple[bool, str, bool]],
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
    probes += [(False, "QEMU said: failed to set MSR 0x10a", True),
               (True, "a guest booted in 0.4s", True),
               (True, "a guest booted in 0.5s", True)]
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
