"""Files beneath a directory fd, never through a symbolic link.

Every path here is a sequence of plain names (no ``/``, ``.`` or ``..``),
walked one component at a time with ``O_NOFOLLOW``: a symbolic link met on
the way is refused (ELOOP/ENOTDIR), never followed, so nothing is written
outside the directory the walk started from.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def check_name(name: str) -> None:
    """A single component: not empty, no slash, NUL, ``.`` or ``..``."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"{name!r} is not a plain file name")


def open_dir(root_fd: int, parts: Sequence[str], *, create: int | None = None) -> int:
    """Open the folder ``parts`` beneath ``root_fd`` (a new fd; the caller closes
    it). With ``create`` (a mode), missing folders on the way are made."""
    fd = os.dup(root_fd)
    try:
        for name in parts:
            check_name(name)
            if create is not None:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, create, dir_fd=fd)
            nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def opened_dir(root_fd: int, parts: Sequence[str], *, create: int | None = None
               ) -> Iterator[int]:
    fd = open_dir(root_fd, parts, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def create_file(dir_fd: int, name: str, mode: int = 0o600) -> int:
    """A new regular file (it must not exist yet; a symlink there is refused)."""
    check_name(name)
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   mode, dir_fd=dir_fd)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def is_dir_at(dir_fd: int, name: str) -> bool:
    st = lstat_at(dir_fd, name)
    return st is not None and stat.S_ISDIR(st.st_mode)


def remove_tree(dir_fd: int, name: str) -> None:
    """Remove ``name`` beneath ``dir_fd`` and all it holds, links not followed
    (folders made unwritable on the way are made writable first)."""
    check_name(name)
    st = lstat_at(dir_fd, name)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.EACCES:
            raise
        # (a folder by the lstat above: in a tree only this process writes)
        os.chmod(name, 0o700, dir_fd=dir_fd)
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o700)
        for entry in os.listdir(fd):
            remove_tree(fd, entry)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def merge(src_fd: int, dst_fd: int, *, skip: str = "", where: str = "") -> None:
    """Move what folder ``src_fd`` holds into folder ``dst_fd`` as ``cp -r`` merges:
    new names are moved in, folders met on both sides are merged, files replace
    files. A folder against a non-folder (a symbolic link counts as one) is
    refused before anything moves. ``skip``: a name in ``dst_fd`` that must not
    be overwritten (the work folder itself)."""
    _merge(src_fd, dst_fd, skip, where, check=True)
    _merge(src_fd, dst_fd, skip, where, check=False)


def _merge(src_fd: int, dst_fd: int, skip: str, where: str, *, check: bool) -> None:
    from ignitevm.errors import Conflict

    for name in sorted(os.listdir(src_fd)):
        path = f"{where}/{name}" if where else name
        if skip and name == skip:
            raise Conflict(f"{path}: the copy holds the name of its own work folder")
        s = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
        d = lstat_at(dst_fd, name)
        if d is None:
            if not check:
                os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            continue
        s_dir, d_dir = stat.S_ISDIR(s.st_mode), stat.S_ISDIR(d.st_mode)
        if s_dir and d_dir:
            with opened_dir(src_fd, [name]) as sfd, opened_dir(dst_fd, [name]) as dfd:
                if not check:
                    os.fchmod(sfd, 0o700)   # (emptied and removed after)
                _merge(sfd, dfd, "", path, check=check)
        elif s_dir:
            raise Conflict(f"cannot overwrite non-folder {path!r} with a folder")
        elif d_dir:
            raise Conflict(f"cannot overwrite folder {path!r} with a non-folder")
        elif not check:
            os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
