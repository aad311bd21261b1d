"""What a pull is told by the command line (kept free of imports: the CLI path reads it)."""

from __future__ import annotations

from typing import NamedTuple


class PullOptions(NamedTuple):
    platform: str | None = None  # os/arch[/variant]; default: this host's
    config_dir: str | None = None  # --registry-config-dir
    insecure: tuple[str, ...] = ()  # --insecure-registry
    show: str = "auto"  # progress: "auto" (a terminal?), "tty", "plain", "quiet"
    # The most the layers may take, downloaded and decompressed (each counted
    # apart; None: unbounded here, unpacking bounds them anyway).
    max_bytes: int | None = None
