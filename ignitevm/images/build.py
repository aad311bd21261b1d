"""The project's own base image: Debian minbase + systemd + openssh-server + iproute2.

Built with mmdebstrap as a rootfs tar, then wrapped as a one-layer OCI
archive (so it is imported like any other image). SSH host keys, machine-id
and the build host's identity files are left out: each VM gets its own.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

from ignitevm.log import log
from ignitevm.util.proc import run

SUITE = "bookworm"
PACKAGES = ["systemd", "systemd-sysv", "udev", "dbus", "openssh-server", "iproute2",
            "iputils-ping", "procps", "kmod", "ca-certificates", "less", "nano"]
MASKED_UNITS = [
    "e2scrub_all.timer", "e2scrub_reap.service", "apt-daily.timer",
    "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "fstrim.timer",
    "systemd-tmpfiles-clean.timer", "getty@tty1.service", "systemd-pstore.service",
    "systemd-timesyncd.service", "systemd-networkd-wait-online.service",
    "systemd-firstboot.service", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "modprobe@drm.service", "ssh.socket",
]
HOOKS = [
    # Each VM gets its own host keys, hostname and resolv.conf at boot.
    'rm -f "$1"/etc/ssh/ssh_host_*',
    'rm -f "$1"/etc/hostname; : > "$1"/etc/resolv.conf',
    ': > "$1"/etc/machine-id',
    'chroot "$1" systemctl mask ' + " ".join(MASKED_UNITS),
    'chroot "$1" systemctl enable ssh.service',
    # A root shell on the serial console (ignite attach); reachable only by
    # root on the host through the VM's console socket.
    'mkdir -p "$1"/etc/systemd/system/serial-getty@ttyS0.service.d && printf '
    '"[Service]\\nExecStart=\\nExecStart=-/sbin/agetty --autologin root --keep-baud '
    '115200,57600,38400,9600 - \\$TERM\\n" > '
    '"$1"/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf',
]


def build_rootfs_tar(out: Path) -> None:
    cmd: list[str] = [
        "mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar", "--quiet",
        "--include=" + ",".join(PACKAGES),
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
    ]
    cmd += [f"--customize-hook={hook}" for hook in HOOKS]
    cmd += [SUITE, str(out)]
    run(cmd, hint="mmdebstrap needs Debian's package sources (apt-get install mmdebstrap)")


def wrap_oci(layer: Path, out: Path, ref: str, config: dict[str, object]) -> None:
    """Write a one-layer OCI archive around an uncompressed rootfs tar."""
    h = hashlib.sha256()
    with layer.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    layer_digest = f"sha256:{h.hexdigest()}"
    image_config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }).encode()
    config_digest = "sha256:" + hashlib.sha256(image_config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(image_config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer.stat().st_size}],
    }).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": ref}}],
    }).encode()
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w") as tar:
        for name, data in (("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
                           ("index.json", index),
                           (f"blobs/sha256/{config_digest[7:]}", image_config),
                           (f"blobs/sha256/{manifest_digest[7:]}", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(layer, arcname=f"blobs/sha256/{layer_digest[7:]}")
    os.replace(tmp, out)


def build_base(cache: Path, ref: str = "base:latest") -> Path:
    """Build the base image as an OCI archive in the cache; return its path."""
    work = cache / "build"
    work.mkdir(parents=True, exist_ok=True)
    rootfs = work / "base-rootfs.tar"
    out = work / "base.oci.tar"
    log.info("Building the base image with mmdebstrap (Debian %s)", SUITE)
    build_rootfs_tar(rootfs)
    wrap_oci(rootfs, out, ref, {"Cmd": ["/sbin/init"],
                                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                        "/usr/bin:/sbin:/bin"]})
    rootfs.unlink()
    return out
