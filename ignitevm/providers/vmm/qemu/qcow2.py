"""Checking a qcow2 layer's header before QEMU or qemu-img opens it.

A VM's qcow2 overlay is written by its QEMU, which a guest may have taken
over (jailed, but free to write its own disk file, header included). A
header can name an *external data file*: any path, which QEMU or qemu-img
then opens and reads or writes the guest's clusters in. Opened by the host
(qemu-img as root, a snapshot flattened, a clone or VM run unconfined), that
is any host file. Backing files are always named by the host, so only what
the header alone decides is checked here: the format, encryption, and no
external data file (the feature bit, or its header extension).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.errors import IgniteError

if TYPE_CHECKING:
    from ignitevm.providers.vmm.base import Disk

MAGIC = b"QFI\xfb"
V2_HEADER = 72
INCOMPAT_DATA_FILE = 1 << 2
EXT_END = 0
EXT_DATA_FILE = 0x44415441
MAX_EXTENSIONS = 64  # QEMU writes a handful


def is_qcow2(path: Path) -> bool:
    """Whether the file starts as a qcow2 image does."""
    with open(path, "rb", buffering=0) as f:
        return f.read(4) == MAGIC


def check(path: Path) -> None:
    """Refuse a qcow2 layer whose header would make its reader open another
    file than the ones the host names (or that is not a plain qcow2)."""
    why = problem(path)
    if why:
        raise IgniteError(f"the disk layer {path} cannot be used: {why}",
                          hint="its VM's QEMU wrote it: the VM may be compromised; "
                               "remove the VM (or snapshot) it belongs to")


def problem(path: Path) -> str:
    """What is wrong with the header ('' when nothing)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        head = os.pread(fd, 4096, 0)
        if len(head) < V2_HEADER or head[:4] != MAGIC:
            return "not a qcow2 image"
        version, = struct.unpack_from(">I", head, 4)
        crypt, = struct.unpack_from(">I", head, 32)
        if version not in (2, 3):
            return f"qcow2 version {version}"
        if crypt != 0:
            return "an encrypted qcow2 image"
        ext_at = V2_HEADER
        if version == 3:
            if len(head) < 104:
                return "a truncated qcow2 header"
            incompat, = struct.unpack_from(">Q", head, 72)
            length, = struct.unpack_from(">I", head, 100)
            if incompat & INCOMPAT_DATA_FILE:
                return "its header names an external data file"
            ext_at = length
        return _extensions(fd, ext_at)
    finally:
        os.close(fd)


def _extensions(fd: int, at: int) -> str:
    for _ in range(MAX_EXTENSIONS):
        raw = os.pread(fd, 8, at)
        if len(raw) < 8:
            return "a truncated qcow2 header extension"
        kind, length = struct.unpack(">II", raw)
        if kind == EXT_END:
            return ""
        if kind == EXT_DATA_FILE:
            return "its header names an external data file"
        at += 8 + (length + 7) // 8 * 8
    return "too many qcow2 header extensions"


def check_disks(disks: tuple[Disk, ...]) -> None:
    """Check every layer QEMU will open as qcow2 (args.disks: the disk itself
    when qcow2, and each layer of its chain but the raw image at the bottom)."""
    for disk in disks:
        if disk.format == "qcow2":
            check(disk.path)
        layers = (disk.backing, *disk.chain) if disk.backing is not None else ()
        for layer in layers[:-1]:
            check(layer)
