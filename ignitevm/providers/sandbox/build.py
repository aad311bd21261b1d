"""Build the jail helper from its C source with the host's gcc (a static binary),
once per source version, into the state root's cache."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ignitevm.log import log
from ignitevm.util.proc import run, which

SOURCE = Path(__file__).with_name("jail.c")


def helper(cache: Path) -> Path:
    """The path of the built ``ignite-jail`` (in the state root's cache: root's
    only, or the user's without root, who runs it unconfined: ``-n``)."""
    src = SOURCE.read_bytes()
    out = cache / "sandbox" / f"ignite-jail-{hashlib.sha256(src).hexdigest()[:16]}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    which("gcc")
    log.debug("building ignite-jail")
    with tempfile.TemporaryDirectory(dir=out.parent) as work:
        (Path(work) / "jail.c").write_bytes(src)
        tmp = Path(work) / "ignite-jail"
        run(["gcc", "-static", "-Os", "-s", "-Wall", "-o", tmp, Path(work) / "jail.c"],
            hint="the jail helper (also every VM's console writer) needs gcc and "
                 "libc6-dev: apt-get install gcc libc6-dev")
        os.chmod(tmp, 0o700)
        os.replace(tmp, out)
    return out
