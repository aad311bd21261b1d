"""Read a long-running process's stderr until some words have appeared."""

from __future__ import annotations

import subprocess
import threading

# Only so that a broken build fails instead of hanging the suite; no timing is tested.
GIVE_UP = 300.0


def read_until(proc: subprocess.Popen[str], *words: str, lines: list[str] | None = None
               ) -> list[str]:
    """Lines of ``proc``'s stderr up to the one where all ``words`` have been seen.
    The process is killed (and the test fails with what it said) if it ends first
    or has not got there after GIVE_UP seconds."""
    seen = [] if lines is None else lines
    assert proc.stderr is not None
    watchdog = threading.Timer(GIVE_UP, proc.kill)
    watchdog.start()
    try:
        for line in proc.stderr:
            seen.append(line)
            if all(any(w in s for s in seen) for w in words):
                return seen
    finally:
        watchdog.cancel()
    raise AssertionError(f"process ended ({proc.wait()}) before saying {words}: {''.join(seen)}")
