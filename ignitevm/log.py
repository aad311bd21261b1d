"""Logging set-up: messages go to stderr so that stdout stays for results.

The logging module (with traceback, threading and the rest it loads, ~8 ms of
a CLI start) is not imported for the CLI's messages: once set up, a message
below the level is dropped and one at or above it is written to stderr as the
handler below would write it. Once logging is loaded, by anything (a library,
pytest, a message with ``exc_info``), every message goes through it.
"""

from __future__ import annotations

import _thread
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:
    import logging

# (logging's own numbers: DEBUG, INFO, WARNING, ERROR, CRITICAL)
_LEVELS = {
    "panic": 50,
    "fatal": 50,
    "error": 40,
    "warn": 30,
    "warning": 30,
    "info": 20,
    "debug": 10,
    "trace": 10,
}

LEVEL_NAMES = tuple(_LEVELS)
# One line at a time, as logging's handler lock; re-entrant (a signal handler
# may log while the line it interrupted is being written), and made anew in a
# forked child (another thread may have held it at the fork: no one would
# release the child's copy).
_WRITING = _thread.RLock()


def _after_fork() -> None:
    global _WRITING
    _WRITING = _thread.RLock()


os.register_at_fork(after_in_child=_after_fork)


class _Logger:
    """The ``ignitevm`` logger: :mod:`logging`'s once it is loaded; until then a
    shown message is written as its handler would write it."""

    def __init__(self) -> None:
        self._level: int | None = None  # set up, logging not loaded yet
        self._real: logging.Logger | None = None

    def debug(self, msg: object, *args: object, **kwargs: object) -> None:
        self._emit(10, msg, args, kwargs)

    def info(self, msg: object, *args: object, **kwargs: object) -> None:
        self._emit(20, msg, args, kwargs)

    def warning(self, msg: object, *args: object, **kwargs: object) -> None:
        self._emit(30, msg, args, kwargs)

    def error(self, msg: object, *args: object, **kwargs: object) -> None:
        self._emit(40, msg, args, kwargs)

    def _emit(self, levelno: int, msg: object, args: tuple[object, ...],
              kwargs: dict[str, object]) -> None:
        real, level = self._real, self._level
        if real is None and level is not None and "logging" not in sys.modules:
            if levelno < level:
                return
            # (exc_info and the like: logging's; a line not written: logging
            # then says what it says of it)
            if not kwargs and _write(levelno, msg, args):
                return
        if real is None:
            real = self._real = _load(level)
        real.log(levelno, msg, *args, stacklevel=3, **kwargs)  # type: ignore[arg-type]


log = _Logger()


def _write(levelno: int, msg: object, args: tuple[object, ...]) -> bool:
    """Write a message's line to stderr; False if it could not be (the line is
    not written). Written but not flushed is written: it stays buffered, and
    is not to be written a second time."""
    try:
        text = _line(levelno, _message(msg, args)) + "\n"
        with _WRITING:
            sys.stderr.write(text)
            try:
                sys.stderr.flush()
            except Exception:
                pass
    except Exception:
        return False
    return True


def _message(msg: object, args: tuple[object, ...]) -> str:
    """``msg % args``, as logging.LogRecord.getMessage makes it."""
    from collections.abc import Mapping

    if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        return str(msg) % args[0]
    return str(msg) % args if args else str(msg)


def _line(levelno: int, msg: str) -> str:
    """A message as it is shown."""
    if levelno >= 40:
        return f"error: {msg}"
    if levelno >= 30:
        return f"warning: {msg}"
    if levelno <= 10:
        return f"debug: {msg}"
    return msg


def _load(level: int | None) -> logging.Logger:
    """logging's ``ignitevm`` logger, set up at ``level`` (None: as it is)."""
    import logging

    class Formatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return _line(record.levelno, record.getMessage())

    real = logging.getLogger("ignitevm")
    if level is not None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(Formatter())
        real.handlers[:] = [handler]
        real.setLevel(level)
        real.propagate = False
    return real


def setup(level: str = "info") -> None:
    levelno = _LEVELS.get(level.lower(), 20)
    log._level, log._real = levelno, None
    if "logging" in sys.modules:  # (loaded already: set it up now)
        log._real = _load(levelno)


@contextmanager
def step(text: str) -> Iterator[None]:
    """Log a step at debug level with the time it took."""
    start = time.monotonic()
    log.debug("%s...", text)
    yield
    log.debug("%s: done in %.2fs", text, time.monotonic() - start)
