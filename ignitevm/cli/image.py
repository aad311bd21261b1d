"""``ignite image ...``: import, build, ls, rm."""

from __future__ import annotations

import argparse
import sys

from ignitevm.api.types import Image
from ignitevm.cli.common import context, emit, list_objects, remove_objects
from ignitevm.util.human import age


def cmd_import(args: argparse.Namespace) -> int:
    from ignitevm.operations.images import import_image

    ctx = context(args)
    image = import_image(ctx, args.source, args.name, progress=sys.stderr.isatty())
    if args.quiet:
        emit(image.metadata.uid)
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
