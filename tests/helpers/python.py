"""Python code run in an interpreter of its own (what a fresh CLI process
imports, a module's state at start-up): its standard output."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping


def python_out(code: str, env: Mapping[str, str] | None = None,
               cwd: str | os.PathLike[str] | None = None) -> str:
    """``python -c code`` with this interpreter; its stdout (it must exit 0)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=env, cwd=cwd).stdout
