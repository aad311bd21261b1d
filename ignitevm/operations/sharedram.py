"""A snapshot's RAM, shared by its clones (filled in with the shared-RAM scheme)."""

from __future__ import annotations

from pathlib import Path


def release(snapdir: Path) -> None:
    """Let go of what the host holds for a snapshot's shared RAM (safe to repeat)."""
