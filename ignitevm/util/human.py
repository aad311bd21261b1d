"""Human-friendly durations, as `ps` and `images` show them."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def duration(seconds: float) -> str:
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h{m}m" if m and h < 6 else f"{h}h"
    if s < 86400 * 365 * 2:
        return f"{s // 86400}d"
    return f"{s // (86400 * 365)}y"


def since(stamp: str | None) -> float | None:
    """Seconds since an RFC 3339 UTC stamp (``2000-01-01T01:00:00Z``); None if unset."""
    if not stamp:
        return None
    try:
        then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return time.time() - then.timestamp()


def age(stamp: str | None) -> str:
    """``duration`` of ``since``, or ``?`` for a missing or bad stamp."""
    seconds = since(stamp)
    return "?" if seconds is None else duration(seconds)
