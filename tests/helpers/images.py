"""Small, real OCI images made by the tests themselves (no registry needed)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

TEST_INIT = """#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mkdir -p /dev/pts
/bin/busybox mount -t devpts -o ptmxmode=0666 devpts /dev/pts
echo "TEST-READY host=$(/bin/busybox hostname) cpus=$(/bin/busybox nproc)"
[ -f /etc/ignite-test ] && echo "COPIED=$(/bin/busybox cat /etc/ignite-test)"
echo "DISK=$(/bin/busybox df -k / | /bin/busybox tail -n 1)"
while true; do /bin/busybox sleep 3600; done
"""


def _tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def _hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info, None


# What busybox_layers' second layer does to the first, for tests of the unpacked tree:
LOWER_ONLY = ("srv/old/lower-a", "srv/old/lower-b")  # hidden by srv/old's opaque whiteout
UPPER_FILE = "srv/old/upper"  # the one file srv/old holds in the image
WHITED_OUT = "etc/junk"  # removed by a whiteout
HARD_LINKS = ("etc/motd", "etc/motd.hard")  # one file (one inode) under two names


def busybox_layers(init: str = TEST_INIT) -> list[bytes]:
    """Two layers: busybox, then /sbin/init. The second one also removes a file (a
    whiteout), hides a folder's lower files (an opaque whiteout) and adds a hard link."""
    base = [_dir(d) for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root")]
    base.append(_file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755))
    base.append(_link("bin/sh", "busybox"))
    base.append(_file("etc/junk", b"removed by the next layer\n"))
    base.append(_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                      b"nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"))
    base.append(_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n"))
    for applet in ("cat", "echo", "env", "id", "pwd", "sleep", "tee", "tty", "stty", "kill",
                   "true", "false", "sha256sum", "ls", "mkdir", "stat", "head", "wc"):
        base.append(_link(f"bin/{applet}", "busybox"))
    base += [_dir("srv"), _dir("srv/old"), *(_file(n, b"lower\n") for n in LOWER_ONLY)]
    top = [_dir("sbin"), _file("sbin/init", init.encode(), 0o755),
           _file("etc/.wh.junk", b""), _file("etc/os-release", b"ID=ignitevm-test\n"),
           _dir("srv/old"), _file("srv/old/.wh..wh..opq", b""), _file(UPPER_FILE, b"upper\n"),
           _file(HARD_LINKS[0], b"one file, two names\n"), _hardlink(*reversed(HARD_LINKS))]
    return [_tar_bytes(base), _tar_bytes(top)]


def write_docker_archive(out: Path, ref: str, layers: list[bytes],
                         config: dict[str, object] | None = None) -> Path:
    """A `docker save` style archive."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": config or {},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    layer_names = [f"{d[7:]}/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": [ref],
                            "Layers": layer_names}]).encode()
    entries = [_file(cfg_name, cfg), _file("manifest.json", manifest)]
    for name, layer in zip(layer_names, layers, strict=True):
        entries.append(_dir(name.split("/")[0]))
        entries.append(_file(name, layer))
    out.write_bytes(_tar_bytes(entries))
    return out


def busybox_image(out: Path, ref: str = "testbox:latest", init: str = TEST_INIT) -> Path:
    return write_docker_archive(out, ref, busybox_layers(init),
                                {"Cmd": ["/sbin/init"], "Env": ["PATH=/bin"]})


def app_image(out: Path, ref: str = "app:latest") -> Path:
    """An image with no init: the agent runs its Entrypoint + Cmd as PID 1."""
    base, _top = busybox_layers()
    config = {"Entrypoint": ["/bin/sh", "-c"],
              "Cmd": ['echo "APP-RUNNING foo=$FOO pwd=$(pwd) pid=$$"; exec sleep 100000'],
              "Env": ["PATH=/bin", "FOO=bar"], "WorkingDir": "/tmp"}
    return write_docker_archive(out, ref, [base], config)


def _compress(layer: bytes, compression: str | None) -> tuple[bytes, str]:
    import gzip

    if compression == "gzip":
        return gzip.compress(layer, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
    if compression == "zstd":
        import zstandard

        return (zstandard.ZstdCompressor().compress(layer),
                "application/vnd.oci.image.layer.v1.tar+zstd")
    return layer, "application/vnd.oci.image.layer.v1.tar"


class OCILayout:
    """An OCI image layout folder built blob by blob (push it with skopeo ``oci:DIR:tag``)."""

    def __init__(self, out: Path):
        self.dir = out
        (out / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (out / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.refs: list[dict[str, object]] = []

    def blob(self, data: bytes, media: str, **extra: object) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (self.dir / "blobs" / "sha256" / digest).write_bytes(data)
        return {"mediaType": media, "digest": "sha256:" + digest, "size": len(data), **extra}

    def image(self, layers: list[bytes], config: dict[str, object] | None = None, *,
              arch: str = "amd64", compression: str | None = "gzip",
              diff_ids: list[str] | None = None, variant: str | None = None
              ) -> dict[str, object]:
        """Store one image (layers given uncompressed); return its manifest descriptor.
        ``diff_ids`` replaces the true ones (to make a config that lies)."""
        diff_ids = diff_ids or ["sha256:" + hashlib.sha256(layer).hexdigest()
                                for layer in layers]
        platform = {"architecture": arch, "os": "linux",
                    **({"variant": variant} if variant else {})}
        cfg = json.dumps({**platform, "config": config or {},
                          "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        descs = [self.blob(*_compress(layer, compression)) for layer in layers]
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": self.blob(cfg, "application/vnd.oci.image.config.v1+json"),
            "layers": descs}).encode()
        return self.blob(manifest, "application/vnd.oci.image.manifest.v1+json",
                         platform=platform)

    def index(self, manifests: list[dict[str, object]]) -> dict[str, object]:
        data = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.index.v1+json",
                           "manifests": manifests}).encode()
        return self.blob(data, "application/vnd.oci.image.index.v1+json")

    def tag(self, desc: dict[str, object], tag: str) -> str:
        """Name ``desc`` in index.json; return the skopeo source ``oci:DIR:tag``."""
        entry = {k: v for k, v in desc.items() if k != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.refs.append(entry)
        (self.dir / "index.json").write_text(json.dumps(
            {"schemaVersion": 2, "manifests": self.refs}))
        return f"oci:{self.dir}:{tag}"


def big_layers(count: int, size: int, seed: int = 0) -> list[bytes]:
    """``count`` layers of about ``size`` bytes each of incompressible data (for benches)."""
    import random

    rng = random.Random(seed)
    return [_tar_bytes([_dir(f"data{i}"), _file(f"data{i}/blob", rng.randbytes(size))])
            for i in range(count)]


KERNEL_VERSION = "5.10.51"
FAKE_VMLINUX = (b"\x7fELF\x02\x01\x01" + b"\0" * 57
                + b"Linux version 5.10.51 (x@y) #1 SMP\n\0" * 4)


def kernel_layers() -> list[bytes]:
    """An Ignite-style kernel image: /boot/vmlinux (a link) and /lib/modules/<version>."""
    mods = f"lib/modules/{KERNEL_VERSION}"
    boot = [_dir("boot"), _file(f"boot/vmlinux-{KERNEL_VERSION}", FAKE_VMLINUX),
            _link("boot/vmlinux", f"/boot/vmlinux-{KERNEL_VERSION}")]
    modules = [_dir("lib"), _dir("lib/modules"), _dir(mods), _dir(f"{mods}/kernel"),
               _file(f"{mods}/kernel/virtio.ko", b"\x7fELF fake module"),
               _file(f"{mods}/modules.order", b"kernel/virtio.ko\n"),
               _file(f"{mods}/modules.dep", b"kernel/virtio.ko:\n")]
    return [_tar_bytes(boot), _tar_bytes(modules)]
