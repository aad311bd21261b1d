"""Unpack the ELF vmlinux from a bzImage.

QEMU boots an uncompressed ELF vmlinux through its PVH entry point, which
skips the in-guest decompression (about 0.3 s under TCG); Firecracker needs
the ELF form anyway. The payload is found by its compression magic and
unpacked with the matching host tool.

A kernel may come from an image of a registry, so it is untrusted: a
payload of a few megabytes could decompress to terabytes. What a tool
writes is read here and written out only up to :data:`MAX_VMLINUX`; past
that the tool is stopped and the bzImage is kept as it is.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from pathlib import Path
from typing import BinaryIO

from ignitevm.log import log
from ignitevm.util.proc import spawn

# magic -> decompressor argv (reads stdin, writes stdout)
_FORMATS: list[tuple[bytes, list[str]]] = [
    (b"\x02\x21\x4c\x18", ["lz4", "-dc"]),
    (b"\x28\xb5\x2f\xfd", ["zstd", "-dcq"]),
    (b"\xfd7zXZ\x00", ["xz", "-dc"]),
    (b"\x1f\x8b\x08", ["gzip", "-dc"]),
]
# An uncompressed kernel is tens of megabytes (Debian's: ~60 MB with its symbols).
MAX_VMLINUX = 512 << 20
_CHUNK = 1 << 20


def extract_vmlinux(bzimage: Path, out: Path) -> bool:
    """Write the ELF vmlinux inside ``bzimage`` to ``out``; False if it cannot."""
    data = bzimage.read_bytes()
    for magic, argv in _FORMATS:
        start = data.find(magic, 0x200)
        if start < 0:
            continue
        tmp = out.with_name(f".{out.name}.{os.getpid()}")
        try:
            with tmp.open("wb") as f:
                # Trailing bytes after the stream make some tools exit non-zero:
                # judge by the output, not the exit code.
                whole = _unpack(argv, data[start:], f)
            head = tmp.read_bytes()[:4] if whole and tmp.stat().st_size > 1 << 20 else b""
        except Exception as exc:  # a missing tool: keep the bzImage
            log.debug("cannot unpack vmlinux with %s: %s", argv[0], exc)
            head = b""
        if head == b"\x7fELF":
            os.replace(tmp, out)
            return True
        tmp.unlink(missing_ok=True)
    return False


def _unpack(argv: list[str], payload: bytes, out: BinaryIO) -> bool:
    """Run the decompressor on ``payload`` into ``out``; False (the tool stopped)
    when it writes more than :data:`MAX_VMLINUX`."""
    with spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
               stderr=subprocess.DEVNULL) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        stdin = proc.stdin

        def feed() -> None:  # (a thread: the tool's output is read meanwhile)
            with contextlib.suppress(OSError):  # (it may stop reading: trailing bytes)
                stdin.write(payload)
            with contextlib.suppress(OSError):
                stdin.close()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        total = 0
        try:
            while chunk := proc.stdout.read(_CHUNK):
                total += len(chunk)
                if total > MAX_VMLINUX:
                    log.warning("the kernel's %s payload unpacks to more than %d MiB: kept "
                                "compressed", argv[0], MAX_VMLINUX >> 20)
                    proc.kill()
                    return False
                out.write(chunk)
            return True
        finally:
            proc.stdout.close()  # (the tool, if still writing, gets EPIPE; the feeder too)
            feeder.join()
