"""VM manifests in a folder (the daemon's folder, or a Git checkout).

As Ignite's manifest storage read them: every ``.yaml``, ``.yml`` and
``.json`` file below the folder is one object; only ``kind: VM`` counts, and
only with a ``metadata.uid`` (the VM's identity across edits and renames).
Files that cannot be read are skipped with a warning, said once per version
of the file, so one bad file never stops the others from being reconciled
(whatever it makes the reader raise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ignitevm.api import codec
from ignitevm.api.types import VM
from ignitevm.api.validation import UID, printable
from ignitevm.errors import IgniteError
from ignitevm.log import log

SUFFIXES = (".yaml", ".yml", ".json")
MAX_MANIFEST = 1 << 20


@dataclass
class ManifestReader:
    folder: Path
    _warned: dict[Path, float] = field(default_factory=dict)

    def read(self) -> dict[str, VM]:
        """The VMs the folder describes, by UID."""
        found: dict[str, VM] = {}
        if not self.folder.is_dir():
            return found
        for path in sorted(self.folder.rglob("*")):
            if path.suffix not in SUFFIXES or ".git" in path.relative_to(self.folder).parts:
                continue
            try:
                vm = self._one(path)
            except Exception as exc:  # a reader's failure this file found: the others go on
                log.debug("reading %s", path, exc_info=True)
                said = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                self._warn(path, f"skipping {path}: cannot be read ({said})")
                continue
            if vm is None:
                continue
            uid = vm.metadata.uid
            if uid in found:
                self._warn(path, f"{path}: VM UID {uid} is also in another file; skipped")
                continue
            found[uid] = vm
        return found

    def _one(self, path: Path) -> VM | None:
        # A Git repository may hold symlinks: one pointing out of the folder
        # (at /etc/shadow...) is not read, nor is anything but a small file.
        real = path.resolve()
        if not real.is_relative_to(self.folder.resolve()):
            self._warn(path, f"skipping {path}: a link to {real}, outside {self.folder}")
            return None
        try:
            if not real.is_file() or real.stat().st_size > MAX_MANIFEST:
                self._warn(path, f"skipping {path}: not a regular file of at most "
                           f"{MAX_MANIFEST >> 10} KiB")
                return None
            text = real.read_text()
            data = codec.load_manifest(text, str(path))
        except (OSError, UnicodeDecodeError) as exc:
            self._warn(path, f"cannot read {path}: {exc}")
            return None
        except IgniteError as exc:
            self._warn(path, f"skipping {path}: {exc.brief}")
            return None
        if data.get("kind") != "VM":
            log.debug("ignoring %s: kind %s", path, data.get("kind"))
            return None
        try:
            vm: VM = codec.decode_object(data, str(path))
        except IgniteError as exc:
            self._warn(path, f"skipping {path}: {exc.brief}")
            return None
        if not vm.metadata.uid:
            self._warn(path, f"skipping {path}: .metadata.uid not set")
            return None
        if not UID.fullmatch(vm.metadata.uid):
            self._warn(path, f"skipping {path}: invalid uid {vm.metadata.uid!r}: must be 16 "
                       "hex characters")
            return None
        return vm

    def _warn(self, path: Path, message: str) -> None:
        try:
            version = path.stat().st_mtime
        except OSError:
            version = 0.0
        if self._warned.get(path) != version:
            self._warned[path] = version
            log.warning("%s", printable(message))
