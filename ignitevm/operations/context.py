"""What every operation needs: the store, the root folder and the chosen providers."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.store.layout import DEFAULT_ROOT, default_root  # noqa: F401 (imported from here)

if TYPE_CHECKING:
    from ignitevm.images.limits import UnpackLimits
    from ignitevm.providers.vmm.base import VMM
    from ignitevm.store.store import Store


class Context:
    def __init__(self, root: Path | None = None, vmm_name: str = "qemu",
                 accel: str | None = None, sandbox: str = "jail"):
        self.root = root if root is not None else default_root()
        self.vmm_name = vmm_name
        self.accel = accel  # None/"auto": probe
        self.sandbox = sandbox  # "jail" | "none": how each VMM is confined
        # Images and kernels named but not here: "missing" pulls them, "always" pulls
        # registry ones again, "never" refuses; pull_options: images.PullOptions or None.
        self.pull_policy = "missing"
        self.pull_options: object = None
        # With --runtime containerd (or the Configuration's spec.runtime): where missing
        # images and kernels are read from instead (containerd.options.ContainerdOptions).
        self.containerd: object = None
        # Bounds on what unpacking an image may write: the --unpack-limit flag's
        # text and the Configuration file, read only when an image is unpacked.
        self.unpack_limit: str | None = None
        self.config_file: str | None = None

    def unpack_limits(self) -> UnpackLimits:
        from ignitevm.images.limits import configured

        return configured(self.unpack_limit, self.config_file)

    @cached_property
    def store(self) -> Store:
        from ignitevm.store.store import Store

        store = Store(self.root)
        store.secure()  # one stat; puts right a root made with loose modes
        return store

    @cached_property
    def vmm(self) -> VMM:
        from ignitevm.providers import vmm

        return vmm.get(self.vmm_name)

    @property
    def cache(self) -> Path:
        return self.root / "cache"
