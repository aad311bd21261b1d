"""Import, build and remove images.

An image is an ext4 file built from the OCI layers (``mkfs.ext4 -d``, no
mount) plus the image config; both are shared read-only by every VM.
Importing content that is already here (same identity: the digest of the
image's manifest, see :mod:`ignitevm.images.identity`) costs a lookup; each
layer is checked against its digest and the config's diff_id as it is unpacked.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ignitevm.api import refs
from ignitevm.api.defaults import now
from ignitevm.api.types import Image, ImageSpec, ObjectMeta, Size
from ignitevm.errors import Conflict, IgniteError, InvalidInput, NotFound
from ignitevm.images.registry.options import PullOptions
from ignitevm.log import log
from ignitevm.operations.context import Context
from ignitevm.util.ids import new_uid

if TYPE_CHECKING:
    from ignitevm.images.blobs import ContentStore
    from ignitevm.images.containerd.options import ContainerdOptions
    from ignitevm.images.limits import UnpackLimits
    from ignitevm.images.registry.pull import Pulled
    from ignitevm.images.source import ImageSource

IMAGE_FILE = "image.ext4"
CONFIG_FILE = "config.json"


def image_file(ctx: Context, image: Image) -> Path:
    return ctx.store.dir(image) / IMAGE_FILE


def image_config(ctx: Context, image: Image) -> dict[str, object]:
    try:
        data = json.loads((ctx.store.dir(image) / CONFIG_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def import_image(ctx: Context, source: str, name: str | None = None,
                 progress: bool = False) -> Image:
    """Import a docker-archive, oci-archive, OCI layout folder or plain rootfs tar."""
    from ignitevm.images.archive import open_source

    path = Path(source)
    if not path.exists():
        raise InvalidInput(
            f"unknown image {source!r}: not an imported image, nor a file or folder",
            hint="list images with 'ignite image ls', or import an archive: "
            "ignite image import ./app.tar",
        )
    with open_source(path) as src:
        return _import_named(ctx, src, name or src.ref or _name_from_path(path), progress)


def import_from_containerd(ctx: Context, source: str, opts: ContainerdOptions,
                           name: str | None = None, progress: bool = False,
                           replace: bool = False) -> Image:
    """Import the image named ``source`` in a running containerd's store, as if from the
    archive it was loaded from (same checks, same identity). With ``replace`` (``run
    --pull always``), an image of that name with other content is replaced, unless a VM
    uses it."""
    from ignitevm.images.containerd.source import open_containerd

    with open_containerd(source, opts) as src:
        return _import_named(ctx, src, name or src.ref or source, progress, replace)


def _import_named(ctx: Context, src: ImageSource, name: str, progress: bool,
                  replace: bool = False) -> Image:
    ref = refs.normalize(name)
    # A second import of the same content waits for the first, then reuses it.
    with ctx.store.key_lock(f"image:{src.identity}"):
        return _import(ctx, src, ref, progress, replace)


def same_content(a: str | None, b: str | None) -> bool:
    """Whether two identities name the same manifest (a pulled image records
    ``oci://REPO@DIGEST``, an imported one the bare digest)."""
    return bool(a) and bool(b) and (a or "").rpartition("@")[2] == (b or "").rpartition("@")[2]


def _import(ctx: Context, src: ImageSource, ref: str, progress: bool,
            replace: bool = False) -> Image:
    existing = ctx.store.find(Image, ref)
    if existing is not None:
        if same_content(existing.status.oci_source.id, src.identity):
            log.info("Image %r is already imported (ID %r)", ref, existing.metadata.uid)
            return existing
        if not replace:
            raise Conflict(
                f"image {ref!r} already exists with other content",
                hint=f"remove it first (ignite image rm {ref}) or import under another "
                "name with --name",
            )
        _check_replaceable(ctx, existing, "in containerd")
    image = Image(metadata=ObjectMeta(name=ref, uid=new_uid(), created=now()),
                  spec=ImageSpec(oci=ref))
    image.status.oci_source.id = src.identity
    image.status.platform = src.platform
    twin = next((i for i in ctx.store.list(Image)
                 if i.status.oci_source.id == src.identity), None)
    with ctx.store.creating(image, unique_name=existing is None) as stage:
        if twin is not None:
            # Same content under another name: share the file, build nothing.
            with ctx.store.using(twin):
                os.link(image_file(ctx, twin), stage / IMAGE_FILE)
                shutil.copyfile(ctx.store.dir(twin) / CONFIG_FILE, stage / CONFIG_FILE)
            size = (stage / IMAGE_FILE).stat().st_size
        else:
            size = _build(src, stage, progress, ctx.unpack_limits())
        image.status.oci_source.size = Size(size)
    if existing is not None:
        _swap(ctx, existing, image, "in containerd")  # (its name is the new image's now)
    log.info("Imported OCI image %r (%s) to base image with UID %r", ref, src.identity,
             image.metadata.uid)
    return image


def _build(src: ImageSource, stage: Path, show_progress: bool, limits: UnpackLimits) -> int:
    from ignitevm.images.layers import apply_layers
    from ignitevm.images.rootfs import build_ext4, prepare_tree
    from ignitevm.util.progress import progress

    tree = stage / "rootfs"
    tree.mkdir()
    with progress("Unpacking layers", src.size, enabled=show_progress) as callback:
        apply_layers(src, tree, progress=callback, limits=limits)
    prepare_tree(tree)
    size = build_ext4(tree, stage / IMAGE_FILE)
    shutil.rmtree(tree)
    (stage / CONFIG_FILE).write_text(json.dumps(src.config or {}, indent=2))
    return size


def _name_from_path(path: Path) -> str:
    stem = path.name
    for ext in (".tar.gz", ".tgz", ".tar", ".oci"):
        stem = stem.removesuffix(ext)
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem.lower()).strip("-._")
    return stem or "image"


def ensure_image(ctx: Context, ref: str) -> Image:
    """An image by name, ID prefix, or a local archive path to import; a registry
    reference that is not here is pulled (``ctx.pull_policy``: missing, always, never),
    or with ``ctx.containerd`` read from containerd's store."""
    found = ctx.store.find(Image, ref)
    if found is not None and not _pull_again(ctx, found, ref):
        return found
    if Path(ref).exists() and ("/" in ref or ref.endswith((".tar", ".tgz", ".gz"))):
        return import_image(ctx, ref)
    try:
        normalized = refs.normalize(ref)
    except InvalidInput:
        normalized = ref
    if found is None:
        found = ctx.store.find(Image, normalized)
        if found is not None and not _pull_again(ctx, found, ref):
            return found
    if found is not None:
        return _fetch_image(ctx, ref, again=True)
    try:
        return ctx.store.resolve(Image, ref)
    except NotFound as missing:
        if ctx.pull_policy == "never" or not refs.is_reference(ref) or ref.startswith(
                (".", "/")):
            raise
        try:
            return _fetch_image(ctx, ref, again=False)
        except IgniteError as exc:
            raise not_fetched("image", ref, exc, missing.hint,
                              containerd_source(ctx) is not None) from exc


def looks_like_path(source: str) -> bool:
    """Whether ``source`` reads as a file's path: an uppercase letter (references are
    lowercase but for a host), or a file extension in its last part."""
    last = source.rpartition("/")[2]
    return source != source.lower() or ("." in last and ":" not in last)


def not_fetched(what: str, ref: str, exc: IgniteError, hint: str | None = None,
                containerd: bool = False) -> NotFound:
    """The error for a ``what`` (image, kernel) ``ref`` that is not here and could not
    be fetched (``exc``) from its registry or containerd. A ``ref`` that reads as a
    path (``out/rootfs.img``) and names no file says that too: it was most likely
    meant as one."""
    where = ("nor take it from containerd" if containerd
             else f"and pulling {refs.parse(ref)} failed")
    hint = exc.hint or hint
    missing = path_hint(ref, exc)
    if missing:
        hint = missing + (f"; or: {hint}" if hint else "")
    return NotFound(f"can't find {what} {ref!r} here, {where}: {exc.brief}", hint=hint)


def path_hint(ref: str, exc: IgniteError) -> str | None:
    """What to say when ``ref``, which fetching failed with ``exc``, reads as a path
    and names no file: it was most likely meant as one. None otherwise."""
    path = ref.removesuffix(":latest")  # (a VM's spec holds the reference normalized)
    if looks_like_path(path) and _unreachable(exc) and not _exists(path):
        return f"there is no file or folder {path!r} either: check the path"
    return None


def _unreachable(exc: IgniteError) -> bool:
    """Whether ``exc`` says the reference leads nowhere (no such image, registry or
    host), rather than that something went wrong with what it names."""
    from ignitevm.images.registry.client import NetworkError

    return isinstance(exc, (NotFound, NetworkError))


def _exists(path: str) -> bool:
    try:
        return Path(path).exists()
    except OSError:  # (a folder on the way this user may not read: say nothing of it)
        return True


def containerd_source(ctx: Context) -> ContainerdOptions | None:
    from ignitevm.images.containerd.options import ContainerdOptions

    return ctx.containerd if isinstance(ctx.containerd, ContainerdOptions) else None


def _fetch_image(ctx: Context, ref: str, again: bool) -> Image:
    """Pull ``ref`` from its registry, or read it from containerd (``again``: it is here
    already, and --pull always asks for it afresh)."""
    containerd = containerd_source(ctx)
    if containerd is not None:
        return import_from_containerd(ctx, ref, containerd, replace=again)
    opts = ctx.pull_options if isinstance(ctx.pull_options, PullOptions) else None
    return pull_image(ctx, ref, opts)


def _pull_again(ctx: Context, image: Image, ref: str) -> bool:
    """With --pull always, an image that came from a registry is pulled again by name
    (with --runtime containerd: any image named by a reference is read again)."""
    if ctx.pull_policy != "always" or ref == image.metadata.uid:
        return False
    if containerd_source(ctx) is not None:
        return refs.is_reference(ref) and not ref.startswith((".", "/"))
    return (image.status.oci_source.id or "").startswith("oci://")


def bounded_pull(ctx: Context, opts: PullOptions | None) -> PullOptions:
    """``opts`` with the unpack byte limit: a pull downloads and decompresses no more."""
    from ignitevm.images.limits import byte_limit

    return (opts or PullOptions())._replace(
        max_bytes=byte_limit(ctx.unpack_limits(), str(ctx.root)))


def content_store(ctx: Context) -> ContentStore:
    from ignitevm.images.blobs import ContentStore

    return ContentStore(ctx.root / "content")


def pull_image(ctx: Context, source: str, opts: PullOptions | None = None,
               name: str | None = None) -> Image:
    """Pull ``source`` from its registry; an unchanged tag costs one manifest request."""
    from ignitevm.images.registry.pull import pulling

    image_name = refs.normalize(name) if name else refs.parse(source).familiar()
    ctx.store.ensure()
    existing = ctx.store.find(Image, image_name)
    twin: list[Image] = []

    def known(identity: str) -> bool:
        if existing is not None and existing.status.oci_source.id == identity:
            return True
        if existing is not None:
            _check_replaceable(ctx, existing)
        twin.extend(i for i in ctx.store.list(Image) if i.status.oci_source.id == identity)
        return bool(twin)

    # (the image is built from every layer, each checked against its diff_id then)
    with pulling(content_store(ctx), source, bounded_pull(ctx, opts), known,
                 applied=True) as pulled:
        if existing is not None and existing.status.oci_source.id == pulled.identity:
            up_to_date = existing
        else:
            up_to_date = None
            image = Image(metadata=ObjectMeta(name=image_name, uid=new_uid(), created=now()),
                          spec=ImageSpec(oci=image_name))
            image.status.oci_source.id = pulled.identity
            try:
                _store_pulled(ctx, image, existing is None, twin, pulled.source)
            except Conflict:
                # The same pull ran at the same time and finished first: take its image.
                up_to_date = ctx.store.find(Image, image_name)
                if up_to_date is None or up_to_date.status.oci_source.id != pulled.identity:
                    raise
    if up_to_date is not None:
        pulled.out.line(f"Status: Image is up to date for {image_name}")
        _record_pull(ctx, source, name, pulled, up_to_date)
        return up_to_date
    if existing is not None:
        _swap(ctx, existing, image)
    pulled.out.line(f"Status: Downloaded newer image for {image_name}")
    log.debug("Pulled %s as image %r (ID %s)", pulled.identity, image_name, image.metadata.uid)
    _record_pull(ctx, source, name, pulled, image)
    return image


def _record_pull(ctx: Context, source: str, name: str | None, pulled: Pulled,
                 image: Image) -> None:
    """The record that lets the next ``image pull SOURCE`` of the unchanged tag answer
    with one manifest request (cli/fastpull.py): for the plain form only (no --name,
    this host's platform, a tag), not for Docker Hub (which asks for a token)."""
    from ignitevm.cli import fastpull
    from ignitevm.images.registry.manifests import host_platform

    ref = pulled.ref
    if (name is not None or pulled.wanted != host_platform() or not ref.tag or ref.digest
            or ref.domain == "docker.io"):
        return
    fastpull.write(ctx.root, source, ref, pulled.top.digest, pulled.top.media, pulled.digest,
                   pulled.http, image.metadata.uid, pulled.identity)


def _store_pulled(ctx: Context, image: Image, unique: bool, twin: list[Image],
                  source: ImageSource | None) -> None:
    """Build (or share with a twin) the pulled image's file; the object appears at the end."""
    from ignitevm.api.platform import checked_platform

    with ctx.store.creating(image, unique_name=unique) as stage:
        if twin:
            # (held: an `image rm` or `image prune -a` meanwhile is a clear error)
            with ctx.store.using(twin[0]):
                os.link(image_file(ctx, twin[0]), stage / IMAGE_FILE)
                shutil.copyfile(ctx.store.dir(twin[0]) / CONFIG_FILE, stage / CONFIG_FILE)
            size = (stage / IMAGE_FILE).stat().st_size
            image.status.platform = checked_platform(twin[0].status.platform)
        else:
            assert source is not None
            image.status.platform = source.platform
            # (layers are applied as they arrive; the download bars show progress)
            size = _build(source, stage, False, ctx.unpack_limits())
            _check_runnable(stage / IMAGE_FILE, source.config, image.metadata.name)
        image.status.oci_source.size = Size(size)


def _check_runnable(ext4: Path, config: dict[str, object], name: str) -> None:
    """An image needs /sbin/init (a link is fine) or an Entrypoint/Cmd to run as a VM:
    say so at pull time rather than at boot."""
    from ignitevm.util.proc import run

    if config.get("Entrypoint") or config.get("Cmd"):
        return
    out = run(["debugfs", "-R", "stat /sbin/init", ext4], check=False)
    if "not found" in (out.stderr + out.stdout).lower() or out.returncode != 0:
        raise InvalidInput(f"image {name} cannot run as a VM: it has no /sbin/init and no "
                           "Entrypoint or Cmd", hint="pull an image with an init system or "
                           "a command to run")


def _check_replaceable(ctx: Context, old: Image, where: str = "in its registry") -> None:
    """A tag that moved replaces the old image, unless a VM or a snapshot still
    needs it."""
    from ignitevm.api.types import VM
    from ignitevm.operations.snapshots import users_of

    users = [vm.metadata.name for vm in ctx.store.list(VM)
             if vm.spec.image.oci == old.metadata.name]
    if users:
        raise Conflict(
            f"image {old.metadata.name!r} now names other content {where}, and VMs "
            f"use the old one ({', '.join(sorted(users))})",
            hint="remove those VMs first, or pull it under another name with --name")
    snaps = users_of(ctx, old)
    if snaps:
        raise Conflict(
            f"image {old.metadata.name!r} now names other content {where}, and snapshot "
            f"{snaps[0].metadata.name!r} needs the old one",
            hint="remove the snapshot first (ignite snapshot rm), or pull it under another "
            "name with --name")


def _swap(ctx: Context, old: Image, new: Image, where: str = "in its registry") -> None:
    """Remove ``old`` now that ``new`` holds its name: checked again while no VM
    can be made over it (the first check came before a build that may take
    minutes). Refused: the new image goes, the old one stays as it was."""
    try:
        with ctx.store.using(old, exclusive=True):
            _check_replaceable(ctx, old, where)
            ctx.store.delete(old)
    except NotFound:
        pass  # (removed meanwhile: nothing to replace)
    except BaseException:
        ctx.store.delete(new)
        raise


class Pruned(NamedTuple):
    images: list[Image]  # removed
    blobs: list[str]  # removed blob digests (and ingest/<hex> partial downloads)
    reclaimed: int  # bytes


def prune(ctx: Context, all_images: bool = False) -> Pruned:
    """Remove every image no VM uses (with ``all_images``; each is refused, and
    kept, while a VM or anything else needs it, as ``image rm`` refuses), then
    the blobs of the shared content store that no image or kernel needs.

    Every image here has a name, so none is "dangling" as Docker means it:
    without ``all_images`` only blobs go."""
    from ignitevm.api.types import Kernel
    from ignitevm.images import gc
    from ignitevm.operations.vms import remove_base

    removed: list[Image] = []
    reclaimed = 0
    for image in ctx.store.list(Image) if all_images else []:
        size = _own_bytes(ctx.store.dir(image))
        try:
            remove_base(ctx, image)
        except (Conflict, NotFound) as exc:  # in use (or removed meanwhile): kept
            log.debug("Keeping image %r: %s", image.metadata.name, exc)
            continue
        removed.append(image)
        reclaimed += size

    def roots() -> list[str]:
        ids = [o.status.oci_source.id or "" for o in [*ctx.store.list(Image),
                                                      *ctx.store.list(Kernel)]]
        return [i.rpartition("@")[2] for i in ids if i.startswith("oci://")]

    blobs = gc.collect(content_store(ctx), roots)
    return Pruned(removed, [b.digest for b in blobs],
                  reclaimed + sum(b.size for b in blobs))


def _own_bytes(folder: Path) -> int:
    """What removing ``folder`` frees: its files not linked from elsewhere (an image
    file shared with a twin image stays)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if st.st_nlink == 1:
                total += st.st_blocks * 512  # (an image file is sparse)
    return total
