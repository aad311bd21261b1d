"""The store's folders and their modes (light to import: the fast paths of
``exec`` and ``pause``/``resume`` use it, with no ``pathlib`` or ``contextlib``)."""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:
    from os import PathLike
    from pathlib import Path

DEFAULT_ROOT = "/var/lib/ignite"
METADATA = "metadata.json"
# A spare's VM record (a clone of a snapshot kept ready, operations/spares.py):
# in its folder instead of METADATA until a `run --from-snapshot` takes it.
SPARE = "spare.json"
SUBDIRS = ("vm", "image", "kernel", "snapshot", "tmp", "cache", "locks")
ROOT_MODE = 0o711  # others may pass through (to reach a shared file later), never list
DIR_MODE = 0o700   # every folder below the root: objects, tmp, cache, locks


def default_root() -> Path:
    from pathlib import Path

    return Path(root_text())


def root_text() -> str:
    """The state root, as given (IGNITE_ROOT, else the default): default_root's."""
    return os.environ.get("IGNITE_ROOT") or DEFAULT_ROOT


def secure(root: str | PathLike[str]) -> None:
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
        sub = os.path.join(root, d)
        try:
            os.chmod(sub, DIR_MODE)
            names = os.listdir(sub)
        except FileNotFoundError:
            continue
        for name in names:
            path = os.path.join(sub, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    os.chmod(path, DIR_MODE)
            except FileNotFoundError:
                pass
    os.chmod(root, ROOT_MODE)  # last: the marker that all the rest is done
