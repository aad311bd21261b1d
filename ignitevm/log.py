"""Logging set-up: messages go to stderr so that stdout stays for results."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("ignitevm")

_LEVELS = {
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}

LEVEL_NAMES = tuple(_LEVELS)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"warning: {msg}"
        if record.levelno <= logging.DEBUG:
            return f"debug: {msg}"
        return msg


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    log.handlers[:] = [handler]
    log.setLevel(_LEVELS.get(level.lower(), logging.INFO))
    log.propagate = False


@contextmanager
def step(text: str) -> Iterator[None]:
    """Log a step at debug level with the time it took."""
    start = time.monotonic()
    log.debug("%s...", text)
    yield
    log.debug("%s: done in %.2fs", text, time.monotonic() - start)
