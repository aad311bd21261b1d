"""The QEMU provider: ``microvm`` machine, KVM where a guest really boots with it, else TCG."""

from ignitevm.providers.vmm.qemu.machine import QemuVMM

__all__ = ["QemuVMM"]
