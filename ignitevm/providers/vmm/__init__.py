"""Virtual machine monitors. ``get(name)`` returns the provider for a VMM name."""

from __future__ import annotations

from ignitevm.errors import InvalidInput

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:
    from ignitevm.providers.vmm.base import VMM


def get(name: str = "qemu") -> VMM:
    if name == "qemu":
        from ignitevm.providers.vmm.qemu import QemuVMM

        return QemuVMM()
    raise InvalidInput(f"unknown VMM {name!r}", hint="this host supports: qemu")
