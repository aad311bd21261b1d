"""Build the guest-side helpers from source with the host's gcc (static binaries)."""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

from ignitevm.errors import IgniteError
from ignitevm.log import log
from ignitevm.util.proc import run, which

PROGRAMS = {"ignite-resize": "resize.c"}


def source(name: str) -> bytes:
    return resources.files("ignitevm.guest").joinpath(name).read_bytes()


def build(program: str, cache: Path) -> Path:
    """Return the path of ``program`` built statically, compiling it once per source."""
    src = source(PROGRAMS[program])
    digest = hashlib.sha256(src).hexdigest()[:16]
    out = cache / "guest" / f"{program}-{digest}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    which("gcc")
    c_file = out.with_suffix(".c")
    c_file.write_bytes(src)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    log.debug("building %s", program)
    run(
        ["gcc", "-static", "-Os", "-s", "-Wall", "-o", tmp, c_file],
        hint="the static build needs gcc and libc6-dev: apt-get install gcc libc6-dev",
    )
    os.replace(tmp, out)
    c_file.unlink()
    if not out.exists():
        raise IgniteError(f"building {program} produced no binary")
    return out
