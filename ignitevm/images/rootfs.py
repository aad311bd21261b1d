"""Turn an unpacked root file system tree into the ext4 file that VMs boot from.

``mkfs.ext4 -d`` copies the tree into a new file system without mounting
anything, keeping owners, modes (setuid too), hard links, symlinks, device
nodes and extended attributes. The file is sized from the tree so that the
image is nearly full, like Ignite's ``image.ext4``: each VM's disk grows it to
the VM's own size. It is sparse, and mkfs leaves holes for what it does not
write (the journal and unused inode tables read as zeros).

While mkfs writes, the file's data is flushed to the disk every few
milliseconds (``fdatasync`` from a thread), so that the disk writes overlap
mkfs's own work and its closing ``fsync`` has little left to wait for; that
final ``fsync`` is still mkfs's (nothing is renamed over unsynced data).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ignitevm.errors import CommandError, IgniteError, InvalidInput
from ignitevm.log import log, step
from ignitevm.util.proc import run

BLOCK = 4096
INODE_SIZE = 256
MiB = 1 << 20
# Retries when mkfs runs out of room: the estimate is a little tight on purpose.
GROWTH = (1.0, 1.25, 1.6)
FLUSH_EVERY = 0.01  # seconds between flushes of the image while mkfs writes it


@dataclass
class TreeUsage:
    """What a tree needs in an ext4 file system with 4 KiB blocks."""

    blocks: int = 0  # data, directory, long-symlink and extent blocks
    inodes: int = 1  # the root directory


def measure(tree: Path) -> TreeUsage:
    """Count the blocks and inodes ``tree`` will take (hard links counted once)."""
    usage = TreeUsage()
    seen: set[tuple[int, int]] = set()
    pending = [os.fspath(tree)]
    while pending:
        path = pending.pop()
        dirent_bytes = 24  # "." and ".."
        with os.scandir(path) as it:
            for entry in it:
                dirent_bytes += 8 + ((len(os.fsencode(entry.name)) + 3) & ~3)
                st = entry.stat(follow_symlinks=False)
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                usage.inodes += 1
                if stat.S_ISREG(st.st_mode):
                    usage.blocks += _file_blocks(st)
                elif stat.S_ISDIR(st.st_mode):
                    pending.append(entry.path)
                elif stat.S_ISLNK(st.st_mode) and st.st_size >= 60:
                    usage.blocks += 1
        usage.blocks += -(-dirent_bytes * 11 // 10 // BLOCK) or 1
    return usage


def _file_blocks(st: os.stat_result) -> int:
    """Blocks a file takes in ext4: its data and extent blocks. A sparse file
    (unpacking leaves holes for runs of zeros, and mkfs copies holes as holes)
    counts by what it holds, not by its size, which an image may set as high as
    it likes."""
    size_blocks = -(-st.st_size // BLOCK)
    held = -(-st.st_blocks * 512 // BLOCK)
    if held >= size_blocks:
        return size_blocks + size_blocks // 32768  # one extent per 128 MiB
    return held + held // 300 + 1  # data and holes alternating: many short extents


def _journal_blocks(data_blocks: int) -> int:
    if data_blocks < 64 * MiB // BLOCK:
        return 4 * MiB // BLOCK
    if data_blocks < 1024 * MiB // BLOCK:
        return 16 * MiB // BLOCK
    return 64 * MiB // BLOCK


def plan(usage: TreeUsage, extra_bytes: int = 0, growth: float = 1.0) -> tuple[int, int, int]:
    """Return (file size in bytes, inode count, journal blocks) for a tree's usage."""
    inodes = int((usage.inodes * 5 // 4 + 256) * growth)
    journal = _journal_blocks(usage.blocks)
    blocks = usage.blocks + -(-inodes * INODE_SIZE // BLOCK) + journal
    # Superblocks, group descriptors, bitmaps, reserved GDT blocks; then a little headroom.
    blocks += blocks // 50 + 2 * MiB // BLOCK
    blocks = int(blocks * growth) + -(-extra_bytes // BLOCK)
    size = -(-blocks * BLOCK // MiB) * MiB
    return size, max(inodes, size // 16384), journal


def build_ext4(
    tree: Path, out: Path, *, extra_bytes: int = 0, label: str = "rootfs", uuid: str | None = None
) -> int:
    """Make ``out`` a sparse ext4 image holding ``tree``; return its size in bytes.

    ``extra_bytes`` adds free space on top of the (small) headroom. ``uuid``
    fixes the file system UUID (random otherwise). On failure ``out`` is removed.
    """
    if not tree.is_dir():
        raise IgniteError(f"cannot build a root file system from {tree}: not a directory")
    with step(f"measuring {tree}"):
        usage = measure(tree)
    st = tree.stat()
    owner = f"{st.st_uid}:{st.st_gid}"  # mkfs -d does not copy the root's owner by itself
    for attempt, growth in enumerate(GROWTH):
        size, inodes, journal = plan(usage, extra_bytes, growth)
        argv = [
            "mkfs.ext4", "-q", "-F", "-T", "default", "-b", str(BLOCK), "-I", str(INODE_SIZE),
            "-m", "0", "-N", str(inodes), "-J", f"size={journal * BLOCK // MiB}", "-L", label,
            "-E", f"lazy_itable_init=0,lazy_journal_init=1,root_owner={owner}",
            "-d", os.fspath(tree),
        ]  # fmt: skip
        if uuid is not None:
            argv += ["-U", uuid]
        _new_sparse(out, size)
        try:
            with step(f"mkfs.ext4 -d {tree} ({size // MiB} MiB, {inodes} inodes)"), \
                    flushing(out):
                run([*argv, os.fspath(out)])
            return size
        except CommandError as exc:
            with contextlib.suppress(FileNotFoundError):
                out.unlink()
            full = any(w in exc.stderr.lower() for w in ("allocate", "space", "no free"))
            if not full or attempt == len(GROWTH) - 1:
                raise
            log.debug("mkfs.ext4 ran out of room in %d MiB; trying a larger image", size // MiB)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def flushing(path: Path, every: float = FLUSH_EVERY) -> Iterator[None]:
    """While the block runs, flush what has been written to ``path`` to the disk every
    ``every`` seconds (the disk works while the writer does; the writer's own fsync at
    the end then finds little left). Errors are left to that fsync to report."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    done = threading.Event()

    def flush() -> None:
        while not done.wait(every):
            try:
                os.fdatasync(fd)
            except OSError:
                return

    flusher = threading.Thread(target=flush, name="mkfs-flush", daemon=True)
    flusher.start()
    try:
        yield
    finally:
        done.set()
        try:
            flusher.join()
        finally:  # (^C in the join: closed only once no fdatasync can be using it)
            if not flusher.is_alive():
                os.close(fd)


def _new_sparse(out: Path, size: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
    except OSError as exc:
        raise IgniteError(f"cannot create {out}: {exc.strerror}") from exc


def prepare_tree(tree: Path) -> None:
    """Give the tree what the guest init fills at boot.

    ``/etc`` must exist; ``/etc/resolv.conf`` becomes an empty regular file
    when it is missing, empty or a symlink (often to a file under /run that
    does not exist yet); ``/etc/hostname`` and ``/etc/hosts`` exist (empty is
    fine). Nothing is followed through a symlink: a tree whose /etc is a
    symlink is refused.
    """
    root = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            os.mkdir("etc", 0o755, dir_fd=root)
        except FileExistsError:
            pass
        try:
            etc = os.open("etc", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise InvalidInput(
                "the image's /etc is not a directory (it is a symlink or a file)",
                hint="fix the image so that /etc is a real directory",
            ) from None
        try:
            _ensure_file(etc, "resolv.conf", replace_links=True)
            _ensure_file(etc, "hostname")
            _ensure_file(etc, "hosts")
        finally:
            os.close(etc)
    finally:
        os.close(root)


def _ensure_file(dirfd: int, name: str, *, replace_links: bool = False) -> None:
    """Create ``etc/name`` empty unless it is a regular file (or a kept symlink)."""
    try:
        mode = os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if stat.S_ISREG(mode) or (stat.S_ISLNK(mode) and not replace_links):
            return
        if not stat.S_ISLNK(mode):
            raise InvalidInput(
                f"the image's /etc/{name} is not a regular file",
                hint=f"fix the image so that /etc/{name} is a file",
            )
        os.unlink(name, dir_fd=dirfd)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o644, dir_fd=dirfd)
    try:
        if os.geteuid() == 0:
            os.fchown(fd, 0, 0)
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
