"""The one store of VM, Image and Kernel objects on this host."""

from __future__ import annotations

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:
    from typing import Any

    from ignitevm.store.store import Store

__all__ = ["Store"]


def __getattr__(name: str) -> Any:
    # Lazy: store.lookup alone (exec's fast path) needs no msgspec.
    if name == "Store":
        from ignitevm.store.store import Store

        return Store
    raise AttributeError(name)
