"""Import and remove kernels."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.api import refs
from ignitevm.api.defaults import DEFAULT_KERNEL, now
from ignitevm.api.types import Kernel, KernelSpec, ObjectMeta, Size
from ignitevm.errors import IgniteError, InvalidInput, NotFound
from ignitevm.kernels.initramfs import collect_modules, initramfs_for
from ignitevm.log import log
from ignitevm.operations.context import Context
from ignitevm.util.ids import new_uid

if TYPE_CHECKING:
    from ignitevm.images.containerd.options import ContainerdOptions
    from ignitevm.images.registry.options import PullOptions
    from ignitevm.images.source import ImageSource

KERNEL_FILE = "vmlinuz"  # a bzImage, when no ELF vmlinux could be had
VMLINUX_FILE = "vmlinux"
MODULES_DIR = "modules"
DEBIAN_ALIASES = ("debian", "debian-cloud", DEFAULT_KERNEL)


def kernel_files(ctx: Context, kernel: Kernel) -> tuple[Path, Path]:
    """The kernel file and the initramfs (assembled on first use) for a VM start."""
    d = ctx.store.dir(kernel)
    elf = d / VMLINUX_FILE
    return (elf if elf.exists() else d / KERNEL_FILE), initramfs_for(d, ctx.cache)


def import_kernel(ctx: Context, source: str, name: str | None = None) -> Kernel:
    """Import Debian's cloud kernel (``debian``) or a kernel file; reuse one already there."""
    # (imported here: starting a VM needs none of this)
    from ignitevm.kernels.version import is_kernel

    is_debian = source in DEBIAN_ALIASES
    path = Path(source)
    if not is_debian and not path.exists() and is_registry_ref(source):
        return pull_kernel(ctx, source, None, name)
    if not is_debian and not path.exists():
        raise InvalidInput(
            f"unknown kernel {source!r}: not an imported kernel, nor a file",
            hint="import Debian's cloud kernel with 'ignite kernel import debian', "
            "or give the path of a bzImage/vmlinux file",
        )
    # A bare kernel file, or else an Ignite-style kernel OCI image (archive or layout).
    bare = not is_debian and path.is_file() and is_kernel(path)
    embedded = None
    if not name and not is_debian and not bare:
        from ignitevm.images.archive import open_source

        with open_source(path) as src:
            embedded = src.ref
    ref = refs.normalize(name or embedded or
                         (DEFAULT_KERNEL if is_debian else _name_from_path(path)))
    # A second import of the same name waits for the first, then reuses it.
    with ctx.store.key_lock(f"kernel:{ref}"):
        existing = ctx.store.find(Kernel, ref)
        if existing is not None:
            log.info("Kernel %r is already imported (ID %r)", ref, existing.metadata.uid)
            return existing
        return _import(ctx, ref, path, is_debian, bare)


def _import(ctx: Context, ref: str, path: Path, is_debian: bool, bare: bool) -> Kernel:
    from ignitevm.kernels import debian
    from ignitevm.kernels.version import kernel_version

    kernel = Kernel(metadata=ObjectMeta(name=ref, uid=new_uid(), created=now()),
                    spec=KernelSpec(oci=ref))
    with ctx.store.creating(kernel) as stage, ctx.store.workdir("kernel-") as work:
        if is_debian:
            unpacked = debian.fetch(ctx.cache, Path(work))
            _store_kernel(unpacked.kernel, stage)
            modules: Path | None = unpacked.modules
            kernel.status.version = unpacked.version
            kernel.status.oci_source.id = (
                f"deb://{unpacked.package}@{unpacked.package_version}")
        elif bare:
            _store_kernel(path, stage)
            modules = None
            kernel.status.version = kernel_version(path)
        else:
            from ignitevm.images.archive import open_source
            from ignitevm.kernels.oci import extract_kernel_image

            file, modules, kernel.status.version = extract_kernel_image(path, Path(work),
                                                                      ctx.unpack_limits())
            _store_kernel(file, stage)
            with open_source(path) as src:
                kernel.status.oci_source.id = src.identity
                kernel.status.platform = src.platform
        if modules is not None:
            collect_modules(modules, stage / MODULES_DIR)
        size = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file())
        kernel.status.oci_source.size = Size(size)
    log.info("Imported kernel %r (version %s) with ID %r", ref, kernel.status.version,
             kernel.metadata.uid)
    return kernel


def _store_kernel(src: Path, stage: Path) -> None:
    """Keep an ELF vmlinux (PVH boot, no in-guest decompression), else the bzImage."""
    from ignitevm.kernels.vmlinux import extract_vmlinux

    with src.open("rb") as f:
        is_elf = f.read(4) == b"\x7fELF"
    if is_elf:
        shutil.copyfile(src, stage / VMLINUX_FILE)
    elif not extract_vmlinux(src, stage / VMLINUX_FILE):
        shutil.copyfile(src, stage / KERNEL_FILE)


def _name_from_path(path: Path) -> str:
    stem = path.name.split(".")[0].lower() or "kernel"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in stem)




def ensure_kernel(ctx: Context, ref: str) -> Kernel:
    """The kernel a VM names; Debian's default kernel is imported on first use, and a
    registry reference is pulled as ``ctx.pull_policy`` says (missing, always, never)."""
    from ignitevm.operations.images import containerd_source

    containerd = containerd_source(ctx)
    kernel = ctx.store.find(Kernel, ref)
    again = kernel is not None and ctx.pull_policy == "always" and ref != kernel.metadata.uid \
        and (is_registry_ref(ref) if containerd is not None
             else (kernel.status.oci_source.id or "").startswith("oci://"))
    if kernel is not None and not again:
        return kernel
    if ref in DEBIAN_ALIASES:
        return import_kernel(ctx, "debian")
    if kernel is not None:
        return _fetch_kernel(ctx, ref)
    try:
        return ctx.store.resolve(Kernel, ref)
    except NotFound as missing:
        if ctx.pull_policy == "never" or not is_registry_ref(ref):
            raise
        try:
            return _fetch_kernel(ctx, ref)
        except IgniteError as exc:
            from ignitevm.operations.images import not_fetched

            raise not_fetched("kernel", ref, exc, missing.hint, containerd is not None) from exc


def _fetch_kernel(ctx: Context, ref: str) -> Kernel:
    """Pull the kernel image ``ref`` from its registry, or read it from containerd."""
    from ignitevm.images.registry.options import PullOptions
    from ignitevm.operations.images import containerd_source

    containerd = containerd_source(ctx)
    if containerd is not None:
        return import_kernel_from_containerd(ctx, ref, containerd)
    opts = ctx.pull_options if isinstance(ctx.pull_options, PullOptions) else None
    return pull_kernel(ctx, ref, opts)


def is_registry_ref(text: str) -> bool:
    """A registry reference rather than a path or a kernel name of ours."""
    return (text not in DEBIAN_ALIASES and not text.startswith((".", "/", "~"))
            and refs.is_reference(text))


def pull_kernel(ctx: Context, source: str, opts: PullOptions | None = None,
                name: str | None = None) -> Kernel:
    """Pull an Ignite-style kernel image (``/boot/vmlinux`` + ``/lib/modules``)."""
    from ignitevm.images.registry.pull import pulling
    from ignitevm.operations.images import bounded_pull, content_store

    kname = refs.normalize(name) if name else refs.parse(source).familiar()
    ctx.store.ensure()
    existing = ctx.store.find(Kernel, kname)
    kernel = Kernel(metadata=ObjectMeta(name=kname, uid=new_uid(), created=now()),
                    spec=KernelSpec(oci=kname))
    with pulling(content_store(ctx), source, bounded_pull(ctx, opts),
                 lambda identity: existing is not None) as pulled:
        if existing is not None:
            if existing.status.oci_source.id != pulled.identity:
                log.info("Kernel %r is already imported (ID %r); remove it to pull it again",
                         kname, existing.metadata.uid)
            return existing
        assert pulled.source is not None
        _build_from_source(ctx, kernel, pulled.source, str(pulled.ref), pulled.identity)
    log.info("Pulled kernel %r (version %s) with ID %r", kname, kernel.status.version,
             kernel.metadata.uid)
    return kernel


def import_kernel_from_containerd(ctx: Context, source: str, opts: ContainerdOptions,
                                  name: str | None = None) -> Kernel:
    """Import the kernel image named ``source`` in a running containerd's store."""
    from ignitevm.images.containerd.source import open_containerd

    with open_containerd(source, opts) as src:
        ref = refs.normalize(name or src.ref or source)
        with ctx.store.key_lock(f"kernel:{ref}"):
            existing = ctx.store.find(Kernel, ref)
            if existing is not None:
                from ignitevm.operations.images import same_content

                if same_content(existing.status.oci_source.id, src.identity):
                    log.info("Kernel %r is already imported (ID %r)", ref,
                             existing.metadata.uid)
                else:  # (as a pull: a kernel is never replaced under its VMs)
                    log.warning("kernel %r names other content in containerd now; the one "
                                "imported before (ID %r) is kept: remove it (ignite kernel rm) "
                                "to import it again", ref, existing.metadata.uid)
                return existing
            kernel = Kernel(metadata=ObjectMeta(name=ref, uid=new_uid(), created=now()),
                            spec=KernelSpec(oci=ref))
            _build_from_source(ctx, kernel, src, str(src.path), src.identity)
    log.info("Imported kernel %r (version %s) with ID %r", ref, kernel.status.version,
             kernel.metadata.uid)
    return kernel


def _build_from_source(ctx: Context, kernel: Kernel, source: ImageSource, label: str,
                       identity: str) -> None:
    """Store the kernel (and modules) of an opened kernel image; ``label`` names it."""
    from ignitevm.kernels.oci import extract_kernel_source

    with ctx.store.creating(kernel) as stage, ctx.store.workdir("kernel-") as work:
        file, modules, kernel.status.version = extract_kernel_source(
            source, label, Path(work), ctx.unpack_limits())
        _store_kernel(file, stage)
        if modules is not None:
            collect_modules(modules, stage / MODULES_DIR)
        kernel.status.oci_source.id = identity
        kernel.status.platform = source.platform
        size = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file())
        kernel.status.oci_source.size = Size(size)
