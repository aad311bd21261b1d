"""``ignite image ...``: import, pull, build, ls, rm, prune."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ignitevm.api.types import Image
from ignitevm.cli.common import context, emit, list_objects, remove_objects
from ignitevm.util.human import age

if TYPE_CHECKING:
    from ignitevm.images.containerd.options import ContainerdOptions
    from ignitevm.images.registry.options import PullOptions
    from ignitevm.operations.context import Context


def pull_options(args: argparse.Namespace) -> PullOptions:
    """Registry flags, then the Configuration's ``spec.registryConfigDir`` (as Ignite) and
    ``spec.insecureRegistries`` (a list of HOST[:PORT])."""
    from ignitevm.images.registry.options import PullOptions

    config_dir = getattr(args, "registry_config_dir", None)
    insecure = list(getattr(args, "insecure_registry", None) or ())
    from ignitevm.cli.config import load_configuration

    spec = (load_configuration(getattr(args, "ignite_config", None)) or {}).get("spec") or {}
    if config_dir is None:
        config_dir = spec.get("registryConfigDir") or None
    extra = spec.get("insecureRegistries") or []
    if isinstance(extra, list):
        insecure += [str(name) for name in extra]
    show = "quiet" if getattr(args, "quiet", False) else "auto"
    return PullOptions(getattr(args, "platform", None), config_dir, tuple(insecure), show)


def set_pull_policy(ctx: Context, args: argparse.Namespace) -> None:
    """What run/create do with an image or kernel that is not here (--pull), and where
    they take it from: its registry, or with --runtime containerd containerd's store."""
    ctx.pull_policy = getattr(args, "pull", None) or "missing"
    ctx.containerd = containerd_options(args)
    if ctx.containerd is None:
        ctx.pull_options = pull_options(args)


def is_local_source(source: str) -> bool:
    """A path (to import) rather than a registry reference (to pull)."""
    from pathlib import Path

    from ignitevm.api.refs import is_reference

    return (Path(source).exists() or source.startswith((".", "/", "~"))
            or source.endswith((".tar", ".tgz", ".tar.gz")) or not is_reference(source))


def refuse_bad_reference(source: str, what: str = "image") -> None:
    """A source that is no file, is not plainly a path and holds ``:``, ``/`` or ``@``
    was meant as a registry reference: if it is a malformed one, say why. If it looks
    like a path all the same (``out/bzImage``, ``build/rootfs.img``), say both: that
    there is no such file, and why it is no reference either."""
    from pathlib import Path

    from ignitevm.api.refs import parse
    from ignitevm.errors import InvalidInput
    from ignitevm.operations.images import looks_like_path

    if Path(source).exists() or source.startswith((".", "/", "~")) or source.endswith(
            (".tar", ".tgz", ".tar.gz")) or not any(c in source for c in ":/@"):
        return
    try:
        parse(source)
    except InvalidInput as exc:
        if not looks_like_path(source):
            raise
        why = exc.brief.removeprefix(f"invalid image reference {source!r}").lstrip(": ")
        raise InvalidInput(
            f"unknown {what} {source!r}: no such file, and not a valid image reference"
            + (f" ({why})" if why else ""),
            hint="check the path" + (" of the bzImage/vmlinux file" if what == "kernel"
                                     else " of the archive or folder")
            + ", or name an image like 'registry.example/team/app:1'") from None


def containerd_options(args: argparse.Namespace) -> ContainerdOptions | None:
    """Where to read images from with ``--runtime containerd`` (or the Configuration's
    ``spec.runtime: containerd``, as Ignite); None to pull them from their registry.
    The socket and namespace: flag, Configuration, ``$CONTAINERD_ADDRESS`` /
    ``$CONTAINERD_NAMESPACE`` (as ctr), default."""
    import os

    from ignitevm.cli.config import load_configuration
    from ignitevm.errors import InvalidInput
    from ignitevm.images.containerd import options

    spec = (load_configuration(getattr(args, "ignite_config", None)) or {}).get("spec") or {}
    runtime = getattr(args, "runtime", None)
    if runtime == "docker":
        raise InvalidInput("images cannot be read from docker's store",
                           hint="save it to an archive and import that: docker save IMAGE "
                           "-o image.tar && ignite image import image.tar")
    if runtime not in (None, "", "qemu", "containerd"):
        raise InvalidInput(f"invalid runtime {runtime!r}, must be one of [containerd qemu]")
    if (runtime or spec.get("runtime")) != "containerd":
        return None
    return options.ContainerdOptions(
        getattr(args, "containerd_socket", None) or spec.get("containerdSocket")
        or os.environ.get("CONTAINERD_ADDRESS") or options.DEFAULT_SOCKET,
        getattr(args, "containerd_namespace", None) or spec.get("containerdNamespace")
        or os.environ.get("CONTAINERD_NAMESPACE") or options.DEFAULT_NAMESPACE,
        getattr(args, "platform", None))


def cmd_import(args: argparse.Namespace) -> int:
    from ignitevm.operations.images import import_from_containerd, import_image, pull_image

    refuse_bad_reference(args.source)
    ctx = context(args)
    if is_local_source(args.source):  # (whatever the runtime: a file is a file)
        image = import_image(ctx, args.source, args.name, progress=sys.stderr.isatty())
    elif (containerd := containerd_options(args)) is not None:
        image = import_from_containerd(ctx, args.source, containerd, args.name,
                                       progress=sys.stderr.isatty())
    else:
        with as_path_too(args.source, "image"):
            image = pull_image(ctx, args.source, pull_options(args), args.name)
    if args.quiet:
        emit(image.metadata.uid)
    return 0


@contextmanager
def as_path_too(source: str, what: str) -> Iterator[None]:
    """An import's pull of ``source`` failed: if ``source`` reads as a path, say
    that no such file exists either (``image import out/rootfs.img``)."""
    from ignitevm.errors import IgniteError
    from ignitevm.operations.images import not_fetched, path_hint

    try:
        yield
    except IgniteError as exc:
        if path_hint(source, exc) is None:  # (not a path's name, or not a failure to find it)
            raise
        raise not_fetched(what, source, exc) from exc


def cmd_pull(args: argparse.Namespace) -> int:
    from ignitevm.operations.images import pull_image

    ctx = context(args)
    image = pull_image(ctx, args.source, pull_options(args), args.name)
    if args.quiet:
        emit(image.metadata.uid)
    else:
        from ignitevm.api.refs import parse

        emit(str(parse(args.source)))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from ignitevm.images.build import build_base
    from ignitevm.operations.images import import_image

    ctx = context(args)
    archive = build_base(ctx.cache)
    image = import_image(ctx, str(archive), args.name, progress=sys.stderr.isatty())
    if args.quiet:
        emit(image.metadata.uid)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    return list_objects(args, Image, ["IMAGE ID", "NAME", "CREATED", "SIZE"],
                        lambda o: [o.metadata.uid, o.metadata.name, age(o.metadata.created),
                                   str(o.status.oci_source.size)])


def cmd_rm(args: argparse.Namespace) -> int:
    return remove_objects(args, Image, args.images)


def cmd_prune(args: argparse.Namespace) -> int:
    """Docker's ``image prune``: ask (unless -f), remove, list what went, total the space."""
    from ignitevm.operations.images import prune

    if not args.force:
        what = ("all images without at least one VM associated to them" if args.all
                else "all dangling images")
        sys.stdout.write(f"WARNING! This will remove {what}, and every stored blob no "
                         "image or kernel needs.\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        answer = sys.stdin.readline()
        if not answer:
            sys.stdout.write("\n")  # (no input: the prompt's line ends here)
        if answer.strip().lower() not in ("y", "yes"):
            return 0
    ctx = context(args)
    pruned = prune(ctx, all_images=args.all)
    if args.quiet:
        for image in pruned.images:
            emit(image.metadata.uid)
        return 0
    lines = [f"untagged: {i.metadata.name}\ndeleted: {i.metadata.uid}" for i in pruned.images]
    lines += [f"deleted: {digest}" for digest in pruned.blobs]
    if lines:
        emit("Deleted Images:\n" + "\n".join(lines) + "\n\n")
    emit(f"Total reclaimed space: {_docker_size(pruned.reclaimed)}")
    return 0


def _docker_size(n: int) -> str:
    """Sizes as Docker prints them (decimal units, 4 significant digits: 1.711GB, 0B)."""
    value, units = float(n), ["B", "kB", "MB", "GB", "TB", "PB"]
    while value >= 1000 and len(units) > 1:
        value, units = value / 1000, units[1:]
    return f"{value:.4g}{units[0]}"
