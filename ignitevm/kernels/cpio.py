"""A minimal writer for the newc cpio format the kernel unpacks as initramfs."""

from __future__ import annotations

import stat
from typing import BinaryIO


class CpioWriter:
    def __init__(self, out: BinaryIO):
        self.out = out
        self.ino = 1
        self.seen_dirs: set[str] = set()

    def _header(self, name: str, mode: int, size: int, nlink: int = 1,
                rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, nlink, 0, size, 0, 0, *rdev, len(encoded), 0]
        self.ino += 1
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self._pad()

    def _pad(self) -> None:
        pos = self.out.tell()
        if pos % 4:
            self.out.write(b"\0" * (4 - pos % 4))

    def mkdir(self, name: str, mode: int = 0o755) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            if path and path not in self.seen_dirs:
                self.seen_dirs.add(path)
                self._header(path, stat.S_IFDIR | mode, 0, 2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        if "/" in name:
            self.mkdir(name.rsplit("/", 1)[0])
        self._header(name, stat.S_IFREG | mode, len(data))
        self.out.write(data)
        self._pad()

    def symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        if "/" in name:
            self.mkdir(name.rsplit("/", 1)[0])
        data = target.encode()
        self._header(name, stat.S_IFLNK | 0o777, len(data))
        self.out.write(data)
        self._pad()

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._header(name.strip("/"), stat.S_IFCHR | mode, 0, rdev=(major, minor))

    def close(self) -> None:
        self._header("TRAILER!!!", 0, 0)
