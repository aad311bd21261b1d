"""Objects on disk: ``<root>/<kind>/<uid>/metadata.json`` plus each object's files.

Safe when several CLIs and the daemon act at once, and after a ``kill -9`` at
any point:

- a new object is built in ``<root>/tmp/<uid>`` while its creator holds a lock
  there, and appears by one ``rename`` under the store lock, after the name
  was checked to be free; staging folders whose creator died are swept;
- metadata is replaced atomically (write + rename);
- removal renames the folder away first, so an object is there or gone;
- every temporary work folder under ``<root>/tmp`` is held by a lock beside it
  (``<name>.lock``), which the sweeper respects;
- imports take a lock per content key (``<root>/locks``) and look again once
  they hold it; a VM's creation holds its image and kernel with a shared lock,
  their removal with an exclusive one.

Permissions are set here and only here: the root is 0711 (others may pass
through, never list), every folder below it 0700; a root made with other
modes is put right when the store is opened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import NamedTuple, TypeVar

from ignitevm.api import codec
from ignitevm.api.types import VM, Image, Kernel, Snapshot
from ignitevm.errors import Conflict, IgniteError, NotFound
from ignitevm.store import layout
from ignitevm.store.layout import METADATA, SPARE
from ignitevm.store.lookup import pick
from ignitevm.util.fs import (
    atomic_write,
    flock,
    is_locked,
    no_space_errors,
    unlink_if_unlocked,
)

T = TypeVar("T", VM, Image, Kernel, Snapshot)

_DIRS = {VM: "vm", Image: "image", Kernel: "kernel", Snapshot: "snapshot"}
_WHAT = {VM: "vm", Image: "image", Kernel: "kernel", Snapshot: "snapshot"}
SUBDIRS, ROOT_MODE, DIR_MODE = layout.SUBDIRS, layout.ROOT_MODE, layout.DIR_MODE


class Damaged(NamedTuple):
    """An object folder whose metadata cannot be read."""

    uid: str
    folder: Path
    reason: str


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)

    # --- layout -----------------------------------------------------------
    def kind_dir(self, typ: type[T]) -> Path:
        return self.root / _DIRS[typ]

    def dir(self, obj: VM | Image | Kernel | Snapshot) -> Path:
        return self.kind_dir(type(obj)) / obj.metadata.uid

    def ensure(self) -> None:
        """Make the root and its folders, with the store's modes."""
        if not self.root.is_dir():
            self.root.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                self.root.mkdir(ROOT_MODE)
        for d in SUBDIRS:
            with contextlib.suppress(FileExistsError):
                (self.root / d).mkdir(DIR_MODE)
        self.secure()

    def secure(self) -> None:
        """Put right the modes of a root made loosely (by an older version, or by
        hand): one stat when all is well, a walk over the object folders when not."""
        layout.secure(self.root)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The store-wide lock, held briefly while names are checked and taken."""
        self.ensure()
        with flock(self.root / ".lock"):
            yield

    @contextlib.contextmanager
    def key_lock(self, key: str) -> Iterator[None]:
        """A lock per content key (an image digest, a kernel name): an import holds
        it and looks again for the object before it builds anything, so a second
        import of the same content waits for the first and reuses its result."""
        import hashlib

        from ignitevm.log import log

        self.ensure()
        path = self.root / "locks" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.lock"
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(flock(path, blocking=False))
            except BlockingIOError:
                log.info("Waiting for another import of %s to finish", key.split(":", 1)[-1])
                stack.enter_context(flock(path))
            yield

    @contextlib.contextmanager
    def using(self, obj: Image | Kernel, *, exclusive: bool = False) -> Iterator[None]:
        """Hold an image or kernel: shared while a VM is made over it, exclusive
        while it is removed. NotFound if it is gone (or goes while we wait)."""
        what = _WHAT[type(obj)]
        d = self.dir(obj)
        gone = NotFound(f"{what} {obj.metadata.name!r} was removed meanwhile",
                        hint=f"import the {what} again")
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(flock(d / ".lock", shared=not exclusive))
            except (FileNotFoundError, NotADirectoryError):
                raise gone from None
            if not (d / METADATA).exists():  # removed while we waited for the lock
                raise gone
            yield

    @contextlib.contextmanager
    def workdir(self, prefix: str) -> Iterator[Path]:
        """A private temporary folder under ``<root>/tmp``, held by a lock beside it
        (so the sweeper leaves it alone) and removed at the end of the block."""
        self.ensure()
        tmp = self.root / "tmp"
        name = f"{prefix}{os.urandom(6).hex()}"
        lock = tmp / f"{name}.lock"
        with flock(lock):
            path = tmp / name
            path.mkdir(DIR_MODE)
            try:
                with no_space_errors(self.root):
                    yield path
            finally:
                shutil.rmtree(path, ignore_errors=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)

    # --- reading ----------------------------------------------------------
    def uids(self, typ: type[T]) -> list[str]:
        """The names of the object folders of ``typ``, sorted."""
        try:
            return sorted(os.listdir(self.kind_dir(typ)))
        except FileNotFoundError:
            return []

    def list(self, typ: type[T]) -> list[T]:
        base = self.kind_dir(typ)
        out = []
        for uid in self.uids(typ):
            obj = self._read(typ, base / uid / METADATA)
            if obj is not None:
                out.append(obj)
        return out

    def _read(self, typ: type[T], path: Path) -> T | None:
        try:
            raw = path.read_bytes()
        except OSError:  # gone, or unreadable (then damaged() reports it)
            return None
        try:
            return codec.decode_json(raw, typ, str(path))
        except IgniteError:
            # A damaged metadata file must not break every listing; it is
            # reported by commands that address the object directly.
            return None

    def damaged(self, typ: type[T], known: Collection[str] = ()) -> list[Damaged]:
        """Folders of ``typ`` whose metadata cannot be read or decoded (the UIDs
        in ``known``, just listed fine, are not read again).

        :meth:`list` leaves them out so that one damaged object breaks no
        listing; ``ps``, ``rm`` and ``ignited`` ask here so that none is lost."""
        base = self.kind_dir(typ)
        out = []
        for uid in self.uids(typ):
            if uid in known:
                continue
            folder = base / uid
            if not (folder / METADATA).exists() and (folder / SPARE).exists():
                continue  # (a spare: a clone kept ready, listed by its snapshot)
            try:
                raw = (folder / METADATA).read_bytes()
            except FileNotFoundError:
                why = f"{METADATA} is missing"
            except OSError as exc:
                why = f"cannot read {METADATA}: {exc.strerror}"
            else:
                try:
                    codec.decode_json(raw, typ, METADATA)
                    continue
                except IgniteError as exc:
                    why = exc.brief
            if folder.is_dir():  # (not removed meanwhile)
                out.append(Damaged(uid, folder, why))
        return out

    def get(self, typ: type[T], uid: str, *, record: str = METADATA) -> T:
        """The object of this UID (``record``: the file read, SPARE for a
        spare's)."""
        obj = self._read(typ, self.kind_dir(typ) / uid / record)
        if obj is None:
            raise NotFound(f"can't find {_WHAT[typ]}: no ID matches {uid!r}")
        return obj

    def find(self, typ: type[T], query: str) -> T | None:
        """An exact name or UID match, or None."""
        for obj in self.list(typ):
            if query in (obj.metadata.name, obj.metadata.uid):
                return obj
        return None

    def resolve(self, typ: type[T], query: str) -> T:
        """Find by exact name or UID first, then by a unique name or UID prefix."""
        objs = self.list(typ)
        entries = [(o.metadata.uid, o.metadata.name) for o in objs]
        return objs[pick(entries, query, _WHAT[typ])]

    # --- writing ----------------------------------------------------------
    def save(self, obj: VM | Image | Kernel | Snapshot, *, record: str = METADATA) -> None:
        with no_space_errors(self.root):
            atomic_write(self.dir(obj) / record, codec.to_json(obj) + "\n")

    @contextlib.contextmanager
    def creating(self, obj: T, *, unique_name: bool = True,
                 rename: bool = False, record: str = METADATA) -> Iterator[Path]:
        """Build a new object's folder; it appears in the store only if the block succeeds.

        With ``rename``, a name taken meanwhile is replaced by a fresh generated one
        (for generated names); otherwise a taken name is an error. With ``record``
        SPARE the object is written there instead (a spare VM: not listed, named
        when it is taken).
        """
        unique_name = unique_name and record == METADATA
        self.ensure()
        self.sweep()
        typ = type(obj)
        if unique_name and not rename:
            self.check_name(obj)  # fail early; checked again under the lock
        tmp = self.root / "tmp"
        stage = tmp / obj.metadata.uid
        lock = tmp / f"{obj.metadata.uid}.lock"
        # The lock is taken before the folder exists, so a sweeper never sees
        # the folder unlocked while its creator lives.
        with flock(lock), no_space_errors(self.root):
            stage.mkdir(DIR_MODE)
            try:
                yield stage
                with self.locked():
                    if unique_name:
                        self.take_name(obj, rename=rename)
                    atomic_write(stage / record, codec.to_json(obj) + "\n")
                    os.rename(stage, self.kind_dir(typ) / obj.metadata.uid)
            except BaseException:
                shutil.rmtree(stage, ignore_errors=True)
                raise
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)

    def take_name(self, obj: VM | Image | Kernel | Snapshot, *, rename: bool) -> None:
        """Under the store's lock: check the object's name is free, or with
        ``rename`` give it a fresh generated one when it is empty or taken."""
        if obj.metadata.name or not rename:
            try:
                self.check_name(obj)
                return
            except Conflict:
                if not rename:
                    raise
        from ignitevm.util.ids import random_name

        taken = {o.metadata.name for o in self.list(type(obj))}
        obj.metadata.name = random_name(taken)

    def check_name(self, obj: VM | Image | Kernel | Snapshot) -> None:
        name = obj.metadata.name
        if not name:
            return
        for other in self.list(type(obj)):
            if other.metadata.name == name:
                raise Conflict(
                    f"invalid {_WHAT[type(obj)]} name {name!r}: already exists "
                    f"(ID {other.metadata.uid})",
                    hint="choose another name, or remove the old one first",
                )

    def delete(self, obj: VM | Image | Kernel | Snapshot) -> None:
        src = self.dir(obj)
        trash = self.root / "tmp" / f"deleting-{obj.metadata.uid}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(src, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def sweep(self) -> None:
        """Remove staging folders whose creator is gone (killed mid-create)."""
        tmp = self.root / "tmp"
        try:
            entries = os.listdir(tmp)
        except FileNotFoundError:
            return
        for name in entries:
            path = tmp / name
            orphan = not name.endswith(".lock") and not is_locked(tmp / f"{name}.lock")
            if name.startswith("deleting-") or orphan:
                shutil.rmtree(path, ignore_errors=True)
            elif name.endswith(".lock") and not (tmp / name[:-5]).exists():
                with contextlib.suppress(OSError):
                    if time.time() - os.stat(path).st_mtime > 60:
                        unlink_if_unlocked(path)
