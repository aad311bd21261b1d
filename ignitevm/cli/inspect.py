"""``ignite inspect <kind> <object>``."""

from __future__ import annotations

import argparse

from ignitevm.api.types import VM, Image, Kernel, Snapshot
from ignitevm.cli.common import context, dump, emit
from ignitevm.errors import InvalidInput

_KINDS = {"vm": VM, "image": Image, "kernel": Kernel, "snapshot": Snapshot}


def cmd_inspect(args: argparse.Namespace) -> int:
    typ = _KINDS.get(args.kind.lower())
    if typ is None:
        raise InvalidInput(f"unrecognized kind: {args.kind!r}",
                           hint="use vm, image, kernel or snapshot")
    if args.output not in ("json", "yaml") and not args.template:
        raise InvalidInput(f"unrecognized output format: {args.output!r}",
                           hint="use -o json or -o yaml")
    ctx = context(args)
    obj = ctx.store.resolve(typ, args.object)  # type: ignore[type-var]
    if typ is VM:
        from ignitevm.cli.vm import live

        obj = live(ctx, obj)  # type: ignore[arg-type]
    if args.template:
        from ignitevm.cli.templates import render

        emit(render(args.template, obj))
    else:
        emit(dump(obj, args.output))
    return 0
