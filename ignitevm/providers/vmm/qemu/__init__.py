"""The QEMU provider: ``microvm`` machine, KVM where a guest really boots with it, else TCG."""

from __future__ import annotations

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:
    from typing import Any

    from ignitevm.providers.vmm.qemu.machine import QemuVMM

__all__ = ["QemuVMM"]


def __getattr__(name: str) -> Any:
    # Lazy, so that a light module of this package (args) costs only itself.
    if name == "QemuVMM":
        from ignitevm.providers.vmm.qemu.machine import QemuVMM

        return QemuVMM
    raise AttributeError(name)
