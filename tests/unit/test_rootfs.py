"""Building ext4 images from trees (mkfs.ext4 -d) and preparing trees for the guest."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ignitevm.errors import InvalidInput
from ignitevm.images.rootfs import build_ext4, measure, plan, prepare_tree

needs_e2fsprogs = pytest.mark.skipif(
    shutil.which("mkfs.ext4", path="/usr/sbin:/sbin:" + os.environ.get("PATH", "")) is None,
    reason="e2fsprogs is not installed",
)


def e2(*argv: str) -> str:
    env = {**os.environ, "PATH": "/usr/sbin:/sbin:" + os.environ.get("PATH", "")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def debugfs(img: Path, request: str) -> str:
    return e2("debugfs", "-R", request, str(img))


def superblock(img: Path) -> dict[str, str]:
    out = {}
    for line in e2("dumpe2fs", "-h", str(img)).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def test_prepare_tree_on_an_empty_tree(tmp_path: Path) -> None:
    prepare_tree(tmp_path)
    for name in ("resolv.conf", "hostname", "hosts"):
        path = tmp_path / "etc" / name
        assert path.is_file() and not path.is_symlink()
        assert path.stat().st_size == 0


def test_prepare_tree_keeps_content_and_replaces_resolv_link(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hostname").write_text("image\n")
    (tmp_path / "etc/hosts").symlink_to("/run/hosts")
    (tmp_path / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    prepare_tree(tmp_path)
    assert (tmp_path / "etc/hostname").read_text() == "image\n"
    assert (tmp_path / "etc/hosts").is_symlink()
    resolv = tmp_path / "etc/resolv.conf"
    assert resolv.is_file() and not resolv.is_symlink() and resolv.read_text() == ""
    resolv.write_text("nameserver 10.0.0.1\n")
    prepare_tree(tmp_path)
    assert resolv.read_text() == "nameserver 10.0.0.1\n"


def test_prepare_tree_refuses_an_etc_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "etc").symlink_to(outside)
    with pytest.raises(InvalidInput, match="/etc is not a directory"):
        prepare_tree(tree)
    assert list(outside.iterdir()) == []


def make_tree(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    (root / "bin/busybox").write_bytes(os.urandom(300_000))
    os.chmod(root / "bin/busybox", 0o4755)
    os.link(root / "bin/busybox", root / "bin/ls")
    (root / "bin/sh").symlink_to("busybox")
    (root / "home/user").mkdir(parents=True)
    os.chown(root / "home/user", 1000, 1000)
    for i in range(20):
        sub = root / "usr/share" / f"d{i}"
        sub.mkdir(parents=True)
        for j in range(100):
            (sub / f"file-{j}").write_text("x" * j)
    (root / "long-link").symlink_to("/" + "very-long-target/" * 10)


@needs_e2fsprogs
def test_build_ext4(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_tree(tree)
    prepare_tree(tree)
    img = tmp_path / "image.ext4"
    uuid = "2d9b7d9c-7b5b-4d3e-9a43-2f1a3a0b9e11"
    size = build_ext4(tree, img, uuid=uuid)
    assert size == img.stat().st_size and size % (1 << 20) == 0
    e2("e2fsck", "-fn", str(img))

    listing = debugfs(img, "ls -l /bin")
    assert "busybox" in listing and "sh" in listing
    stat_busybox = debugfs(img, "stat /bin/busybox")
    assert "Mode:  04755" in stat_busybox and "Links: 2" in stat_busybox
    assert 'Fast link dest: "busybox"' in debugfs(img, "stat /bin/sh")
    assert "User:  1000" in debugfs(img, "stat /home/user")
    assert "resolv.conf" in debugfs(img, "ls -l /etc")

    sb = superblock(img)
    assert sb["Filesystem UUID"] == uuid
    assert sb["Filesystem volume name"] == "rootfs"
    assert sb["Block size"] == "4096"
    # Nearly full: the free space is the small headroom, not a multiple of the content.
    free = int(sb["Free blocks"]) * 4096
    assert free < 8 << 20, free


@needs_e2fsprogs
def test_build_ext4_tiny_tree_and_extra_space(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    small = build_ext4(tree, tmp_path / "a.ext4")
    e2("e2fsck", "-fn", str(tmp_path / "a.ext4"))
    bigger = build_ext4(tree, tmp_path / "b.ext4", extra_bytes=50 << 20)
    assert bigger >= small + (50 << 20)
    assert int(superblock(tmp_path / "b.ext4")["Free blocks"]) * 4096 >= 50 << 20


def test_plan_grows_with_inodes_and_data() -> None:
    usage = measure(Path(__file__).parent)
    size, inodes, journal = plan(usage)
    assert inodes >= usage.inodes and size > usage.blocks * 4096 + journal * 4096
    bigger, more_inodes, _ = plan(usage, growth=1.5)
    assert bigger > size and more_inodes > inodes


def test_flushing_syncs_the_file_while_it_is_written_and_stops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While mkfs writes the image, its data goes to the disk from a thread (mkfs's own
    final fsync stays what makes it durable); the thread and its descriptor end with the
    block, and a file that cannot be opened is left to the writer."""
    import threading

    from ignitevm.images import rootfs

    out = tmp_path / "image"
    out.write_bytes(b"")
    synced: list[int] = []
    seen = threading.Event()
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        real(fd)
        assert os.fstat(fd).st_ino == out.stat().st_ino
        synced.append(fd)
        seen.set()

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    fds = len(os.listdir("/proc/self/fd"))
    with rootfs.flushing(out, every=0.001):
        out.write_bytes(b"data" * 1024)
        assert seen.wait(30)  # (a liveness bound, not a timing limit)
    count = len(synced)
    assert count and not any(t.name == "mkfs-flush" for t in threading.enumerate())
    assert len(os.listdir("/proc/self/fd")) == fds
    with rootfs.flushing(tmp_path / "missing"):
        pass
    assert len(synced) == count
