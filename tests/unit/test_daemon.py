"""ignited's pieces that need no VM: reading a manifest folder, durations."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ignitevm.daemon.main import _duration
from ignitevm.daemon.manifests import ManifestReader

VM_FILE = """apiVersion: ignite.weave.works/v1alpha4
kind: VM
metadata:
  name: {name}
  {uid}
spec:
  image:
    oci: base:latest
status:
  running: true
"""


def test_manifest_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text(VM_FILE.format(name="a", uid="uid: 0000000000000001"))
    (tmp_path / "sub" / "b.json").write_text(
        '{"apiVersion": "ignite.weave.works/v1alpha4", "kind": "VM", "metadata": '
        '{"name": "b", "uid": "0000000000000002"}, "spec": {"image": {"oci": "x"}}}')
    (tmp_path / "no-uid.yml").write_text(VM_FILE.format(name="c", uid=""))
    (tmp_path / "broken.yaml").write_text("kind: [")
    (tmp_path / "kernel.yaml").write_text(
        "apiVersion: ignite.weave.works/v1alpha4\nkind: Kernel\nmetadata:\n  name: k\n")
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.yaml").write_text(VM_FILE.format(name="g", uid="uid: 00000000000000ff"))
    reader = ManifestReader(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ignitevm"):
        found = reader.read()
        assert sorted(found) == ["0000000000000001", "0000000000000002"]
        assert found["0000000000000001"].status.running is True
        assert found["0000000000000002"].status.running is False
        warned = [r.getMessage() for r in caplog.records]
        assert any("no-uid.yml" in w and "uid not set" in w for w in warned)
        assert any("broken.yaml" in w for w in warned)
        caplog.clear()
        reader.read()  # the same files: no second warning
        assert not caplog.records


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("1m0s", 60), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("5", 5)])
def test_durations(text: str, seconds: float) -> None:
    assert _duration(text) == seconds


def test_restart_backoff(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ignitevm.daemon import reconcile
    from ignitevm.operations.context import Context

    clock = [1000.0]
    monkeypatch.setattr(reconcile.time, "monotonic", lambda: clock[0])
    rec = reconcile.Reconciler(Context(root=tmp_path), "dir:/x")
    uid = "0000000000000001"

    def start_now() -> bool:
        ok = rec._may_restart(uid, "vm")
        if ok:
            rec._started[uid] = clock[0]
        return ok

    assert start_now()                       # first start: at once
    clock[0] += 5                            # it stopped 5 s later
    assert not start_now()                   # -> wait 2 s
    clock[0] += 1
    assert not start_now()
    clock[0] += 1.5
    assert start_now()
    clock[0] += 1                            # stopped again soon -> wait 4 s
    assert not start_now()
    clock[0] += 4.1
    assert start_now()
    clock[0] += 120                          # ran for a while: at once again
    assert start_now()


def test_runtime_containerd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--runtime containerd (or the Configuration's spec.runtime) sends the images and
    kernels manifests name to containerd, as for `ignite create`; docker is refused."""
    import argparse

    from ignitevm.daemon.main import _context
    from ignitevm.errors import InvalidInput
    from ignitevm.images.containerd.options import ContainerdOptions

    monkeypatch.delenv("CONTAINERD_ADDRESS", raising=False)
    monkeypatch.delenv("CONTAINERD_NAMESPACE", raising=False)
    monkeypatch.delenv("IGNITE_ACCEL", raising=False)
    config = tmp_path / "config.yaml"
    config.write_text("apiVersion: ignite.weave.works/v1alpha4\nkind: Configuration\n"
                      "spec:\n  runtime: containerd\n  containerdSocket: /x.sock\n"
                      "  containerdNamespace: firecracker\n")

    def ctx(**kw: str | None) -> object:
        args = argparse.Namespace(root=str(tmp_path / "root"), accel=None, runtime=None,
                                  ignite_config=None, unpack_limit=None, sandbox=None)
        for k, v in kw.items():
            setattr(args, k, v)
        return _context(args)

    assert ctx().containerd is None  # type: ignore[attr-defined]
    assert ctx(runtime="containerd").containerd == ContainerdOptions(  # type: ignore[attr-defined]
        "/run/containerd/containerd.sock", "default")
    assert ctx(ignite_config=str(config)).containerd == ContainerdOptions(  # type: ignore[attr-defined]
        "/x.sock", "firecracker")
    with pytest.raises(InvalidInput, match="not available here"):
        ctx(runtime="docker")


def test_one_hostile_file_does_not_stop_the_pass(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """5,000 ``[`` in one file made the reader raise RecursionError, so every pass
    of ignited stopped before reconciling any VM: now that file is reported and
    skipped, and the VM of the next file is started (vms.start is replaced: no
    QEMU in the unit layer)."""
    from ignitevm.api.types import VM, ObjectMeta
    from ignitevm.daemon import reconcile
    from ignitevm.operations.context import Context

    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "a-hostile.yaml").write_text("[" * 5000)
    (folder / "b.yaml").write_text(VM_FILE.format(name="b", uid="uid: 0000000000000002"))
    source = f"dir:{folder}"
    ctx = Context(root=tmp_path / "root")
    have = VM(metadata=ObjectMeta(name="b", uid="0000000000000002",
                                  created="2000-01-01T00:00:00Z",
                                  annotations={reconcile.MANAGED_BY: source}))
    have.spec.image.oci = "base:latest"
    with ctx.store.creating(have):
        pass
    started: list[str] = []
    monkeypatch.setattr(reconcile.vms, "start",
                        lambda _ctx, vm: started.append(vm.metadata.uid) or vm)
    reader, rec = ManifestReader(folder), reconcile.Reconciler(ctx, source)
    with caplog.at_level(logging.WARNING, logger="ignitevm"):
        rec.sync(reader.read())  # ignited's pass, as daemon.main runs it
    assert started == ["0000000000000002"]
    said = [r.getMessage() for r in caplog.records]
    assert any("a-hostile.yaml" in w and "nested too deeply" in w for w in said), said


def test_any_failure_reading_one_file_skips_only_that_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Whatever reading one file raises (here a stand-in bug in the decoder), it is
    said once, on one line, and the other files are read."""
    from ignitevm.api import codec

    (tmp_path / "a.yaml").write_text(VM_FILE.format(name="a", uid="uid: 0000000000000001"))
    (tmp_path / "b.yaml").write_text(VM_FILE.format(name="b", uid="uid: 0000000000000002"))
    real = codec.load_manifest

    def load(text: str, source: str) -> dict:
        if source.endswith("a.yaml"):
            raise RuntimeError("a bug\nover two lines")
        return real(text, source)

    monkeypatch.setattr(codec, "load_manifest", load)
    reader = ManifestReader(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ignitevm"):
        assert list(reader.read()) == ["0000000000000002"]
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and "a.yaml" in said[0] and "RuntimeError: a bug over" in said[0]
        caplog.clear()
        reader.read()
        assert not caplog.records
