"""``ignite kernel ...``: import, ls, rm."""

from __future__ import annotations

import argparse

from ignitevm.api.types import Kernel
from ignitevm.cli.common import context, dump, emit, table
from ignitevm.cli.image import age


def cmd_import(args: argparse.Namespace) -> int:
    from ignitevm.operations.kernels import import_kernel

    ctx = context(args)
    kernel = import_kernel(ctx, args.source, args.name)
    if args.quiet:
        emit(kernel.metadata.uid)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    ctx = context(args)
    objs = ctx.store.list(Kernel)
    if args.quiet:
        for o in objs:
            emit(o.metadata.uid)
    elif getattr(args, "output", "table") in ("json", "yaml"):
        emit(dump(objs, args.output))
    else:
        emit(table(["KERNEL ID", "NAME", "CREATED", "SIZE", "VERSION"],
                   [[o.metadata.uid, o.metadata.name, age(o.metadata.created),
                     str(o.status.oci_source.size), o.status.version] for o in objs]))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from ignitevm.operations.kernels import remove_kernel

    ctx = context(args)
    targets = [ctx.store.resolve(Kernel, q) for q in args.kernels]
    for kernel in targets:
        remove_kernel(ctx, kernel, force=args.force)
        emit(kernel.metadata.uid)
    return 0
