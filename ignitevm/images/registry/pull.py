"""Pull an image into the shared content store: manifest, config, then layers in parallel.

:func:`resolve` costs one manifest request when the tag's index or manifest
is already stored; :func:`fetch` downloads what is missing (about four
layers at once, each checked for size, sha256 and diff_id while it streams,
resumed with a ``Range`` request after a cut connection) and returns an
:class:`ImageSource` whose layers are read from the content store.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from typing import Any, BinaryIO, NamedTuple

import httpx

from ignitevm.api.platform import config_platform
from ignitevm.api.refs import DIGEST, Reference
from ignitevm.api.validation import printable
from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.images.blobs import ContentStore, Ingest
from ignitevm.images.oci import LAYER_TYPES
from ignitevm.images.registry import manifests
from ignitevm.images.registry.client import Client, NetworkError, body
from ignitevm.images.registry.diffid import DiffHasher
from ignitevm.images.registry.manifests import Manifest
from ignitevm.images.registry.options import PullOptions
from ignitevm.images.source import ImageSource, Layer, Opener
from ignitevm.log import log
from ignitevm.util.progress import Transfers

PARALLEL = 4
RESUMES = 5  # Range requests after cut connections, per blob
MAX_CONFIG = 16 << 20
SCHEMES_FILE = "http-registries"  # (in the content store) registries found without TLS

# (layer digest, bytes done or -1 if already stored, total): called from download threads
Progress = Callable[[str, int, int], None]


class Resolved(NamedTuple):
    ref: Reference
    manifest: Manifest  # the image manifest for the chosen platform
    index: Manifest | None
    platform: str | None  # the platform entry taken from an index
    wanted: str = ""  # the platform asked for (or this host's)

    @property
    def digest(self) -> str:
        return self.manifest.digest


def _stored(store: ContentStore, digest: str, where: str) -> Manifest | None:
    if not store.has(digest):
        return None
    return manifests.parse(store.read(store.blob_name(digest)), digest, where)


def resolve(client: Client, ref: Reference, store: ContentStore,
            platform: str | None = None) -> Resolved:
    """The image manifest that ``ref`` names for ``platform`` (default: this host's)."""
    wanted = manifests.check_platform(platform) if platform else manifests.host_platform()
    where = str(ref)
    top = manifests.fetch(client, ref.reference, ref.digest)
    if not top.is_index:
        return Resolved(ref, top, None, None, wanted)
    desc = manifests.choose(top, wanted, where)
    digest = desc.get("digest")
    if not isinstance(digest, str):
        raise InvalidInput(f"{where}: an index entry has no digest")
    child = _stored(store, digest, where) or manifests.fetch(client, digest, digest)
    if child.is_index:
        raise InvalidInput(f"{where}: nested indexes are not supported")
    return Resolved(ref, child, top, manifests.platform_of(desc), wanted)


@contextmanager
def fetching(client: Client, res: Resolved, store: ContentStore,
             progress: Progress | None = None, max_bytes: int | None = None,
             applied: bool = False) -> Iterator[ImageSource]:
    """Download the config, then start downloading the layers of ``res`` that the store
    lacks, and yield the image at once: opening a layer waits for its download, so layers
    can be applied while later ones still arrive. At the end of the block every
    download has finished and been checked (or, if the block failed, stopped).

    Each layer carries its diff_id, which applying it checks (a blob already stored
    is checked against this image's config too). With ``applied`` the caller applies
    every layer, so a download checks size and sha256 only: its diff_id is computed
    once, as it is unpacked, not a second time as it streams in."""
    where = str(res.ref)
    for m in (res.index, res.manifest):
        if m is not None:
            _put(store, m.digest, m.raw)
    cdesc, ldescs = manifests.image_parts(res.manifest, f"manifest {res.digest} of {where}")
    cdigest, csize = _descriptor(cdesc, "config", where)
    if csize > MAX_CONFIG:
        raise InvalidInput(f"{where}: the image config is larger than {MAX_CONFIG >> 20} MiB")
    download(client, store, cdigest, csize, None, f"config {cdigest} of {where}")
    try:
        config = json.loads(store.read(store.blob_name(cdigest)))
    except (ValueError, RecursionError):  # (RecursionError: nested too deeply)
        raise InvalidInput(f"{where}: the image config is not valid JSON") from None
    if not isinstance(config, dict):
        raise InvalidInput(f"{where}: the image config is not an object")
    plat = f"{config.get('os')}/{config.get('architecture')}"
    if res.index is None and res.wanted and not res.wanted.startswith(plat):
        log.warning("%s is an image for %s, not %s: it may not run here", where, plat,
                    res.wanted)
    diff_ids = (config.get("rootfs") or {}).get("diff_ids")
    if not isinstance(diff_ids, list) or len(diff_ids) != len(ldescs):
        raise InvalidInput(f"{where}: the image config lists {len(diff_ids or [])} diff_ids "
                           f"for {len(ldescs)} layers")
    blobs: list[tuple[str, int, str]] = []
    jobs: dict[str, tuple[int, str | None]] = {}
    for desc, diff_id in zip(ldescs, diff_ids, strict=True):
        media = desc.get("mediaType")
        if media not in LAYER_TYPES:
            raise InvalidInput(f"{where}: a layer has the unsupported media type {media!r}")
        digest, size = _descriptor(desc, "layer", where)
        if not isinstance(diff_id, str) or not DIGEST.fullmatch(diff_id):
            raise InvalidInput(f"{where}: the image config lists a malformed diff_id "
                               f"{str(diff_id)[:80]!r}", hint="the image is corrupt")
        blobs.append((digest, size, diff_id))
        wanted: str | None = None if applied else diff_id
        if str(media).endswith(".tar"):  # uncompressed: the diff_id is the digest itself
            if diff_id != digest:
                raise InvalidInput(f"{where}: uncompressed layer {digest} has the diff_id "
                                   f"{diff_id}", hint="the image is corrupt")
            wanted = None  # (the blob's own check covers it)
        jobs.setdefault(digest, (size, wanted))  # a layer listed twice is fetched once
    total = sum(size for size, _ in jobs.values())
    if max_bytes is not None and total > max_bytes:
        raise InvalidInput(
            f"{where}: its layers are {total} bytes, more than the {max_bytes} an image may "
            "unpack to here; nothing was downloaded",
            hint="if the image is trusted, raise the limit with --unpack-limit or the "
                 "Configuration's spec.unpackLimit, or free disk space")
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise InvalidInput(f'{where}: the image config\'s "config" is not an object')
    with _Downloads(client, store, jobs, progress, where, max_bytes) as downloads:
        # (read from the content store, which commits a blob once its sha256 matches)
        layers = [Layer(d, size, downloads.opener(d), diff_id, verified=True)
                  for d, size, diff_id in blobs]
        yield ImageSource("registry", str(res.ref), cdigest, inner, layers,
                          sum(layer.size for layer in layers), None,
                          platform=config_platform(config))
        downloads.wait()


def _descriptor(desc: dict[str, Any], what: str, where: str) -> tuple[str, int]:
    digest, size = desc.get("digest"), desc.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
        raise InvalidInput(f"{where}: a {what} descriptor is malformed")
    ContentStore.blob_name(digest)  # sha256 only
    return digest, size


def _put(store: ContentStore, digest: str, data: bytes) -> None:
    with store.ingest(digest, len(data)) as ing:
        if ing is not None:
            ing.reset()
            ing.write(data)


class _Downloads:
    """Blobs downloading, about PARALLEL at once, in the background."""

    def __init__(self, client: Client, store: ContentStore,
                 jobs: dict[str, tuple[int, str | None]],
                 progress: Progress | None, where: str, max_bytes: int | None = None):
        self.client, self.store, self.jobs = client, store, jobs
        self.progress, self.where, self.max_bytes = progress, where, max_bytes
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="pull")
        self.futures: dict[str, Future[None]] = {}

    def __enter__(self) -> _Downloads:
        for digest in self.jobs:
            self.futures[digest] = self.pool.submit(self._one, digest)
        return self

    def __exit__(self, typ: object, *exc: object) -> None:
        self.stop.set()  # (only matters when the block failed: else all are done)
        if typ is not None:  # (Ctrl-C too) unblock downloads waiting on their sockets
            self.client.close()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _one(self, digest: str) -> None:
        if self.stop.is_set():
            raise _Stopped
        size, diff_id = self.jobs[digest]
        download(self.client, self.store, digest, size, diff_id,
                 f"layer {digest} of {self.where}", self.progress, self.stop, self.max_bytes)

    def wait(self) -> None:
        for f in self.futures.values():
            f.result()

    def opener(self, digest: str) -> Opener:
        @contextmanager
        def open_when_ready() -> Iterator[BinaryIO]:
            self.futures[digest].result()  # raises the download's error
            with self.store.opener(self.store.blob_name(digest))() as f:
                yield f

        return open_when_ready


class _Stopped(Exception):
    pass


def download(client: Client, store: ContentStore, digest: str, size: int,
             diff_id: str | None, what: str, progress: Progress | None = None,
             stop: threading.Event | None = None, max_bytes: int | None = None) -> None:
    """Make sure blob ``digest`` is in the store, fetching (or resuming) it if needed."""
    with store.ingest(digest, size) as ing:
        if ing is None:
            if progress is not None:
                progress(digest, -1, size)  # already here
            return
        hasher = _rehash(ing, diff_id, what, max_bytes)
        cuts = 0
        while True:
            if stop is not None and stop.is_set():
                raise _Stopped
            try:
                _transfer(client, ing, digest, size, what, hasher, progress, stop)
                if ing.offset >= size:
                    break
                why = f"the connection ended at byte {ing.offset} of {size}"
            except (httpx.TransportError, NetworkError) as exc:
                why = str(exc)
            except _Stopped:
                raise  # another step failed; the part is kept for a later resume
            cuts += 1
            if cuts > RESUMES:
                raise IgniteError(f"{what} is truncated: {why} (gave up after {RESUMES} "
                                  "resumes)", hint="pull again: the download resumes")
            log.debug("%s: %s; resuming", what, why)
            if ing.offset == 0 and hasher is not None:
                hasher = DiffHasher(what, max_bytes)
        ing.check()
        if hasher is not None and diff_id is not None:
            got = hasher.digest()
            if got != diff_id:
                ing.discard()
                raise InvalidInput(f"{what} does not match the image config's diff_id "
                                   f"{diff_id} (it unpacks to {got})",
                                   hint="the image is corrupt; nothing was kept")


def _rehash(ing: Ingest, diff_id: str | None, what: str, max_bytes: int | None
            ) -> DiffHasher | None:
    """A diff_id hasher that has seen the bytes already on disk (a resumed download)."""
    if diff_id is None:
        return None
    hasher = DiffHasher(what, max_bytes)
    if ing.offset:
        with open(ing.partial, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                hasher.feed(chunk)
    return hasher


def _transfer(client: Client, ing: Ingest, digest: str, size: int, what: str,
              hasher: DiffHasher | None, progress: Progress | None,
              stop: threading.Event | None) -> None:
    headers = {"Accept-Encoding": "identity"}
    if ing.offset:
        headers["Range"] = f"bytes={ing.offset}-{size - 1}"
    with closing(client.get(f"blobs/{digest}", headers, stream=True)) as resp:
        if resp.status_code == 206:
            start = resp.headers.get("content-range", "").removeprefix("bytes ").split("-")[0]
            if start != str(ing.offset):
                raise InvalidInput(f"{what}: the registry answered a resume with the wrong "
                                   f"range ({resp.headers.get('content-range')!r})")
        elif resp.status_code == 200:
            if ing.offset:  # the registry ignored Range: start again
                log.debug("%s: no range support; starting again", what)
                ing.reset()
                if hasher is not None:
                    hasher.reset()
        else:
            raise client.error(resp, f"blob {digest}")
        if progress is not None:
            progress(digest, ing.offset, size)
        for chunk in body(resp, client):
            if stop is not None and stop.is_set():
                raise _Stopped
            ing.write(chunk)
            if hasher is not None:
                hasher.feed(chunk)
            if progress is not None:
                progress(digest, ing.offset, size)


class Pulled(NamedTuple):
    ref: Reference
    digest: str  # the image manifest's
    identity: str  # "oci://<repository>@<digest>": what an Image or Kernel records
    source: ImageSource | None  # None when ``known`` said it is already here
    out: Transfers  # for the last status lines
    top: Manifest  # the tag's (or digest's) manifest as served: an index, or ``digest``'s
    wanted: str  # the platform an index entry was chosen for
    http: bool  # the registry itself (no mirror) answered over plain HTTP


@contextmanager
def pulling(store: ContentStore, text: str, opts: PullOptions,
            known: Callable[[str], bool], applied: bool = False) -> Iterator[Pulled]:
    """Resolve ``text`` and, unless ``known(identity)``, fetch what the store lacks
    while the block uses the image (see :func:`fetching`; ``applied``: the block
    applies every layer of the source it gets, checking each diff_id)."""
    import sys

    from ignitevm.api.refs import parse
    from ignitevm.images.registry.tls import insecure_registries
    from ignitevm.util.progress import Transfers

    ref = parse(text)
    show = opts.show if opts.show != "auto" else ("tty" if sys.stderr.isatty() else "plain")
    insecure = insecure_registries(list(opts.insecure))
    store.path.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        stack.enter_context(store.in_use())  # (no blob of this pull is collected)
        out = stack.enter_context(Transfers(show))
        client, res = _first_answer(stack, store, ref, opts, insecure)
        out.line(f"{ref.tag or ref.digest}: Pulling from {ref.familiar_name()}")
        identity = "oci://" + ref.with_digest(res.digest)
        source = None
        if not known(identity):
            _, ldescs = manifests.image_parts(res.manifest, str(ref))
            for d in ldescs:
                if isinstance(d.get("digest"), str) and isinstance(d.get("size"), int):
                    out.add(d["digest"], d["digest"][7:19], d["size"])
            source = stack.enter_context(fetching(client, res, store, out.update,
                                                  opts.max_bytes, applied))
        http = (client.base or "").startswith("http:") and client.host == ref.domain
        yield Pulled(ref, res.digest, identity, source, out, res.index or res.manifest,
                     res.wanted, http)
    out.line(f"Digest: {res.digest}")


def _first_answer(stack: ExitStack, store: ContentStore, ref: Reference, opts: PullOptions,
                  insecure: set[str]) -> tuple[Client, Resolved]:
    """The client of the first place (mirrors, then upstream) that has ``ref``."""
    from ignitevm.images.registry.mirrors import endpoints

    places = endpoints(ref)
    for n, place in enumerate(places):
        with ExitStack() as attempt:
            client = attempt.enter_context(Client(
                place.ref, config_dir=opts.config_dir,
                insecure=insecure | ({place.ref.domain} if place.insecure else set()),
                schemes=store.path / SCHEMES_FILE))
            try:
                res = resolve(client, place.ref, store, opts.platform)
            except IgniteError as exc:
                if n == len(places) - 1 or not place.mirror:
                    raise
                log.info("Mirror %s failed (%s); trying the next place", place.ref.domain,
                         printable(exc.brief))
                continue
            stack.enter_context(attempt.pop_all())
            return client, res
    raise AssertionError("unreachable")


def pull_into(store: ContentStore, text: str, opts: PullOptions,
              known: Callable[[str], bool]) -> Pulled:
    """Download everything (no unpacking): what the bench compares with skopeo."""
    with pulling(store, text, opts, known) as pulled:
        return pulled
