"""An unconfined launch (``--sandbox=none``) with QEMU stood in for by a shell
(the real one runs in tests/vm): what the caller gives as ``on_spawn`` runs
while the started process still runs (a clone's host key is made beside
QEMU's start), and a start that fails says QEMU's last line."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ignitevm.errors import IgniteError
from ignitevm.providers.sandbox import build, jail
from ignitevm.providers.vmm.base import LaunchSpec
from ignitevm.providers.vmm.qemu import args, jailed
from ignitevm.providers.vmm.qemu.machine import QemuVMM


@pytest.fixture()
def workdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ign-ul-", dir="/tmp")) / "0123456789abcdef"
    d.mkdir()
    monkeypatch.setattr(build, "helper", lambda cache: Path("/bin/true"))
    monkeypatch.setattr(jail, "unconfined_argv", lambda helper, console: [])
    monkeypatch.setattr(jailed, "console_writer", lambda d, given: (9, 0, ""))
    yield d
    shutil.rmtree(d.parent)


def _launch(mp: pytest.MonkeyPatch, d: Path, script: str, on_spawn: object = None) -> None:
    spec = LaunchSpec(uid=d.name, workdir=d, kernel=Path("/k"), initrd=None, cmdline="",
                      cpus=1, memory_mib=64, disks=(), accel="tcg", sandbox="none",
                      cache=d.parent, on_spawn=on_spawn)  # type: ignore[arg-type]
    mp.setattr(args, "argv", lambda *a, **kw: ["sh", "-c", script])
    QemuVMM()._launch_unconfined(spec)


def test_on_spawn_runs_while_the_started_process_runs(workdir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    flag = workdir / "made-by-on-spawn"
    calls: list[int] = []

    def on_spawn() -> None:
        calls.append(os.getpid())
        flag.touch()

    # (the stand-in waits for the flag, then exits 0 as QEMU's first process does)
    _launch(monkeypatch, workdir, f"for i in $(seq 500); do [ -e {flag} ] && exit 0; "
                                  "sleep 0.01; done; exit 7", on_spawn)
    assert calls == [os.getpid()]
    assert (workdir / "qemu.cmdline").exists()


def test_a_start_that_fails_says_qemus_last_line(workdir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(IgniteError, match=r"QEMU failed to start: no such machine$"):
        _launch(monkeypatch, workdir, f"echo '{args.QEMU}: first' >&2; "
                                      f"echo '{args.QEMU}: no such machine' >&2; exit 1")


def test_without_on_spawn_a_launch_just_waits(workdir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _launch(monkeypatch, workdir, "exit 0")
