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
from ignitevm.operations import spares
from ignitevm.operations.context import Context
from ignitevm.operations.snapshots import ANNOTATION
from ignitevm.store.layout import SPARE
from ignitevm.util.fs import flock
from tests.conftest import Ignite


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(root=tmp_path / "root", sandbox="none")


def _snapshot(ctx: Context, spare_count: int = 2) -> Snapshot:
    snap = Snapshot(metadata=ObjectMeta(name="snap", uid="5a5a5a5a5a5a5a5a",
                                        created="2000-01-01T00:00:00Z"))
    snap.spec.spares = spare_count
    snap.spec.network_plugin = "user"
    with ctx.store.creating(snap):
        pass
    return snap


def _spare(ctx: Context, snap: Snapshot, uid: str, *, pooled: bool,
           mode: str = "none user\n") -> Path:
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
    _spare(ctx, snap, "00000000000000a1", pooled=True)
    assert ctx.store.list(VM) == [] and ctx.store.damaged(VM) == []
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
    (spares.pool(ctx, snap) / "00000000000000ff").write_text("none user\n")  # (no folder)
    with flock(busy / ".lock"):
        spares.prune(ctx, snap, keep=snap.spec.spares)
    assert not dead.exists() and not orphan.exists()
    assert busy.exists() and theirs.exists()
    assert spares.ready(ctx, snap) == []
    spares.remove_all(ctx, snap)
    assert not busy.exists() and theirs.exists()


def test_a_run_passes_over_dead_spares_and_others_sandbox_modes(ctx: Context) -> None:
    snap = _snapshot(ctx)
    jailed = _spare(ctx, snap, "00000000000000a1", pooled=True, mode="jail user\n")
    dead = _spare(ctx, snap, "00000000000000a2", pooled=True)
    assert spares.claim(ctx, snap, name="x", labels=None, plugin="") is None
    assert not dead.exists() and jailed.exists()
    assert spares.ready(ctx, snap) == ["00000000000000a1"]


def test_bad_counts_are_refused(ctx: Context) -> None:
    from ignitevm.errors import InvalidInput

    for bad in (-1, spares.MAX + 1):
        with pytest.raises(InvalidInput, match="invalid number of spares"):
            spares.check_count(bad)
    snap = _snapshot(ctx, 0)
    assert spares.set_count(ctx, snap, 3).spec.spares == 3
    assert ctx.store.get(Snapshot, snap.metadata.uid).spec.spares == 3
