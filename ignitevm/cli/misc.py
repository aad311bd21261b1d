"""``ignite version``."""

from __future__ import annotations

import argparse
import platform

from ignitevm import __version__
from ignitevm.cli.common import emit
from ignitevm.errors import InvalidInput

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def _qemu_version() -> str:
    import re
    import subprocess

    try:
        out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    m = re.search(r"version (\d+\.\d+\.\d+)", out)
    return f"v{m.group(1)}" if m else ""


def version_info() -> dict[str, object]:
    """The keys of Ignite's version object (scripts read them), with ours in them."""
    from ignitevm.api.defaults import DEFAULT_KERNEL

    major, minor = __version__.split(".")[:2]
    kname, _, ktag = DEFAULT_KERNEL.partition(":")
    return {
        "igniteVersion": {
            "major": major, "minor": minor, "gitVersion": f"v{__version__}",
            "gitCommit": "", "gitTreeState": "", "buildDate": "",
            "goVersion": "", "compiler": f"python{platform.python_version()}",
            "platform": f"linux/{_GOARCH.get(platform.machine(), platform.machine())}",
            "sandboxImage": {"name": "", "tag": "", "delimeter": ""},
            "kernelImage": {"name": kname, "tag": ktag, "delimeter": ":"},
        },
        "qemuVersion": {"gitVersion": _qemu_version()},
    }


def _go_struct(typename: str, fields: dict[str, object]) -> str:
    """A Go %#v rendering, as Ignite printed its version."""
    parts = []
    for key, value in fields.items():
        name = key[0].upper() + key[1:]
        if isinstance(value, dict):
            parts.append(f"{name}:{_go_struct('version.Image', value)}")
        else:
            parts.append(f'{name}:"{value}"')
    return f"{typename}{{{', '.join(parts)}}}"


def cmd_version(args: argparse.Namespace) -> int:
    if args.output not in ("", "short", "json", "yaml"):
        raise InvalidInput(f"invalid output format: {args.output}", hint="use short, json or yaml")
    if args.output == "short":
        emit(f"v{__version__}")
        return 0
    info = version_info()
    if args.output == "json":
        import json

        emit(json.dumps(info, indent=2))
    elif args.output == "yaml":
        import yaml

        emit(yaml.safe_dump(info, sort_keys=False))
    else:
        ignite = info["igniteVersion"]
        qemu = info["qemuVersion"]
        assert isinstance(ignite, dict) and isinstance(qemu, dict)
        emit(f"Ignite version: {_go_struct('version.Info', ignite)}\n"
             f"QEMU version: {qemu['gitVersion'] or 'not installed'}")
    return 0
