"""An unconfined launch (``--sandbox=none``) with QEMU stood in for by a shell
(the real one runs in tests/vm): what the caller gives as ``on_spawn`` runs
while the started process still runs (a clone's host key is made beside
QEMU's start), and a start that fails says QEMU's last line."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ignitevm.errors import IgniteError
from ignitevm.providers.sandbox import build, jail
from ignitevm.providers.vmm.base import LaunchSpec
from ignitevm.providers.vmm.qemu import args, jailed, machine
from ignitevm.providers.vmm.qemu.machine import QemuVMM
from ignitevm.util import proc
from tests.helpers.procstate import children, open_fds


@pytest.fixture()
def workdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ign-ul-", dir="/tmp")) / "0123456789abcdef"
    d.mkdir()
    monkeypatch.setattr(build, "helper", lambda cache: Path("/bin/true"))
    monkeypatch.setattr(jail, "unconfined_argv", lambda helper, console: [])
    monkeypatch.setattr(jailed, "console_writer", lambda d, given: (9, 0, ""))
    monkeypatch.setattr(proc, "which", lambda name: f"/usr/bin/{name}")
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
    calls: list[str] = []

    def on_spawn() -> None:
        calls.append("on_spawn")
        flag.touch()

    # (the stand-in waits for the flag, then exits 0 as QEMU's first process does)
    _launch(monkeypatch, workdir, f"for i in $(seq 500); do [ -e {flag} ] && exit 0; "
                                  "sleep 0.01; done; exit 7", on_spawn)
    assert calls == ["on_spawn"]  # (and the stand-in saw its flag: it exited 0)
    assert (workdir / "qemu.cmdline").exists()


def test_a_start_that_fails_says_qemus_last_line(workdir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(IgniteError, match=r"QEMU failed to start: no such machine$"):
        _launch(monkeypatch, workdir, f"echo '{args.QEMU}: first' >&2; "
                                      f"echo '{args.QEMU}: no such machine' >&2; exit 1")


def test_without_on_spawn_a_launch_just_waits(workdir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _launch(monkeypatch, workdir, "exit 0")


def test_an_on_spawn_that_raises_stops_the_start_and_keeps_nothing(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def on_spawn() -> None:
        raise RuntimeError("cannot start a thread")

    kids, fds = children(), open_fds()
    with pytest.raises(RuntimeError, match="cannot start a thread"):
        _launch(monkeypatch, workdir, "exec sleep 30", on_spawn)
    assert children() <= kids and open_fds() <= fds


def test_a_start_that_hangs_is_stopped_and_keeps_nothing(workdir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "LAUNCH_TIMEOUT", 0.3)
    kids, fds = children(), open_fds()
    with pytest.raises(IgniteError, match=r"QEMU did not start within 0\.3 s"):
        _launch(monkeypatch, workdir, "exec sleep 30")
    assert children() <= kids and open_fds() <= fds


def test_a_clones_host_key_is_made_in_line_when_no_thread_can_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What on_spawn does for a clone (clones.Restore._spawned) never stops
    its launch: without threads the key is made before RESTORE needs it."""
    from types import SimpleNamespace

    from ignitevm.operations import clones, sshkeys
    from ignitevm.util import background

    def no_thread(*a: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(background, "Background", no_thread)
    monkeypatch.setattr(clones, "_preload", no_thread)
    ctx = SimpleNamespace(store=SimpleNamespace(dir=lambda snap: tmp_path))
    snap = SimpleNamespace(spec=SimpleNamespace(cmd_line="", agent_channels=1))
    restore = clones.Restore(ctx, snap, None)  # type: ignore[arg-type]
    restore.host_key_later = True
    d = tmp_path / "0123456789abcdef"
    d.mkdir()
    restore.launch(d)["on_spawn"]()
    assert restore.host_key is None and restore.host_key_later
    restore.host_key_ready(d)
    assert (d / sshkeys.HOST_KEY).exists() and (d / f"{sshkeys.HOST_KEY}.pub").exists()
    assert not restore.host_key_later
