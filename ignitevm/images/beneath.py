"""Directories beneath an unpack root, held as file descriptors and never reached through a link.

Every write while unpacking names its target as (directory fd, one name), and
the directory fds come from :class:`Tree`. Each is opened one path component at
a time, relative to its parent's fd, with ``O_DIRECTORY|O_NOFOLLOW``: a symbolic
link (or a file) anywhere on the way is reported, never followed, and ``..``
cannot occur because names are normalised before they get here. So whatever
an image's entries do to the tree, a path can only lead to a directory that
really lies beneath the root. (``openat2`` with ``RESOLVE_BENEATH`` would give
the same guarantee for whole paths; walking component by component from cached
parents costs one ``openat`` per new directory and needs no newer kernel.)

The most recently opened directories stay open, up to :data:`CAP` fds; the
others are opened again from their nearest open ancestor when needed. Removal
never follows links either (``rmtree`` and ``unlink`` relative to a directory
fd), and it closes the fds of what it removed.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import stat

from ignitevm.util.beneath import DIR_FLAGS, lstat_at

CAP = 256  # open directory fds kept between entries (RLIMIT_NOFILE is often 1024)


class Blocked(Exception):
    """A path component that must be a directory is a symbolic link or something else."""

    def __init__(self, rel: str, link: bool):
        super().__init__(rel)
        self.rel = rel
        self.link = link


def open_dir(name: str, dir_fd: int) -> int | None:
    """Open directory ``name`` of ``dir_fd`` without following a link; None if it is missing."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


class Tree:
    """Open directory fds beneath ``root``, by relative path ("" is the root)."""

    def __init__(self, root: str):
        self.root_fd = os.open(root, DIR_FLAGS)
        self.fds: dict[str, int] = {"": self.root_fd}

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def trim(self) -> None:
        """Past :data:`CAP` fds, close the oldest half; call it only while no fd is in use."""
        if len(self.fds) <= CAP:
            return
        old = [rel for rel in itertools.islice(self.fds, len(self.fds) - CAP // 2) if rel]
        for rel in old:
            os.close(self.fds.pop(rel))

    def dir(self, rel: str, *, create: bool) -> int | None:
        """The fd of directory ``rel``, created (0755) if missing and ``create``, else None.

        Raises :class:`Blocked` when a component is a link or not a directory.
        The fd stays open until :meth:`trim` or :meth:`forget`; intermediate
        directories are kept open too, unless the cache is already full.
        """
        fd = self.fds.get(rel)
        if fd is not None:
            return fd
        parts = rel.split("/")
        start = len(parts) - 1
        while start > 0 and "/".join(parts[:start]) not in self.fds:
            start -= 1
        fd = self.fds["/".join(parts[:start])]
        owned = False  # whether fd is ours to close (not in the cache)
        try:
            for i in range(start, len(parts)):
                sub = "/".join(parts[: i + 1])
                child = self._open_or_make(parts[i], fd, sub, create)
                if owned:
                    os.close(fd)
                    owned = False
                if child is None:
                    return None
                fd = child
                if i == len(parts) - 1 or len(self.fds) < CAP:
                    self.fds[sub] = fd
                else:
                    owned = True
            return fd
        finally:
            if owned:
                os.close(fd)

    def _open_or_make(self, base: str, parent: int, rel: str, create: bool) -> int | None:
        try:
            fd = open_dir(base, parent)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                st = lstat_at(parent, base)
                raise Blocked(rel, st is not None and stat.S_ISLNK(st.st_mode)) from None
            raise
        if fd is not None or not create:
            return fd
        os.mkdir(base, 0o755, dir_fd=parent)
        return os.open(base, DIR_FLAGS, dir_fd=parent)

    def make(self, rel: str) -> int:
        """Like ``dir(rel, create=True)``, trying mkdir first (a directory entry is usually new)."""
        fd = self.fds.get(rel)
        if fd is not None:
            return fd
        up, _, base = rel.rpartition("/")
        parent = self.dir(up, create=True)
        assert parent is not None
        try:
            os.mkdir(base, 0o755, dir_fd=parent)
        except FileExistsError:
            fd = self.dir(rel, create=True)
            assert fd is not None
            return fd
        fd = os.open(base, DIR_FLAGS, dir_fd=parent)
        self.fds[rel] = fd
        return fd

    def lookup(self, rel: str) -> int | None:
        """The fd of directory ``rel`` if it is one now, reached without links; else None."""
        try:
            return self.dir(rel, create=False)
        except Blocked:
            return None

    def adopt(self, rel: str, fd: int) -> None:
        """Keep ``fd`` (just opened on the directory ``rel``) as that directory's fd."""
        old = self.fds.pop(rel, None)
        if old is not None and old != fd:
            os.close(old)
        self.fds[rel] = fd

    def forget(self, rel: str) -> None:
        """Close the fds of ``rel`` and everything under it (they are being removed)."""
        if not rel:
            raise ValueError("the root is never removed")
        prefix = rel + "/"
        for key in [k for k in self.fds if k == rel or k.startswith(prefix)]:
            os.close(self.fds.pop(key))

    def remove(self, parent: int, name: str, rel: str) -> None:
        """Remove ``name`` of directory ``parent`` (at ``rel``), whatever it is; never follows."""
        st = lstat_at(parent, name)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            self.forget(rel)
            shutil.rmtree(name, dir_fd=parent)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=parent)
