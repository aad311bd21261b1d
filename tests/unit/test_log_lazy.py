"""ignitevm.log shows the CLI's messages without loading the logging module (CLI start-up)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from ignitevm import log as L
L.setup(sys.argv[1])
with L.step("a step"):
    L.log.debug("hidden %s", 1)
print("logging" in sys.modules, flush=True)
L.log.info("shown %s", 2)
print("logging" in sys.modules, flush=True)
L.log.warning("careful %d", 3)
L.log.error("bad")
L.log.debug("hidden too")
"""


def _run(level: str, first: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", first + SCRIPT, level], capture_output=True,
                          text=True, cwd=REPO, check=True)


def test_not_loaded() -> None:
    res = _run("info")
    assert res.stdout.split() == ["False", "False"]
    assert res.stderr == "shown 2\nwarning: careful 3\nerror: bad\n"
    res = _run("info", "import logging\n")  # (then through it: the same lines)
    assert res.stdout.split() == ["True", "True"]
    assert res.stderr == "shown 2\nwarning: careful 3\nerror: bad\n"


def test_levels_as_before() -> None:
    assert _run("error").stderr == "error: bad\n"
    lines = _run("debug").stderr.splitlines()
    assert lines[2].startswith("debug: a step: done in ")
    assert lines[:2] + lines[3:] == ["debug: a step...", "debug: hidden 1", "shown 2",
                                     "warning: careful 3", "error: bad", "debug: hidden too"]


def test_through_logging_once_it_is_loaded(caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from ignitevm.log import log

    with caplog.at_level(logging.DEBUG, logger="ignitevm"):
        log.debug("seen %s", "here")
    assert [r.getMessage() for r in caplog.records] == ["seen here"]
    assert caplog.records[0].filename == "test_log_lazy.py"  # (the caller, not log.py)


def test_a_line_written_but_not_flushed_is_not_written_again() -> None:
    """stderr takes the line but its flush fails: the line is not written a
    second time through logging (whose handler would flush it again)."""
    script = """
import sys
from ignitevm import log as L
class Stream:
    lines = []
    def write(self, text):
        self.lines.append(text)
        return len(text)
    def flush(self):
        raise OSError(5, "Input/output error")
real, sys.stderr = sys.stderr, Stream()
L.setup("info")
L.log.info("once %s", 1)
L.log.warning("and once")
got, sys.stderr = sys.stderr, real
print(repr(got.lines))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert res.stdout.strip() == repr(["once 1\n", "warning: and once\n"])


def test_the_write_lock_is_reentrant_and_free_in_a_forked_child() -> None:
    """A signal handler may log while its thread writes a line; a child forked
    while another thread wrote one must not find the lock held for ever."""
    script = """
import os, sys
from ignitevm import log as L
L.setup("info")
with L._WRITING:
    if L._WRITING.acquire(blocking=False):      # (a plain lock: logging here would hang)
        L._WRITING.release()
        L.log.info("inside")
    pid = os.fork()
    if pid == 0:
        os._exit(0 if L._WRITING.acquire(blocking=False) else 3)
    _, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=REPO)
    assert (res.returncode, res.stdout, res.stderr) == (0, "0\n", "inside\n")
