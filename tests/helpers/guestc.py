"""Parts of the guest's C programs (ignitevm/guest/) built on the host with a
small test driver of tests/helpers/, to run them without a VM."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

GUEST = Path(__file__).resolve().parents[2] / "ignitevm" / "guest"
HELPERS = Path(__file__).resolve().parent


def build_driver(tmp_path_factory: pytest.TempPathFactory, driver: str,
                 *sources: str) -> Path:
    """tests/helpers/<driver>.c linked with the guest sources named; skips
    without gcc."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (run scripts/setup.sh)")
    out = tmp_path_factory.mktemp(driver) / driver
    subprocess.run(["gcc", "-Wall", "-Werror", "-I", str(GUEST), "-o", str(out),
                    str(HELPERS / f"{driver}.c"), *(str(GUEST / s) for s in sources)],
                   check=True)
    return out
