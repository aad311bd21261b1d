"""Helpers shared by the command handlers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ignitevm.operations.context import Context


def context(args: argparse.Namespace) -> Context:
    from ignitevm.operations.context import Context, default_root

    root = Path(args.root) if getattr(args, "root", None) else default_root()
    return Context(root=root, accel=getattr(args, "accel", None))


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

        return yaml.safe_dump(codec.to_builtins(objs), sort_keys=True)
    return codec.to_json(objs)
