"""One progress bar for long transfers (image unpacking, copies), on a terminal only."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


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
