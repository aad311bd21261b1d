"""Build the guest-side programs from source with the host's gcc (static binaries)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ignitevm.errors import IgniteError
from ignitevm.log import log
from ignitevm.util.proc import run, which

# program -> its C sources in ignitevm/guest/ (headers beside them are included).
PROGRAMS: dict[str, tuple[str, ...]] = {
    "ignite-init": ("init.c", "init_cfg.c", "init_env.c", "init_fs.c", "net.c", "wipe.c"),
    "ignite-agent": ("agent.c", "agent_loop.c", "agent_exec.c", "agent_tar.c", "agent_untar.c",
                     "agent_restore.c", "net.c", "wipe.c"),
}
HEADERS: tuple[str, ...] = ("agent.h", "init.h", "net.h", "wipe.h")
CFLAGS: tuple[str, ...] = ("-static", "-Os", "-s", "-Wall", "-pthread")


def source(name: str) -> bytes:
    """A guest source file (they are installed as package data, on disk)."""
    return (Path(__file__).parent / name).read_bytes()


def sources_digest(program: str) -> str:
    h = hashlib.sha256(" ".join(CFLAGS).encode() + b"\0")
    for name in (*PROGRAMS[program], *HEADERS):
        try:
            h.update(name.encode() + b"\0" + source(name))
        except FileNotFoundError:
            continue
    return h.hexdigest()[:16]


def build(program: str, cache: Path) -> Path:
    """Return the path of ``program`` built statically, compiling it once per source."""
    out = cache / "guest" / f"{program}-{sources_digest(program)}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    which("gcc")
    log.debug("building %s", program)
    with tempfile.TemporaryDirectory(dir=out.parent) as work:
        for name in (*PROGRAMS[program], *HEADERS):
            try:
                (Path(work) / name).write_bytes(source(name))
            except FileNotFoundError:
                continue
        tmp = Path(work) / program
        run(["gcc", *CFLAGS, "-o", tmp,
             *[Path(work) / s for s in PROGRAMS[program]]],
            hint="the static build needs gcc and libc6-dev: apt-get install gcc libc6-dev")
        os.replace(tmp, out)
    if not out.exists():
        raise IgniteError(f"building {program} produced no binary")
    return out
