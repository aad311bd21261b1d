"""Read the version string out of a kernel file (bzImage or ELF vmlinux)."""

from __future__ import annotations

import re
from pathlib import Path

_LINUX_VERSION = re.compile(rb"Linux version (\S+)")


def kernel_version(path: Path) -> str:
    data = path.read_bytes()
    if len(data) > 0x210 and data[0x202:0x206] == b"HdrS":
        # bzImage: the setup header points at a NUL-terminated version string.
        offset = int.from_bytes(data[0x20E:0x210], "little") + 0x200
        raw = data[offset : offset + 256].split(b"\0", 1)[0]
        if raw:
            return raw.split()[0].decode(errors="replace")
    m = _LINUX_VERSION.search(data)
    if m:
        return m.group(1).decode(errors="replace")
    return "<unknown>"


def is_kernel(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(0x210)
    return head[:4] == b"\x7fELF" or head[0x202:0x206] == b"HdrS"
