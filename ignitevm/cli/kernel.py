"""``ignite kernel ...``: import, ls, rm."""

from __future__ import annotations

import argparse
from pathlib import Path

from ignitevm.api.types import Kernel
from ignitevm.cli.common import context, emit, list_objects, remove_objects
from ignitevm.util.human import age


def cmd_import(args: argparse.Namespace) -> int:
    from ignitevm.cli.image import (
        as_path_too,
        containerd_options,
        pull_options,
        refuse_bad_reference,
    )
    from ignitevm.operations.kernels import (
        DEBIAN_ALIASES,
        import_kernel,
        import_kernel_from_containerd,
        is_registry_ref,
        pull_kernel,
    )

    if args.source not in DEBIAN_ALIASES:
        refuse_bad_reference(args.source, "kernel")
    ctx = context(args)
    if is_registry_ref(args.source) and not Path(args.source).exists():
        if (containerd := containerd_options(args)) is not None:
            kernel = import_kernel_from_containerd(ctx, args.source, containerd, args.name)
        else:
            with as_path_too(args.source, "kernel"):
                kernel = pull_kernel(ctx, args.source, pull_options(args), args.name)
    else:
        kernel = import_kernel(ctx, args.source, args.name)
    if args.quiet:
        emit(kernel.metadata.uid)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    return list_objects(args, Kernel, ["KERNEL ID", "NAME", "CREATED", "SIZE", "VERSION"],
                        lambda o: [o.metadata.uid, o.metadata.name, age(o.metadata.created),
                                   str(o.status.oci_source.size), o.status.version])


def cmd_rm(args: argparse.Namespace) -> int:
    return remove_objects(args, Kernel, args.kernels)
