"""How much a hostile image may make the host write while it is unpacked.

A layer of a few kilobytes can decompress to terabytes (a gzip of zeros), hold
millions of empty files, or name files whose size it never sends. Unpacking
therefore runs against a :class:`Budget`:

* **bytes**: the decompressed tar data of all layers together (file contents,
  headers, padding). Every byte an image can make the host write or hash comes
  out of that stream, so bounding it bounds disk and time alike; a regular
  file whose header alone claims more than what is left is refused before a
  byte of it is read. By default the limit is half of what the filesystem
  holding the unpack folder has free, less a reserve kept for the host
  (:func:`reserve`): the unpacked tree and the ext4 image made from it exist
  at the same time. A limit set by the user (``--unpack-limit``, the
  Configuration's ``spec.unpackLimit``) is taken as given.
* **entries**: tar members of all layers together (each may cost an inode);
  by default :data:`MAX_ENTRIES`, or fewer when the filesystem has fewer free
  inodes (half of them, less a reserve).

A compression ratio limit would add nothing: the byte limit already bounds
what any ratio can produce, and legitimate layers (sparse disk images, zeroed
files) reach high ratios.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ignitevm.errors import InvalidInput
from ignitevm.util.sizes import human_size

MAX_ENTRIES = 2_000_000
RESERVE = 1 << 30  # kept free for the host (a tenth of a small filesystem)
INODE_RESERVE = 10_000
_HINT = ("the image may be hostile; if it is trusted, raise the limit with --unpack-limit "
         "or the Configuration's spec.unpackLimit / spec.unpackEntryLimit, or free disk space")


@dataclass(frozen=True)
class UnpackLimits:
    """What the user set; None: derived from the free space where the tree is unpacked."""

    max_bytes: int | None = None
    max_entries: int | None = None


def configured(flag: str | None, config_file: str | None) -> UnpackLimits:
    """The limits a user set: ``--unpack-limit``, else the Configuration's
    ``spec.unpackLimit``; entries from ``spec.unpackEntryLimit``."""
    from ignitevm.cli.config import load_configuration
    from ignitevm.util.sizes import parse_size

    spec = (load_configuration(config_file) or {}).get("spec") or {}
    text, what = flag, "--unpack-limit"
    if text is None and spec.get("unpackLimit") is not None:
        text, what = spec["unpackLimit"], "Configuration spec.unpackLimit"
    max_bytes = None if text is None else parse_size(text, what)
    entries = spec.get("unpackEntryLimit")
    if entries is not None and (not isinstance(entries, int) or isinstance(entries, bool)
                                or entries < 0):
        raise InvalidInput(f"invalid Configuration spec.unpackEntryLimit {entries!r}",
                           hint="a whole number of files and folders, e.g. 500000")
    return UnpackLimits(max_bytes, entries)


def byte_limit(limits: UnpackLimits, where: str) -> int:
    """The byte limit an unpack under ``where`` runs with."""
    return Budget._bytes_limit(limits, where)[0]


def reserve(fs_bytes: int) -> int:
    """Bytes left free for the host on a filesystem of ``fs_bytes``."""
    return min(RESERVE, fs_bytes // 10)


class Budget:
    """Counts one unpack's decompressed bytes and entries against its limits."""

    def __init__(self, limits: UnpackLimits, where: str, label: str):
        self.label = label
        self.bytes = 0
        self.entries = 0
        self.max_bytes, self.bytes_why = self._bytes_limit(limits, where)
        self.max_entries, self.entries_why = self._entries_limit(limits, where)

    @staticmethod
    def _bytes_limit(limits: UnpackLimits, where: str) -> tuple[int, str]:
        if limits.max_bytes is not None:
            return limits.max_bytes, "set by --unpack-limit or spec.unpackLimit"
        st = os.statvfs(where)
        free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        keep = reserve(total)
        return max(0, (free - keep) // 2), (
            f"half of the {human_size(free)} free where it is unpacked, less "
            f"{human_size(keep)} kept for the host")

    @staticmethod
    def _entries_limit(limits: UnpackLimits, where: str) -> tuple[int, str]:
        if limits.max_entries is not None:
            return limits.max_entries, "set by spec.unpackEntryLimit"
        st = os.statvfs(where)
        if st.f_files and (st.f_favail - INODE_RESERVE) // 2 < MAX_ENTRIES:
            return max(0, (st.f_favail - INODE_RESERVE) // 2), (
                f"half of the {st.f_favail} free inodes where it is unpacked, less "
                f"{INODE_RESERVE}")
        return MAX_ENTRIES, "the default"

    def _too_big(self, needed: int) -> InvalidInput:
        return InvalidInput(
            f"{self.label} unpacks to more than {human_size(self.max_bytes)} (needs at least "
            f"{human_size(needed)}; the limit is {self.bytes_why}); nothing was kept",
            hint=_HINT)

    def take(self, n: int) -> None:
        """``n`` more decompressed bytes were read."""
        self.bytes += n
        if self.bytes > self.max_bytes:
            raise self._too_big(self.bytes)

    def ahead(self, n: int) -> None:
        """``n`` more bytes are announced (a file's size): refuse now if they cannot fit."""
        if self.bytes + n > self.max_bytes:
            raise self._too_big(self.bytes + n)

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.max_entries:
            raise InvalidInput(
                f"{self.label} has more than {self.max_entries} files and folders (the "
                f"limit is {self.entries_why}); nothing was kept", hint=_HINT)
