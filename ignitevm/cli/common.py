"""Helpers shared by the command handlers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    import re

    from ignitevm.operations.context import Context


def context(args: argparse.Namespace) -> Context:
    from ignitevm.operations.context import Context, default_root

    root = Path(args.root) if getattr(args, "root", None) else default_root()
    ctx = Context(root=root, accel=getattr(args, "accel", None))
    ctx.unpack_limit = getattr(args, "unpack_limit", None)
    if ctx.unpack_limit is not None:  # checked now, even if nothing is unpacked
        from ignitevm.util.sizes import parse_size

        parse_size(ctx.unpack_limit, "--unpack-limit")
    ctx.config_file = getattr(args, "ignite_config", None)
    return ctx


def starting_context(args: argparse.Namespace) -> Context:
    """The context of a command that starts VMs: the accelerator may also come
    from $IGNITE_ACCEL or the Configuration's ``spec.accel`` (flag first)."""
    import os

    from ignitevm.errors import InvalidInput

    ctx = context(args)
    source = "--accel"
    if not ctx.accel:
        ctx.accel, source = os.environ.get("IGNITE_ACCEL") or None, "IGNITE_ACCEL"
    if not ctx.accel:
        from ignitevm.cli.config import load_configuration

        cfg = load_configuration(getattr(args, "ignite_config", None)) or {}
        ctx.accel = (cfg.get("spec") or {}).get("accel") or None
        source = "the Configuration's spec.accel"
    if ctx.accel not in (None, "auto", "kvm", "tcg"):
        raise InvalidInput(f"invalid accelerator {ctx.accel!r} (from {source})",
                           hint="use auto, kvm or tcg")
    ctx.sandbox = sandbox_mode(args)
    return ctx


def sandbox_mode(args: argparse.Namespace) -> str:
    """How VMs are confined: --sandbox, else $IGNITE_SANDBOX, else the
    Configuration's ``spec.sandbox``, else jail for root and none for other
    users (their QEMU runs as themselves, with no privilege to drop; the
    jail needs root)."""
    import os

    from ignitevm.errors import InvalidInput

    mode, source = getattr(args, "sandbox", None), "--sandbox"
    if not mode:
        mode, source = os.environ.get("IGNITE_SANDBOX") or None, "IGNITE_SANDBOX"
    if not mode:
        from ignitevm.cli.config import load_configuration

        cfg = load_configuration(getattr(args, "ignite_config", None)) or {}
        mode, source = (cfg.get("spec") or {}).get("sandbox"), "spec.sandbox"
        mode = mode or ("jail" if os.geteuid() == 0 else "none")
    if mode not in ("jail", "none"):
        raise InvalidInput(f"invalid sandbox {mode!r} (from {source})",
                           hint="use jail (the default) or none (unconfined, for debugging)")
    return str(mode)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded with spaces, as docker prints them."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def emit(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def dump(objs: Any, fmt: str) -> str:
    from ignitevm.api import codec

    if fmt == "yaml":
        import yaml

        # (PyYAML writes what is not printable ASCII as escapes: allow_unicode stays off)
        return yaml.safe_dump(codec.to_builtins(objs), sort_keys=True)
    return ascii_json(codec.to_json(objs))


def ascii_json(text: str) -> str:
    """JSON text with every character past ``~`` (DEL, C1 controls, bidi overrides and
    the rest of non-ASCII) written as ``\\uXXXX``: a record or an image config's text
    reaches the terminal as escapes (the encoder escapes C0 controls itself). Outside
    strings JSON is ASCII, so this escapes only inside them; the value reads the same."""
    if text.isascii() and "\x7f" not in text:
        return text
    import re

    return re.sub(r"[^\x00-\x7e]", _u_escape, text)


def _u_escape(match: re.Match[str]) -> str:
    n = ord(match.group())
    if n <= 0xFFFF:
        return f"\\u{n:04x}"
    n -= 0x10000
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"


def list_objects(args: argparse.Namespace, typ: type, headers: list[str],
                 row: Any) -> int:
    """`image ls` / `kernel ls`: a table, IDs only (-q), or -o json|yaml."""
    ctx = context(args)
    objs = ctx.store.list(typ)
    if args.quiet:
        for o in objs:
            emit(o.metadata.uid)
    elif getattr(args, "output", "table") in ("json", "yaml"):
        emit(dump(objs, args.output))
    else:
        emit(table(headers, [row(o) for o in objs]))
    return 0


def remove_objects(args: argparse.Namespace, typ: type, queries: list[str]) -> int:
    """`rmi` / `rmk`: resolve every name first, then remove; print each ID."""
    from ignitevm.operations.vms import remove_base

    ctx = context(args)
    targets = [ctx.store.resolve(typ, q) for q in queries]
    for obj in targets:
        remove_base(ctx, obj, force=args.force)
        emit(obj.metadata.uid)
    return 0
