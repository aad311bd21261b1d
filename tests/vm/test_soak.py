"""The soak's short cut (bench/soak.py --short: 12 create/start/exec/cp/stop/rm
cycles from 2 workers, with the CLI killed mid-command, QEMU killed, the guest's
agent killed and, as root, the store's filesystem filled) must end clean: every
cycle ran, no command failed or printed a traceback, nothing leaked, nothing
was lost or damaged, and the VM kept through it all still answers exec.

It uses a state root of its own (on a loop-mounted ext4 when run as root), not
the session's, since it fills its filesystem and counts what is left in it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import soak


def test_the_short_soak_is_clean(kernel_debs: list[Path], tmp_path: Path) -> None:
    for tool in ("qemu-system-x86_64", "qemu-img", "busybox", "mkfs.ext4"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (run scripts/setup.sh)")
    for deb in kernel_debs:  # (the session's download of the kernel package)
        shutil.copy(deb, tmp_path)
    _report, summary = soak.run(cycles=12, workers=2, network="user", seed=12,
                                deb_cache=tmp_path)
    assert soak.problems(summary) == [], json.dumps(summary, indent=2)
