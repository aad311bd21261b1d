"""Long-running processes of the tests: read their stderr until some words have appeared;
start one and wait until it says it serves; stop one."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator

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


def terminate(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not ended after ``timeout`` seconds; reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serving(proc: subprocess.Popen[bytes], marker: str, name: str, log: list[str],
            deadline: float) -> Iterator[None]:
    """Collect ``proc``'s stderr lines into ``log`` (in a thread, for as long as it runs)
    and enter once a line holds ``marker``; RuntimeError "``name`` did not start" (with
    its last lines) if it ends, or has not said so within ``deadline`` seconds, first.
    At exit the process is stopped."""
    ready = threading.Event()

    def read_log() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            log.append(line)
            if marker in line:
                ready.set()
        ready.set()  # exited

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        if not ready.wait(deadline) or proc.poll() is not None:
            raise RuntimeError(f"{name} did not start:\n" + "\n".join(log[-10:]))
        yield
    finally:
        terminate(proc)
        reader.join(timeout=10)
