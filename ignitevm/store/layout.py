"""The store's folders and their modes (light to import: exec's fast path uses it)."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DEFAULT_ROOT = "/var/lib/ignite"
METADATA = "metadata.json"
SUBDIRS = ("vm", "image", "kernel", "snapshot", "tmp", "cache", "locks")
ROOT_MODE = 0o711  # others may pass through (to reach a shared file later), never list
DIR_MODE = 0o700   # every folder below the root: objects, tmp, cache, locks


def default_root() -> Path:
    return Path(os.environ.get("IGNITE_ROOT") or DEFAULT_ROOT)


def secure(root: Path) -> None:
    """Put right the modes of a root made loosely (by an older version, or by
    hand): one stat when all is well, a walk over the object folders when not."""
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(st.st_mode)
    if mode == ROOT_MODE or os.geteuid() not in (0, st.st_uid):
        return
    if mode & (stat.S_ISVTX | stat.S_IWOTH):
        return  # a shared folder (/tmp) given as the root: never tighten it
    for d in SUBDIRS:
        sub = root / d
        with contextlib.suppress(FileNotFoundError):
            os.chmod(sub, DIR_MODE)
            for name in os.listdir(sub):
                with contextlib.suppress(FileNotFoundError):
                    if (sub / name).is_dir() and not (sub / name).is_symlink():
                        os.chmod(sub / name, DIR_MODE)
    os.chmod(root, ROOT_MODE)  # last: the marker that all the rest is done
