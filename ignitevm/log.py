"""Logging set-up: messages go to stderr so that stdout stays for results.

The logging module (with traceback, threading and the rest it loads, ~8 ms of
a CLI start) is imported with the first message shown at the level set up:
a command that logs nothing at that level (a clone's start, say) does not load
it. Once it is loaded, by the first such message or by anything else (a
library, pytest), every message goes through it as before.
"""

from __future__ import annotations

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


class _Logger:
    """The ``ignitevm`` logger: :mod:`logging`'s, loaded when first needed."""

    def __init__(self) -> None:
        self._level: int | None = None  # set up, logging not loaded yet
        self._real: logging.Logger | None = None

    def _get(self, levelno: int) -> logging.Logger | None:
        """The logger to hand a message at ``levelno`` to; None: it would not show."""
        if self._real is None:
            if self._level is not None and levelno < self._level and (
                    "logging" not in sys.modules):
                return None
            self._real = _load(self._level)
        return self._real

    def debug(self, msg: object, *args: object, **kwargs: object) -> None:
        if (real := self._get(10)) is not None:
            real.debug(msg, *args, stacklevel=2, **kwargs)  # type: ignore[arg-type]

    def info(self, msg: object, *args: object, **kwargs: object) -> None:
        if (real := self._get(20)) is not None:
            real.info(msg, *args, stacklevel=2, **kwargs)  # type: ignore[arg-type]

    def warning(self, msg: object, *args: object, **kwargs: object) -> None:
        if (real := self._get(30)) is not None:
            real.warning(msg, *args, stacklevel=2, **kwargs)  # type: ignore[arg-type]

    def error(self, msg: object, *args: object, **kwargs: object) -> None:
        if (real := self._get(40)) is not None:
            real.error(msg, *args, stacklevel=2, **kwargs)  # type: ignore[arg-type]


log = _Logger()


def _load(level: int | None) -> logging.Logger:
    """logging's ``ignitevm`` logger, set up at ``level`` (None: as it is)."""
    import logging

    class Formatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            msg = record.getMessage()
            if record.levelno >= logging.ERROR:
                return f"error: {msg}"
            if record.levelno >= logging.WARNING:
                return f"warning: {msg}"
            if record.levelno <= logging.DEBUG:
                return f"debug: {msg}"
            return msg

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
