"""The one store of VM, Image and Kernel objects on this host."""

from ignitevm.store.store import Store

__all__ = ["Store"]
