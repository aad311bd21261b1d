"""Collecting the shared content store: blobs that no stored image or kernel needs.

The roots are the manifests that images and kernels pulled from registries
record (``oci://REPOSITORY@sha256:…``); a manifest keeps its config and
layers, an index its manifests. Everything else under ``blobs/sha256`` goes,
and so do partial downloads (``ingest/``) that no pull is writing.

It runs under the store's exclusive collection lock, which every pull holds
shared from before it writes its first blob until its image or kernel is
stored (blobs.py: ``ContentStore.in_use``): a pull waits for a collection,
and a collection for the pulls, so no blob a pull has written or is writing
is taken from it; and the roots are read only once the lock is held.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from ignitevm.errors import IgniteError
from ignitevm.images.blobs import DIGEST, ContentStore
from ignitevm.log import log
from ignitevm.util.fs import flock, is_locked

MAX_MANIFEST = 4 << 20


class Removed(NamedTuple):
    digest: str  # "sha256:…", or "ingest/<hex>" for a partial download
    size: int


def collect(store: ContentStore, roots: Callable[[], Iterable[str]]) -> list[Removed]:
    """Remove every blob that the manifests ``roots()`` returns do not reach."""
    if not store.path.is_dir():
        return []
    lock = store.path / ContentStore.GC_LOCK
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(flock(lock, blocking=False))
        except BlockingIOError:
            log.info("Waiting for pulls to finish before removing unused blobs")
            held.enter_context(flock(lock))
        keep = reachable(store, roots())
        return _remove_blobs(store, keep) + _remove_partials(store)


def reachable(store: ContentStore, roots: Iterable[str]) -> set[str]:
    """The digests the manifests ``roots`` name (configs, layers; an index's
    manifests and theirs), themselves included."""
    keep: set[str] = set()
    todo = [d for d in roots if DIGEST.fullmatch(d)]
    while todo:
        digest = todo.pop()
        if digest in keep:
            continue
        keep.add(digest)
        leaves, manifests = _references(store, digest)
        keep.update(leaves)
        todo += manifests
    return keep


def _references(store: ContentStore, digest: str) -> tuple[list[str], list[str]]:
    """What the stored manifest or index ``digest`` names: (config and layers,
    child manifests). Nothing if it is not stored."""
    path = store.path / store.blob_name(digest)
    try:
        if path.stat().st_size > MAX_MANIFEST:
            raise ValueError
        doc = json.loads(path.read_bytes())
        if not isinstance(doc, dict):
            raise ValueError
        leaves = [doc.get("config"), *(doc.get("layers") or [])]
        children = list(doc.get("manifests") or [])
        if not all(isinstance(d, dict) for d in [*leaves, *children] if d is not None):
            raise ValueError
    except FileNotFoundError:
        return [], []
    except (ValueError, RecursionError):
        raise IgniteError(f"stored manifest {digest} cannot be read; no blob was removed",
                          hint="remove the image or kernel that records it (ignite image "
                          "rm), and prune again") from None

    def digests(descs: list[object]) -> list[str]:
        return [d["digest"] for d in descs if isinstance(d, dict)
                and isinstance(d.get("digest"), str) and DIGEST.fullmatch(d["digest"])]

    return digests(leaves), digests(children)


def _names(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        return []


def _remove(path: Path, label: str, removed: list[Removed]) -> None:
    """Remove one file, noted with its size (gone already: nothing to note)."""
    with contextlib.suppress(FileNotFoundError):
        size = path.lstat().st_size
        path.unlink()
        removed.append(Removed(label, size))


def _remove_blobs(store: ContentStore, keep: set[str]) -> list[Removed]:
    folder = store.path / "blobs" / "sha256"
    removed: list[Removed] = []
    for name in _names(folder):
        if f"sha256:{name}" not in keep:
            _remove(folder / name, f"sha256:{name}", removed)
    return removed


def _remove_partials(store: ContentStore) -> list[Removed]:
    """Downloads a pull left unfinished (kept for it to resume): gone unless written now."""
    folder = store.path / "ingest"
    removed: list[Removed] = []
    for name in _names(folder):
        if name.endswith(".lock"):
            continue
        lock = folder / f"{name}.lock"
        if is_locked(lock):
            continue
        _remove(folder / name, f"ingest/{name}", removed)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
    return removed
