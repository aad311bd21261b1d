"""A clone's disk layer is the bytes qemu-img makes, copied from a template
qemu-img made once per snapshot (operations/clones.py: _layer)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ignitevm.errors import IgniteError
from ignitevm.operations import clones

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

SIZE = 256 << 20


def _base(tmp_path: Path) -> Path:
    snap = tmp_path / "snapshot"
    snap.mkdir()
    base = snap / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), str(SIZE)], check=True)
    return base


def test_layers_are_qemu_imgs_bytes(tmp_path: Path) -> None:
    base = _base(tmp_path)
    want = tmp_path / "want.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(base), "-o", "cluster_size=65536", str(want), str(SIZE)], check=True)
    for name in ("a.qcow2", "b.qcow2"):   # (the first makes the template, the second copies)
        clones._layer(base, tmp_path / name, SIZE)
        assert (tmp_path / name).read_bytes() == want.read_bytes()
    templates = list(base.parent.glob(".layer-*"))
    assert len(templates) == 1 and templates[0].suffix == ".qcow2"
    # another size: another template
    clones._layer(base, tmp_path / "c.qcow2", SIZE * 2)
    assert len(list(base.parent.glob(".layer-*"))) == 2


def test_never_overwrites_nor_follows_links(tmp_path: Path) -> None:
    base = _base(tmp_path)
    clones._layer(base, tmp_path / "a.qcow2", SIZE)
    with pytest.raises(IgniteError, match="File exists"):
        clones._layer(base, tmp_path / "a.qcow2", SIZE)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "link.qcow2").symlink_to(victim)
    with pytest.raises(IgniteError, match="File exists"):
        clones._layer(base, tmp_path / "link.qcow2", SIZE)
    assert victim.read_text() == "keep"


def test_a_template_that_is_not_a_small_file_is_refused(tmp_path: Path) -> None:
    base = _base(tmp_path)
    clones._layer(base, tmp_path / "a.qcow2", SIZE)
    template = next(base.parent.glob(".layer-*"))
    template.unlink()
    template.mkdir()
    with pytest.raises(IgniteError):
        clones._layer(base, tmp_path / "b.qcow2", SIZE)
    assert not (tmp_path / "b.qcow2").exists()


def test_missing_base(tmp_path: Path) -> None:
    with pytest.raises(IgniteError, match="missing"):
        clones._layer(tmp_path / "nope.qcow2", tmp_path / "a.qcow2", SIZE)


def test_a_template_a_crash_left_empty_is_made_again(tmp_path: Path) -> None:
    """It is never synced: after a power loss it can be empty or cut short."""
    base = _base(tmp_path)
    clones._layer(base, tmp_path / "a.qcow2", SIZE)
    template = next(base.parent.glob(".layer-*"))
    for damage in (b"", b"QFI\xfb"):
        template.write_bytes(damage)
        out = tmp_path / f"b{len(damage)}.qcow2"
        clones._layer(base, out, SIZE)
        assert out.read_bytes() == (tmp_path / "a.qcow2").read_bytes()
