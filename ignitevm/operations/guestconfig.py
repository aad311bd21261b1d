"""The per-VM config handed to the guest at boot, as a small read-only tar disk.

The initramfs init reads it in place and applies it: ``vm.env`` (shell variables),
``net`` (the network, as the lines of a clone's RESTORE), ``hosts`` (used when the
image has no /etc/hosts) and ``files/`` (copied over the root: hostname,
--copy-files, keys). The shared image is never written.
"""

from __future__ import annotations

import io
import os
import shlex
import tarfile
from pathlib import Path
from typing import Any

from ignitevm.agent.protocol import request
from ignitevm.api.types import VM, volume_id
from ignitevm.errors import InvalidInput
from ignitevm.providers.network.base import NetPlan, guest_lines

CONFIG_DISK = "config.tar"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _add_dirs(tar: tarfile.TarFile, path: str, seen: set[str]) -> None:
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d not in seen:
            seen.add(d)
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)


def entrypoint_words(config: dict[str, Any]) -> list[str]:
    entry = config.get("Entrypoint") or []
    cmd = config.get("Cmd") or []
    return [str(w) for w in [*entry, *cmd]]


def env_script(vm: VM) -> str:
    uid = vm.metadata.uid
    lines = [
        f"IGNITE_UID={shlex.quote(uid)}",
        f"IGNITE_NAME={shlex.quote(vm.metadata.name)}",
        f"IGNITE_HOSTNAME={shlex.quote(uid)}",
        "IGNITE_INIT=/sbin/init",
    ]
    # (the guest finds each volume by its disk's serial, "ignite-vol-ID")
    mounts = [f"{volume_id(m.name)}:{m.mount_path}" for m in vm.spec.storage.volume_mounts]
    if mounts:
        lines.append(f"IGNITE_VOLUMES={shlex.quote(' '.join(mounts))}")
    return "\n".join(lines) + "\n"


def entrypoint_request(config: dict[str, Any]) -> bytes | None:
    """The image's Entrypoint+Cmd as an agent request, for images without an init."""
    words = entrypoint_words(config)
    if not words:
        return None
    env = [str(e) for e in config.get("Env") or [] if "=" in str(e)]
    return request(words, env, str(config.get("WorkingDir") or ""), str(config.get("User") or ""))


def hosts_file(uid: str) -> str:
    return (
        "127.0.0.1\tlocalhost\n"
        f"127.0.1.1\t{uid}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\n"
        "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )


def write_config_disk(vm: VM, image_config: dict[str, Any], out: Path,
                      net: NetPlan | None = None) -> Path:
    """Write the config tar for ``vm``; a missing --copy-files source is an error."""
    from ignitevm.operations import sshkeys

    vm_dir = out.parent
    tmp = out.with_name(f".{out.name}.tmp")
    seen: set[str] = set()
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        _add_bytes(tar, "vm.env", env_script(vm).encode())
        if net is not None:
            _add_bytes(tar, "net", "".join(f"{k}={v}\n" for k, v in guest_lines(net)).encode())
        host_key = vm_dir / sshkeys.HOST_KEY
        if host_key.exists():
            _add_bytes(tar, "ssh/ssh_host_ed25519_key", host_key.read_bytes(), 0o600)
            _add_bytes(tar, "ssh/ssh_host_ed25519_key.pub",
                       host_key.with_suffix(".pub").read_bytes())
        keys = sshkeys.authorized_keys(vm, vm_dir)
        if keys:
            _add_bytes(tar, "ssh/authorized_keys", keys.encode(), 0o600)
        entry = entrypoint_request(image_config)
        if entry is not None:
            _add_bytes(tar, "entrypoint", entry)
        _add_bytes(tar, "hosts", hosts_file(vm.metadata.uid).encode())
        _add_dirs(tar, "files/etc/hostname", seen)
        _add_bytes(tar, "files/etc/hostname", f"{vm.metadata.uid}\n".encode())
        for mapping in vm.spec.copy_files:
            src = Path(mapping.host_path)
            if not src.exists():
                raise InvalidInput(f"--copy-files source {src} does not exist on the host")
            dest = "files/" + mapping.vm_path.strip("/")
            _add_dirs(tar, dest, seen)
            # Follow host symlinks, as Ignite did; keep modes.
            tar.add(os.path.realpath(src), arcname=dest, recursive=True)
    os.replace(tmp, out)
    return out
