"""Spares on disk (operations/spares.py), without a guest: a spare's folder is
neither listed nor reported damaged; dead spares, orphans of killed
processes and a pool's surplus are removed while a spare being made or
taken (its lock held) is left alone; a run passes over a dead spare and
over those made with another sandbox mode. Taking a live spare (QMP, the
agent) is tested on real VMs: tests/vm/test_snapshot.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from ignitevm.api.types import VM, ObjectMeta, Snapshot
from ignitevm.operations import sparefill, spares
from ignitevm.operations.context import Context
from ignitevm.operations.snapshots import ANNOTATION
from ignitevm.store.layout import SPARE
from ignitevm.util.fs import flock
from tests.conftest import Ignite
from tests.helpers.fakeqemu import fake_qemu


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(root=tmp_path / "root", sandbox="none")


def _snapshot(ctx: Context, spare_count: int = 2) -> Snapshot:
    snap = Snapshot(metadata=ObjectMeta(name="snap", uid="5a5a5a5a5a5a5a5a",
                                        created="2000-01-01T00:00:00Z"))
    snap.spec.spares, snap.spec.spares_sandbox = spare_count, "none"
    snap.spec.network_plugin = "user"
    with ctx.store.creating(snap):
        pass
    return snap


def _spare(ctx: Context, snap: Snapshot, uid: str, *, pooled: bool,
           mode: str = "none") -> Path:
    vm = VM(metadata=ObjectMeta(uid=uid, created="2000-01-01T00:00:00Z",
                                annotations={ANNOTATION: snap.metadata.uid}))
    with ctx.store.creating(vm, record=SPARE):
        pass
    if pooled:
        spares.pool(ctx, snap).mkdir(exist_ok=True)
        (spares.pool(ctx, snap) / uid).write_text(mode)
    return ctx.store.kind_dir(VM) / uid


def test_a_spare_is_neither_listed_nor_damaged(ctx: Context, tmp_path: Path) -> None:
    snap = _snapshot(ctx)
    folder = _spare(ctx, snap, "00000000000000a1", pooled=True)
    _spare(ctx, snap, "00000000000000a2", pooled=True)  # (dead: not counted)
    other = _spare(ctx, snap, "00000000000000a3", pooled=True, mode="jail")
    assert ctx.store.list(VM) == [] and ctx.store.damaged(VM) == []
    with fake_qemu(folder), fake_qemu(other):  # (another sandbox mode: not counted)
        assert spares.ready(ctx, snap) == ["00000000000000a1"]
        ig = Ignite(ctx.root)
        assert ig("ps", "-a", "-q").stdout == ""
        assert ig("snapshot", "ls").stdout.split()[-1] == "1/2"


def test_dead_spares_orphans_and_surplus_are_removed_busy_ones_kept(ctx: Context) -> None:
    snap = _snapshot(ctx)
    dead = _spare(ctx, snap, "00000000000000a1", pooled=True)    # (no QEMU: dead)
    orphan = _spare(ctx, snap, "00000000000000a2", pooled=False)  # (its maker killed)
    busy = _spare(ctx, snap, "00000000000000a3", pooled=False)    # (being made or taken)
    other = Snapshot(metadata=ObjectMeta(name="other", uid="6b6b6b6b6b6b6b6b"))
    theirs = _spare(ctx, other, "00000000000000b1", pooled=False)  # (another snapshot's)
    (spares.pool(ctx, snap) / "00000000000000ff").write_text("none")  # (no folder)
    live = _spare(ctx, snap, "00000000000000a4", pooled=True)
    with fake_qemu(live) as qemu:
        with flock(busy / ".lock"):
            spares.prune(ctx, snap, keep=1)
        assert not dead.exists() and not orphan.exists()
        assert busy.exists() and theirs.exists() and live.exists()
        assert spares.ready(ctx, snap) == ["00000000000000a4"]
        spares.prune(ctx, snap, keep=0)  # (past the count: removed, its QEMU ended)
        assert not live.exists() and spares.ready(ctx, snap) == []
        qemu.wait(timeout=30)
    spares.remove_all(ctx, snap)
    assert not busy.exists() and theirs.exists()
    assert not list(spares.pool(ctx, snap).iterdir())


def test_a_run_passes_over_dead_spares_and_others_sandbox_modes(ctx: Context) -> None:
    """Dead ones stay for a fill to remove (a run does not wait for that);
    a fill removes those made with another sandbox mode than the snapshot's."""
    snap = _snapshot(ctx)
    jailed = _spare(ctx, snap, "00000000000000a1", pooled=True, mode="jail")
    dead = _spare(ctx, snap, "00000000000000a2", pooled=True)
    assert spares.claim(ctx, snap, name="x", labels=None) is None
    assert dead.exists() and jailed.exists() and spares.ready(ctx, snap) == []
    ctx.sandbox = "jail"  # (a run confined otherwise than the pool's spares takes none)
    assert spares.claim(ctx, snap, name="x", labels=None) is None
    spares.prune(ctx, snap, keep=2)
    assert not dead.exists() and not jailed.exists()


def test_bad_counts_are_refused(ctx: Context) -> None:
    from ignitevm.errors import InvalidInput

    for bad in (-1, sparefill.MAX + 1):
        with pytest.raises(InvalidInput, match="invalid number of spares"):
            sparefill.check_count(bad)
    snap = _snapshot(ctx, 0)
    ctx.sandbox = "jail"
    assert sparefill.set_count(ctx, snap, 3).spec.spares == 3
    got = ctx.store.get(Snapshot, snap.metadata.uid).spec
    assert (got.spares, got.spares_sandbox) == (3, "jail")


def test_a_warm_up_that_never_ends_is_cut_off(ctx: Context, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A guest whose ``true`` never exits and whose agent answers every PING
    (a hostile image, or a replaced agent) holds a new spare WARM_TIMEOUT
    seconds in all, not for good: the spare is made all the same."""
    import time

    from ignitevm.operations import vms
    from tests.helpers.fakeguest import FakeGuest, Stall

    monkeypatch.setattr(spares, "WARM_TIMEOUT", 1.0)
    vm = VM(metadata=ObjectMeta(uid="00000000000000a1"))
    with FakeGuest(tmp_path / "agent.sock", lambda *_: [Stall()]) as guest:
        monkeypatch.setattr(vms, "AgentPorts", lambda *_: guest)
        start = time.monotonic()
        spares._warm(ctx, vm, tmp_path)
        took = time.monotonic() - start
    assert 1.0 <= took < 10, took


def test_the_daemon_starts_fills_and_a_running_fill_is_not_doubled(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pass of ignited starts a fill for a snapshot short of spares (as
    after the host's restart, when every spare is dead); no second process
    is started while one fills (it looks again before it ends)."""
    import subprocess

    from ignitevm.daemon.reconcile import Reconciler
    from ignitevm.operations.snapshots import folder
    from ignitevm.util.fs import flock

    started: list[list[str]] = []
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **_: started.append(argv))
    snap = _snapshot(ctx, 1)
    _spare(ctx, snap, "00000000000000a1", pooled=True)  # (dead)
    Reconciler(ctx, "test").sync({})
    assert len(started) == 1 and started[0][1:4] == ["-P", "-m", "ignitevm.operations.sparefill"]
    assert started[0][4:6] == [str(ctx.root), snap.metadata.uid]
    with flock(folder(ctx, snap) / sparefill.FILL_LOCK):
        Reconciler(ctx, "test").sync({})
    assert len(started) == 1
    (folder(ctx, snap) / sparefill.FAILED).touch()  # (a fill failed just now: a minute's rest)
    sparefill.fill_later(ctx, snap)
    assert len(started) == 1
