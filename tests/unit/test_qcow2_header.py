"""A qcow2 layer's header is checked before the host opens it: a VM's QEMU
(which a guest may have taken over) writes its overlay, header included, and a
header naming an external data file would make qemu-img or an unconfined QEMU
read and write any host file (real qemu-img and qemu-io make the images)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ignitevm.errors import IgniteError
from ignitevm.providers.vmm.base import Disk
from ignitevm.providers.vmm.qemu import qcow2

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None or shutil.which("qemu-io") is None,
                                reason="needs qemu-img and qemu-io (Debian's qemu-utils)")

MIB = 1 << 20


def _img(*argv: str) -> None:
    subprocess.run(["qemu-img", *argv], check=True, capture_output=True)


def _layers(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """The image, a parent layer holding 0x41s, a child naming ``victim`` as
    its data file, and the victim (a host file full of 0x56s)."""
    image, parent, child, victim = (tmp_path / n for n in
                                    ("image.raw", "parent.qcow2", "child.qcow2", "victim"))
    _img("create", "-q", "-f", "raw", str(image), "1M")
    _img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image), str(parent), "1M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x41 0 64k", str(parent)],
                   check=True, capture_output=True)
    _img("create", "-q", "-f", "qcow2", "-o", f"data_file={victim}", "-F", "qcow2",
         "-b", str(parent), str(child), "1M")
    victim.write_bytes(b"V" * MIB)  # (after: creating the layer made it anew)
    return image, parent, child, victim


def test_plain_overlay_passes(tmp_path: Path) -> None:
    image, parent, _, _ = _layers(tmp_path)
    assert qcow2.problem(parent) == ""
    qcow2.check_disks((Disk(parent, "ignite-root", "qcow2", backing=image),))


def test_external_data_file_is_refused(tmp_path: Path) -> None:
    _, _, child, _ = _layers(tmp_path)
    assert "external data file" in qcow2.problem(child)
    with pytest.raises(IgniteError, match="external data file"):
        qcow2.check(child)


def test_data_file_extension_without_the_feature_bit_is_refused(tmp_path: Path) -> None:
    _, _, child, _ = _layers(tmp_path)
    raw = bytearray(child.read_bytes())
    raw[72 + 7] &= ~qcow2.INCOMPAT_DATA_FILE & 0xFF  # clear the bit, keep the extension
    child.write_bytes(bytes(raw))
    assert "external data file" in qcow2.problem(child)


def test_not_qcow2_and_garbage_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 4096)
    assert qcow2.problem(junk) == "not a qcow2 image"
    endless = tmp_path / "endless.qcow2"
    _img("create", "-q", "-f", "qcow2", str(endless), "1M")
    raw = bytearray(endless.read_bytes())
    at = int.from_bytes(raw[100:104], "big")
    for k in range(qcow2.MAX_EXTENSIONS + 1):  # unknown extensions with no end marker
        raw[at + 8 * k:at + 8 * k + 8] = (0x1234).to_bytes(4, "big") + bytes(4)
    endless.write_bytes(bytes(raw))
    assert qcow2.problem(endless) != ""


def test_launch_refuses_a_layer_that_names_a_data_file(tmp_path: Path) -> None:
    image, parent, child, _ = _layers(tmp_path)
    with pytest.raises(IgniteError, match="external data file"):
        qcow2.check_disks((Disk(child, "ignite-root", "qcow2", backing=parent, chain=(image,)),))
    with pytest.raises(IgniteError, match="external data file"):  # as a middle layer
        qcow2.check_disks((Disk(parent, "ignite-root", "qcow2", backing=child, chain=(image,)),))


def test_flattening_a_clone_never_writes_the_named_host_file(tmp_path: Path) -> None:
    from ignitevm.operations.snapshots import _flatten

    image, parent, child, victim = _layers(tmp_path)
    with pytest.raises(IgniteError, match="external data file"):
        _flatten(child, parent, image)
    assert victim.read_bytes() == b"V" * MIB
