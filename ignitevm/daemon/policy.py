"""What a manifest read by ``ignited`` may take from the host.

At the CLI, ``copyFiles``, ``volumes`` and ``--ssh=KEY`` are the caller's own
choice. A manifest that ``ignited`` reads was written by whoever can write to
its folder or Git repository, and that must not make them root on every host:
such a manifest may only read host files below the folders, and attach the
block devices, that the host's Configuration allows::

    apiVersion: ignite.weave.works/v1alpha4
    kind: Configuration
    spec:
      manifestPolicy:
        copyFilesFrom: [/srv/vm-files]        # copyFiles hostPath and ssh key files
        volumes: [/dev/vdb, /dev/disk/by-id/virtio-data-*]   # devices, globs allowed

Nothing is allowed by default. Paths are resolved (symlinks followed) before
they are checked, so a link below an allowed folder cannot point outside it.
A manifest may not name a local image archive either: import it first
(``ignite image import``) and name the image.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ignitevm.api.types import VM
from ignitevm.errors import InvalidInput

SETTING = "spec.manifestPolicy"


@dataclass(frozen=True)
class ManifestPolicy:
    copy_files_from: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    where: str = "the Configuration"  # the file it came from, for messages

    @classmethod
    def from_configuration(cls, cfg: dict[str, Any] | None, where: str) -> ManifestPolicy:
        spec = (cfg or {}).get("spec") or {}
        raw = spec.get("manifestPolicy") or {}
        if not isinstance(raw, dict):
            raise InvalidInput(f"{where}: {SETTING} must be a mapping",
                               hint="give copyFilesFrom: [folders] and volumes: [devices]")
        unknown = set(raw) - {"copyFilesFrom", "volumes"}
        if unknown:
            raise InvalidInput(f"{where}: unknown {SETTING} field {sorted(unknown)[0]!r}",
                               hint="the fields are copyFilesFrom and volumes")
        lists = {}
        for key in ("copyFilesFrom", "volumes"):
            items = raw.get(key) or []
            if not isinstance(items, list) or not all(
                    isinstance(i, str) and i.startswith("/") for i in items):
                raise InvalidInput(f"{where}: {SETTING}.{key} must be a list of absolute paths")
            lists[key] = tuple(items)
        return cls(lists["copyFilesFrom"], lists["volumes"], where)

    def check(self, vm: VM) -> None:
        """Refuse the first host path or device of ``vm`` that is not allowed."""
        spec = vm.spec
        what = f"VM {vm.metadata.name or vm.metadata.uid!r}"
        if spec.image.oci.startswith((".", "/")):
            raise InvalidInput(
                f"{what}: a manifest read by ignited may not import the local archive "
                f"{spec.image.oci}", hint="import it first (ignite image import PATH) and "
                "name the image in the manifest")
        for f in spec.copy_files:
            self._check_file(what, "copyFiles hostPath", f.host_path)
        if isinstance(spec.ssh, str) and spec.ssh not in ("", "true"):
            key = Path(spec.ssh).expanduser()
            if key.suffix != ".pub":
                key = key.with_name(key.name + ".pub")
            self._check_file(what, "ssh public key", str(key))
        for vol in spec.storage.volumes:
            device = vol.block_device.path if vol.block_device else ""
            if not self._device_allowed(device):
                raise InvalidInput(
                    f"{what}: volume device {device} is not allowed by {SETTING}.volumes "
                    f"in {self.where} ({', '.join(self.volumes) or 'nothing allowed'})",
                    hint=f"add the device to {SETTING}.volumes in the Configuration "
                    "(--ignite-config), or remove the volume from the manifest")

    def _check_file(self, what: str, field: str, path: str) -> None:
        real = os.path.realpath(path)
        for folder in self.copy_files_from:
            top = os.path.realpath(folder)
            if os.path.commonpath([real, top]) == top:
                return
        raise InvalidInput(
            f"{what}: {field} {path} is not below a folder in {SETTING}.copyFilesFrom "
            f"of {self.where} ({', '.join(self.copy_files_from) or 'nothing allowed'})",
            hint=f"add a folder to {SETTING}.copyFilesFrom in the Configuration "
            "(--ignite-config), or remove the path from the manifest")

    def _device_allowed(self, device: str) -> bool:
        """The resolved device matches a pattern, or is what an existing entry
        matching a pattern resolves to (so /dev/disk/by-id/... globs work)."""
        import glob

        if not device.startswith("/"):
            return False
        real = os.path.realpath(device)
        for pattern in self.volumes:
            if fnmatch.fnmatchcase(real, pattern):
                return True
            if any(os.path.realpath(p) == real for p in glob.glob(pattern)):
                return True
        return False
