"""``ignite version``."""

from __future__ import annotations

import argparse
import json
import platform

from ignitevm import __version__
from ignitevm.cli.common import emit
from ignitevm.errors import InvalidInput


def version_info() -> dict[str, object]:
    major, minor = __version__.split(".")[:2]
    return {
        "igniteVersion": {
            "major": major, "minor": minor, "gitVersion": f"v{__version__}",
            "gitCommit": "", "gitTreeState": "", "buildDate": "",
            "goVersion": "", "compiler": f"python{platform.python_version()}",
            "platform": f"linux/{platform.machine()}",
        },
        "vmm": {"name": "qemu"},
    }


def cmd_version(args: argparse.Namespace) -> int:
    info = version_info()
    if args.output == "short":
        emit(f"v{__version__}")
    elif args.output == "json":
        emit(json.dumps(info, indent=2))
    elif args.output == "yaml":
        import yaml

        emit(yaml.safe_dump(info, sort_keys=False))
    elif args.output:
        raise InvalidInput(f"invalid output format: {args.output}", hint="use short, json or yaml")
    else:
        emit(f"Ignite version: ignitevm v{__version__} (Python {platform.python_version()}, "
             f"linux/{platform.machine()})\nVMM: QEMU")
    return 0
