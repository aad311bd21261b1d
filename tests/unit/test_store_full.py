"""A full disk under the store: one error line, no traceback, nothing half-made."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ignitevm.api.types import VM, ObjectMeta
from ignitevm.store import Store
from tests.conftest import Ignite


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only), unmounted at the end whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(where: Path) -> None:
    """Take every free byte of the file system."""
    fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def _one_error_line(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "no space left" in errors[0], stderr


def test_metadata_write_on_a_full_disk(small_fs: Path) -> None:
    root = small_fs / "root"
    with Store(root).creating(VM(metadata=ObjectMeta(name="web", uid="a" * 16,
                                                     created="2000-01-01T00:00:00Z"))):
        pass
    _fill(small_fs)
    res = Ignite(root)("stop", "web", check=False)  # marks it stopped: a metadata write
    assert res.returncode == 1
    _one_error_line(res.stderr)
    assert not [n for n in os.listdir(root / "vm" / ("a" * 16)) if n.endswith(".tmp")]
    assert Store(root).get(VM, "a" * 16).metadata.name == "web"


def test_kernel_import_on_a_full_disk(small_fs: Path, tmp_path: Path) -> None:
    from tests.unit.test_kernel_oci import bzimage

    kernel = tmp_path / "vmlinuz-big"
    kernel.write_bytes(bzimage("6.1.0") + b"\0" * (2 << 20))
    root = small_fs / "root"
    res = Ignite(root)("kernel", "import", str(kernel), check=False)
    assert res.returncode == 1
    _one_error_line(res.stderr)
    assert [n for n in os.listdir(root / "tmp") if not n.endswith(".lock")] == []
    assert os.listdir(root / "kernel") == []


def _write_capped(path: str) -> None:
    import resource
    import signal

    from ignitevm.util.fs import atomic_write

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))  # a write past it is cut short
    try:
        atomic_write(Path(path), b"new" * 2000)
    except OSError:
        os._exit(3)
    os._exit(0)


def test_atomic_write_never_keeps_a_short_file(tmp_path: Path) -> None:
    import multiprocessing

    target = tmp_path / "metadata.json"
    target.write_bytes(b"old")
    p = multiprocessing.get_context("fork").Process(target=_write_capped, args=(str(target),))
    p.start()
    p.join()
    assert p.exitcode == 3
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["metadata.json"]
