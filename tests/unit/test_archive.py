"""Opening image sources: docker-archive, oci-archive, OCI layout, plain rootfs tarballs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from ignitevm.errors import InvalidInput
from ignitevm.images.archive import ImageSource, open_source

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = {"Env": ["PATH=/usr/bin:/bin"], "Entrypoint": ["/app"], "Cmd": ["--serve"]}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_of(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A tar of regular files (and symlinks: name -> target), in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


def layer(n: int) -> bytes:
    return tar_of({f"file{n}": f"layer {n}\n".encode()})


def image_config(layers: list[bytes], arch: str = "amd64") -> bytes:
    diff_ids = ["sha256:" + sha(data) for data in layers]
    doc = {
        "architecture": arch,
        "os": "linux",
        "config": CONFIG,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    return json.dumps(doc).encode()


def docker_archive(path: Path, layers: list[bytes], *, new_style: bool = False) -> bytes:
    """Write a `docker save` tarball; return its config blob."""
    config = image_config(layers)
    files: dict[str, bytes] = {}
    links: dict[str, str] = {}
    names = []
    for i, data in enumerate(layers):
        name = f"blobs/sha256/{sha(data)}" if new_style else f"{sha(b'%d' % i)}/layer.tar"
        if new_style and name in files:
            pass
        elif not new_style and data in layers[:i]:
            first = layers.index(data)
            links[name] = f"../{sha(b'%d' % first)}/layer.tar"
        else:
            files[name] = data
        names.append(name)
    config_name = f"blobs/sha256/{sha(config)}" if new_style else f"{sha(config)}.json"
    files[config_name] = config
    manifest = [{"Config": config_name, "RepoTags": ["example.com/app:1.0"], "Layers": names}]
    files["manifest.json"] = json.dumps(manifest).encode()
    files["repositories"] = b"{}"
    path.write_bytes(tar_of(files, links))
    return config


def put_blob(root: Path, data: bytes, media: str, **extra: Any) -> dict[str, Any]:
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / sha(data)).write_bytes(data)
    return {"mediaType": media, "digest": "sha256:" + sha(data), "size": len(data), **extra}


def oci_layout(
    root: Path,
    layers: list[bytes],
    *,
    ref: str = "v1",
    platforms: tuple[str, ...] = (),
    layer_media: str = OCI_LAYER_GZ,
) -> dict[str, Any]:
    """Write an OCI layout (gzip layers); with ``platforms``, behind a nested index."""
    root.mkdir(parents=True, exist_ok=True)
    blobs = [gzip.compress(data, mtime=0) for data in layers]

    def manifest(arch: str) -> dict[str, Any]:
        config = put_blob(root, image_config(layers, arch), OCI_CONFIG)
        descs = [put_blob(root, blob, layer_media) for blob in blobs]
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": descs}
        platform = {"os": "linux", "architecture": arch}
        return put_blob(root, json.dumps(doc).encode(), OCI_MANIFEST, platform=platform)

    if platforms:
        doc = {"schemaVersion": 2, "manifests": [manifest(arch) for arch in platforms]}
        top = put_blob(root, json.dumps(doc).encode(), OCI_INDEX)
    else:
        top = manifest("amd64")
        del top["platform"]
    top["annotations"] = {"org.opencontainers.image.ref.name": ref}
    index = {"schemaVersion": 2, "manifests": [top]}
    (root / "index.json").write_text(json.dumps(index))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return {"layers": blobs}


def tar_dir(src: Path, out: Path) -> None:
    with tarfile.open(out, "w") as tf:
        for p in sorted(src.rglob("*")):
            tf.add(p, arcname=str(p.relative_to(src)), recursive=False)


def read_layers(src: ImageSource) -> list[bytes]:
    out = []
    for lay in src.layers:
        with lay.open() as f:
            out.append(f.read())
    return out


def test_docker_archive(tmp_path: Path) -> None:
    layers = [layer(1), layer(2)]
    path = tmp_path / "app.tar"
    config = docker_archive(path, layers)
    with open_source(path) as src:
        assert src.kind == "docker-archive"
        assert src.ref == "example.com/app:1.0"
        assert src.digest == "sha256:" + sha(config)
        assert src.config == CONFIG
        assert [lay.digest for lay in src.layers] == ["sha256:" + sha(x) for x in layers]
        assert src.size == sum(len(x) for x in layers)
        assert read_layers(src) == layers
    # `docker save | gzip` works too: blobs are read from the compressed stream.
    gz = tmp_path / "app.tar.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    with open_source(gz) as src:
        assert (src.kind, src.digest) == ("docker-archive", "sha256:" + sha(config))
        assert read_layers(src) == layers


def test_docker_archive_new_style_and_shared_layers(tmp_path: Path) -> None:
    layers = [layer(1), layer(1), layer(3)]
    for new_style in (False, True):
        path = tmp_path / f"app-{new_style}.tar"
        docker_archive(path, layers, new_style=new_style)
        with open_source(path) as src:
            assert len(src.layers) == 3
            assert read_layers(src) == layers
            assert src.layers[0].digest == src.layers[1].digest


def test_oci_layout_and_archive(tmp_path: Path) -> None:
    layers = [layer(1), layer(2)]
    built = oci_layout(tmp_path / "layout", layers, ref="1.2")
    tar_dir(tmp_path / "layout", tmp_path / "image.tar")
    for path, kind in (
        (tmp_path / "layout", "oci-layout"),
        (tmp_path / "image.tar", "oci-archive"),
    ):
        with open_source(path) as src:
            assert src.kind == kind
            assert src.ref == "1.2"
            assert src.digest == "sha256:" + sha(image_config(layers))
            assert src.config == CONFIG
            assert [lay.digest for lay in src.layers] == [
                "sha256:" + sha(b) for b in built["layers"]
            ]
            assert read_layers(src) == built["layers"]


def test_oci_index_picks_linux_amd64(tmp_path: Path) -> None:
    oci_layout(tmp_path / "multi", [layer(1)], platforms=("arm64", "amd64"))
    with open_source(tmp_path / "multi") as src:
        assert src.digest == "sha256:" + sha(image_config([layer(1)], "amd64"))
        assert src.ref == "v1"
    oci_layout(tmp_path / "arm", [layer(1)], platforms=("arm64",))
    with pytest.raises(InvalidInput, match="no linux/amd64 image"), open_source(tmp_path / "arm"):
        pass


def test_oci_layout_with_several_images_needs_a_ref(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    oci_layout(a, [layer(1)], ref="one")
    oci_layout(b, [layer(2)], ref="two")
    index = json.loads((a / "index.json").read_text())
    index["manifests"] += json.loads((b / "index.json").read_text())["manifests"]
    (a / "index.json").write_text(json.dumps(index))
    for blob in (b / "blobs" / "sha256").iterdir():
        (a / "blobs" / "sha256" / blob.name).write_bytes(blob.read_bytes())
    with pytest.raises(InvalidInput, match="holds 2 images"), open_source(a):
        pass
    with open_source(a, ref="two") as src:
        assert src.ref == "two"
        assert src.digest == "sha256:" + sha(image_config([layer(2)]))


def test_rootfs_tar_plain_and_gzip(tmp_path: Path) -> None:
    data = tar_of({"./etc/os-release": b"ID=test\n", "./bin/sh": b"#!"})
    for name, blob in (("root.tar", data), ("root.tar.gz", gzip.compress(data))):
        path = tmp_path / name
        path.write_bytes(blob)
        with open_source(path) as src:
            assert src.kind == "rootfs-tar"
            assert src.ref is None
            assert src.digest == "sha256:" + sha(blob)
            assert src.config == {}
            assert [lay.digest for lay in src.layers] == [src.digest]
            assert src.size == len(blob)
            assert read_layers(src) == [blob]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read"),
        (b"", "neither a tar archive"),
        (b"this is not an image at all" * 100, "neither a tar archive"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "bad.tar"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InvalidInput, match=message) as err, open_source(path):
        pass
    assert str(path) in str(err.value)


def test_truncated_docker_archive(tmp_path: Path) -> None:
    path = tmp_path / "app.tar"
    docker_archive(path, [layer(1), tar_of({"big": bytes(64 * 1024)})])
    data = path.read_bytes()
    for cut in (len(data) // 2, data.index(b'"RepoTags"'), 700):
        path.write_bytes(data[:cut])
        with pytest.raises(InvalidInput, match=r"truncated|corrupt") as err, open_source(path):
            pass
        assert str(path) in str(err.value)


def test_oci_missing_blob_and_bad_media_type(tmp_path: Path) -> None:
    root = tmp_path / "layout"
    built = oci_layout(root, [layer(1)])
    (root / "blobs" / "sha256" / sha(built["layers"][0])).unlink()
    with pytest.raises(InvalidInput, match="has no blobs/sha256/") as err, open_source(root):
        pass
    assert str(root) in str(err.value)

    other = tmp_path / "other"
    oci_layout(other, [layer(1)], layer_media="application/vnd.example.weird")
    with pytest.raises(InvalidInput, match="unsupported media type"), open_source(other):
        pass


def test_oci_corrupt_manifest_and_short_blob(tmp_path: Path) -> None:
    root = tmp_path / "layout"
    built = oci_layout(root, [layer(1)])
    blob = root / "blobs" / "sha256" / sha(built["layers"][0])
    blob.write_bytes(blob.read_bytes()[:10])
    with pytest.raises(InvalidInput, match="descriptor says"), open_source(root):
        pass
    index = json.loads((root / "index.json").read_text())
    manifest = root / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    manifest.write_bytes(manifest.read_bytes().replace(b"gzip", b"gzap"))
    with pytest.raises(InvalidInput, match="does not match its digest"), open_source(root):
        pass


def test_directory_that_is_not_a_layout(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not an OCI image layout"), open_source(tmp_path):
        pass
