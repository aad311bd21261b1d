"""One progress bar for long transfers (image unpacking, copies), on a terminal only."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def progress(label: str, total: int, *, min_total: int = 0, enabled: bool = True
             ) -> Iterator[Callable[[int], None] | None]:
    """Yield a callback taking byte counts, or None when not ``enabled``, stderr
    is not a terminal, or ``total`` is below ``min_total`` (no bar worth drawing)."""
    if not enabled or not sys.stderr.isatty() or total < min_total:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   DownloadColumn(), TransferSpeedColumn(), transient=True)
    task = bar.add_task(label, total=total or None)
    bar.start()
    try:
        yield lambda n: bar.update(task, advance=n)
    finally:
        bar.stop()


class Transfers:
    """Progress of several downloads at once, like ``docker pull``: a bar per item and a
    total on a terminal (``mode="tty"``), one line per step otherwise (``"plain"``),
    nothing with ``"quiet"``. ``update`` may be called from several threads."""

    def __init__(self, mode: str, total: int = 0):
        import threading

        self.mode = mode
        self._lock = threading.Lock()
        self._state: dict[str, str] = {}
        self._tasks: dict[str, object] = {}
        self._bar: object = None
        self._total_task: object = None
        self._done: dict[str, int] = {}
        self._total = total

    def __enter__(self) -> Transfers:
        if self.mode == "tty":
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            bar = Progress("[progress.description]{task.description}", BarColumn(),
                           DownloadColumn(), TransferSpeedColumn(), transient=True,
                           console=Console(stderr=True))
            self._total_task = bar.add_task("total", total=self._total or None)
            bar.start()
            self._bar = bar
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()  # type: ignore[attr-defined]

    def line(self, text: str) -> None:
        if self.mode == "quiet":
            return
        if self._bar is not None:
            self._bar.console.print(text, highlight=False)  # type: ignore[attr-defined]
        else:
            print(text, file=sys.stderr, flush=True)

    def add(self, key: str, label: str, size: int) -> None:
        with self._lock:
            self._done[key] = 0
            self._total += size
            if self._bar is not None:
                self._bar.update(self._total_task, total=self._total)  # type: ignore[attr-defined]
                self._tasks[key] = self._bar.add_task(label, total=size)  # type: ignore[attr-defined]

    def update(self, key: str, done: int, size: int) -> None:
        with self._lock:
            if done < 0:  # already in the store
                self._state[key] = "exists"
                done = size
                if self.mode == "plain":
                    print(f"{key[7:19]}: Already exists", file=sys.stderr, flush=True)
            step = done - self._done.get(key, 0)
            self._done[key] = done
            state = "complete" if done >= size else "downloading"
            if self._state.get(key) == "exists":
                state = "exists"
            changed = self._state.get(key) != state
            self._state[key] = state
            if self._bar is not None:
                bar: Any = self._bar
                if key in self._tasks:
                    bar.update(self._tasks[key], completed=done)
                bar.update(self._total_task, advance=step)
                if changed and state != "downloading":
                    word = "Already exists" if state == "exists" else "Download complete"
                    bar.console.print(f"{key[7:19]}: {word}", highlight=False)
            elif self.mode == "plain" and changed:
                word = "Download complete" if state == "complete" else "Downloading"
                print(f"{key[7:19]}: {word}", file=sys.stderr, flush=True)
