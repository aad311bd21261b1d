"""Kernels shipped as OCI images, the way Ignite shipped them.

An Ignite kernel image holds ``/boot/vmlinux`` (often a link, relative or
absolute, to ``/boot/vmlinux-<version>``) and usually the matching modules in
``/lib/modules/<version>/``. Any source :func:`open_source` reads works: a
docker-archive, an oci-archive or an OCI layout directory. Images with only a
compressed kernel (``/boot/vmlinuz*`` or ``/boot/bzImage``) are accepted too.

The image's links are followed as if ``dest`` were the root directory, so an
absolute link (``/boot/vmlinux-5.10`` or even ``/etc/passwd``) never reaches a
host file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ignitevm.errors import InvalidInput
from ignitevm.images.archive import open_source
from ignitevm.images.layers import apply_layers
from ignitevm.images.limits import UnpackLimits
from ignitevm.images.source import ImageSource
from ignitevm.kernels.inside import resolve_inside
from ignitevm.kernels.version import is_kernel, kernel_version
from ignitevm.log import log, step
from ignitevm.util import proc

# Kernel file names in /boot, best first; "-*" takes the names that start so.
_KERNEL_NAMES = ("vmlinux", "vmlinux-*", "vmlinuz", "vmlinuz-*", "bzImage", "bzImage-*")
_HINT = (
    "a kernel image holds /boot/vmlinux (as Ignite's kernel images do), /boot/vmlinuz*"
    " or /boot/bzImage; a bare kernel file is imported with: ignite kernel import ./vmlinux"
)


def extract_kernel_image(path: Path, dest: Path, limits: UnpackLimits | None = None
                         ) -> tuple[Path, Path | None, str]:
    """Unpack the kernel image at ``path`` into ``dest``.

    Returns the kernel file, the modules directory (``lib/modules/<version>``,
    with a ``modules.dep``; None if the image has no modules for this kernel)
    and the kernel version. Both paths are inside ``dest``.
    """
    with open_source(Path(path)) as source:
        return extract_kernel_source(source, path, dest, limits)


def extract_kernel_source(source: ImageSource, path: Path | str, dest: Path,
                          limits: UnpackLimits | None = None) -> tuple[Path, Path | None, str]:
    """:func:`extract_kernel_image` for an opened source (a pulled image, ...);
    ``path`` names it in messages."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    with step(f"unpacking kernel image {path}"):
        apply_layers(source, Path(root), limits=limits)
    kernel, name = _find_kernel(root, path)
    version = kernel_version(Path(kernel))
    if version == "<unknown>":
        version = _version_from_name(name) or _single_modules_dir(root) or version
    if "/" in version or version in (".", ".."):
        raise InvalidInput(f"kernel image {path}: the kernel has an invalid version {version!r}")
    modules = _modules(root, version, path)
    log.debug("kernel image %s: kernel %s, version %s, modules %s", path, kernel, version, modules)
    return Path(kernel), None if modules is None else Path(modules), version


def _find_kernel(root: str, source: Path | str) -> tuple[str, str]:
    """(path, name in /boot) of the image's kernel file."""
    boot = resolve_inside(root, "boot")
    names = sorted(os.listdir(boot)) if boot is not None and os.path.isdir(boot) else []
    for pattern in _KERNEL_NAMES:
        if pattern.endswith("*"):
            found = [n for n in names if n.startswith(pattern[:-1])]
            if len(found) > 1:
                log.debug("%s has several kernels (%s); using %s", source, found, found[-1])
            found = found[-1:]
        else:
            found = [pattern] if pattern in names else []
        for name in found:
            kernel = resolve_inside(root, f"boot/{name}")
            if kernel is None or not stat.S_ISREG(os.lstat(kernel).st_mode):
                link = f"{boot}/{name}"
                what = f"a link to {os.readlink(link)!r}" if os.path.islink(link) else "it"
                raise InvalidInput(
                    f"kernel image {source}: /boot/{name} is {what}, which is not a file"
                    " in the image",
                    hint="the image is incomplete; rebuild it",
                )
            if not is_kernel(Path(kernel)):
                raise InvalidInput(
                    f"kernel image {source}: /boot/{name} is not a Linux kernel"
                    " (neither an ELF vmlinux nor a bzImage)"
                )
            return kernel, os.path.basename(kernel)
    raise InvalidInput(
        f"{source} holds no kernel: it has no /boot/vmlinux, /boot/vmlinuz* or /boot/bzImage",
        hint=_HINT,
    )


def _version_from_name(name: str) -> str | None:
    for prefix in ("vmlinux-", "vmlinuz-", "bzImage-"):
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix) :]
    return None


def _modules_dirs(root: str) -> list[str]:
    mods = resolve_inside(root, "lib/modules")
    if mods is None or not os.path.isdir(mods):
        return []
    return sorted(e.name for e in os.scandir(mods) if e.is_dir(follow_symlinks=False))


def _single_modules_dir(root: str) -> str | None:
    found = _modules_dirs(root)
    return found[0] if len(found) == 1 else None


def _modules(root: str, version: str, source: Path | str) -> str | None:
    """The modules directory for ``version``, with a modules.dep (made by depmod if missing)."""
    mods = resolve_inside(root, f"lib/modules/{version}")
    if mods is None or not os.path.isdir(mods):
        others = _modules_dirs(root)
        if others:
            log.warning(
                "kernel image %s has modules for %s but not for its kernel %s; using none",
                source, ", ".join(others), version,
            )
        return None
    dep = os.path.join(mods, "modules.dep")
    if os.path.isfile(dep) and not os.path.islink(dep):
        return mods
    # depmod resolves -b BASE/lib/modules/VERSION with the host's root: refuse a
    # path that a link would take out of the image.
    if os.path.realpath(os.path.join(root, "lib", "modules", version)) != mods:
        raise InvalidInput(
            f"kernel image {source}: /lib/modules/{version} has no modules.dep, and is reached"
            " through an absolute link, so depmod cannot run on it safely",
            hint="run depmod when building the image",
        )
    # depmod follows links while it walks the tree and writes modules.* here: no
    # link of the image may lead it out (`kernel/x -> /` would have it read the
    # host's tree). They are removed from this private copy first (`build` and
    # `source` links are the usual ones; no module is reached only through one).
    for dirpath, dirnames, filenames in os.walk(mods):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                log.debug("kernel image %s: ignoring the link %s", source, path[len(root):])
                os.unlink(path)
    log.debug("kernel image %s has no modules.dep; running depmod", source)
    proc.run(["depmod", "-b", root, version], timeout=120)
    if not os.path.isfile(dep):
        raise InvalidInput(f"kernel image {source}: depmod made no modules.dep for {version}")
    return mods
