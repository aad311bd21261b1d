"""The jailed launch's own bookkeeping, with the jail helper and QEMU stood in
for (the real pair runs in tests/vm/test_sandbox.py): ignited launches VMs in
its own process, so a launch must leave no fd of its own open, and the pid
file is written as soon as the helper reports the pid (a CLI killed while
QEMU starts must leave a QEMU that ps, stop and kill find)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from ignitevm.errors import IgniteError
from ignitevm.providers.vmm.base import LaunchSpec
from ignitevm.providers.vmm.qemu import args, jailed
from tests.helpers.procstate import open_fds


@pytest.fixture()
def fake_jail(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    if os.geteuid() != 0:
        pytest.skip("a jailed launch needs root")
    d = Path(tempfile.mkdtemp(prefix="ign-jl-", dir="/tmp")) / "0123456789abcdef"
    (d / args.RUN_DIR).mkdir(parents=True)
    state = SimpleNamespace(dir=d, greeted=True, pid_seen_at_greeting=None, events=[])

    class Plan:
        pid_fd = -1

        def _replace(self, **kw: object) -> Plan:
            self.pid_fd = int(kw["pid_fd"])  # type: ignore[call-overload]
            return self

        def argv(self, helper: str) -> list[str]:
            return ["ignite-jail"]

    @contextlib.contextmanager
    def spawn(cmd: list[str], **kw: object) -> Iterator[SimpleNamespace]:
        os.write(plan.pid_fd, f"{os.getpid()}".encode())  # (the helper reports QEMU's pid)
        state.events.append("spawned")
        yield SimpleNamespace(wait=lambda: state.events.append("exited") or 0)

    def greeted(qmp: Path) -> bool:
        state.pid_seen_at_greeting = (d / args.PIDFILE).exists()
        return state.greeted

    plan = Plan()
    monkeypatch.setattr(jailed, "which", lambda name: "/usr/bin/qemu-system-x86_64")
    monkeypatch.setattr(jailed, "plan", lambda spec, qemu: plan)
    monkeypatch.setattr(jailed.build, "helper", lambda cache: "/usr/lib/ignite-jail")
    monkeypatch.setattr(jailed.args, "argv", lambda *a, **kw: ["qemu"])
    monkeypatch.setattr(jailed, "spawn", spawn)
    monkeypatch.setattr(jailed, "_greeted", greeted)
    monkeypatch.setattr(jailed, "_release", lambda name: None)
    yield state
    shutil.rmtree(d.parent)


def _spec(d: Path) -> LaunchSpec:
    return LaunchSpec(uid=d.name, workdir=d, kernel=Path("/k"), initrd=None, cmdline="",
                      cpus=1, memory_mib=64, disks=(), accel="tcg", cache=d.parent)


def test_a_jailed_launch_keeps_no_fd_and_writes_the_pid_first(fake_jail: SimpleNamespace
                                                               ) -> None:
    before = open_fds()
    for _ in range(3):
        jailed.launch(_spec(fake_jail.dir))
    assert open_fds() <= before
    assert fake_jail.pid_seen_at_greeting is True
    assert (fake_jail.dir / args.PIDFILE).read_text().strip() == str(os.getpid())


def test_a_failed_jailed_launch_keeps_no_fd_and_no_pid_file(fake_jail: SimpleNamespace
                                                             ) -> None:
    fake_jail.greeted = False
    before = open_fds()
    with pytest.raises(IgniteError, match="QEMU failed to start"):
        jailed.launch(_spec(fake_jail.dir))
    assert open_fds() <= before
    assert not (fake_jail.dir / args.PIDFILE).exists()


def test_on_spawn_runs_once_between_the_spawn_and_the_wait(fake_jail: SimpleNamespace) -> None:
    spec = _spec(fake_jail.dir)._replace(on_spawn=lambda: fake_jail.events.append("on_spawn"))
    jailed.launch(spec)
    assert fake_jail.events == ["spawned", "on_spawn", "exited"]
