"""``ignited`` entry point. GitOps and the manifest daemon are still to come."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ignited", description="Keep this host's VMs in line with manifests.")
    subs = parser.add_subparsers(title="commands", metavar="COMMAND")
    v = subs.add_parser("version", help="print the version")
    v.add_argument("-o", "--output", default="")
    v.set_defaults(cmd="version")
    args = parser.parse_args(argv)
    if getattr(args, "cmd", None) == "version":
        from ignitevm.cli.misc import cmd_version

        return cmd_version(args)
    parser.print_help(sys.stdout)
    return 0
