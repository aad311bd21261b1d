"""Applying layers: OCI whiteouts, metadata, links, devices, and refusing escapes."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import lzma
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from ignitevm.errors import InvalidInput
from ignitevm.images.archive import ImageSource, Layer, open_source
from ignitevm.images.layers import apply_layers

MTIME = 1_600_000_000


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: Any) -> Any:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = MTIME
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    return info, data


def d(name: str, **attrs: Any) -> Any:
    return entry(name, tarfile.DIRTYPE, **attrs)


def sym(name: str, target: str) -> Any:
    return entry(name, tarfile.SYMTYPE, linkname=target)


def hard(name: str, target: str) -> Any:
    return entry(name, tarfile.LNKTYPE, linkname=target)


def tar_of(*entries: Any) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def blob_layer(blob: bytes, digest: str | None = None) -> Layer:
    digest = digest or "sha256:" + hashlib.sha256(blob).hexdigest()
    return Layer(digest, len(blob), lambda: contextlib.nullcontext(io.BytesIO(blob)))


def image(*blobs: bytes) -> ImageSource:
    layers = [blob_layer(b) for b in blobs]
    total = sum(x.size for x in layers)
    return ImageSource("oci-layout", None, "sha256:" + "0" * 64, {}, layers, total, Path("img"))


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_files_modes_owners_times_links(dest: Path) -> None:
    xattr = {"SCHILY.xattr.user.origin": "layer-one"}
    layer = tar_of(
        d("./"),
        d("./bin"),
        entry("./bin/su", data=b"\x7fELF", mode=0o4755, uid=0, gid=0),
        entry("./bin/tool", data=b"tool", mode=0o2711, uid=1000, gid=1001, pax_headers=xattr),
        d("./tmp", mode=0o1777),
        sym("./bin/sh", "/bin/busybox"),
        sym("./etc-link", "../../../../etc"),
        hard("./bin/su2", "bin/su"),
        entry("./run/fifo", tarfile.FIFOTYPE, mode=0o600),
        d("./opt", mode=0o700, uid=5, gid=6),
    )
    progress: list[int] = []
    apply_layers(image(gzip.compress(layer)), dest, progress=progress.append)
    assert sum(progress) == len(gzip.compress(layer))

    su = (dest / "bin/su").lstat()
    assert stat.S_IMODE(su.st_mode) == 0o4755 and su.st_mtime == MTIME
    tool = (dest / "bin/tool").lstat()
    assert (stat.S_IMODE(tool.st_mode), tool.st_uid, tool.st_gid) == (0o2711, 1000, 1001)
    assert os.getxattr(dest / "bin/tool", "user.origin") == b"layer-one"
    assert stat.S_IMODE((dest / "tmp").lstat().st_mode) == 0o1777
    assert os.readlink(dest / "bin/sh") == "/bin/busybox"
    assert os.readlink(dest / "etc-link") == "../../../../etc"
    assert (dest / "bin/su2").lstat().st_ino == su.st_ino
    assert stat.S_ISFIFO((dest / "run/fifo").lstat().st_mode)
    opt = (dest / "opt").lstat()
    assert (stat.S_IMODE(opt.st_mode), opt.st_uid, opt.st_gid, opt.st_mtime) == (0o700, 5, 6, MTIME)
    # Directory times are set after their contents.
    assert (dest / "bin").lstat().st_mtime == MTIME


def test_device_nodes(dest: Path, tmp_path: Path) -> None:
    try:
        os.mknod(tmp_path / "probe", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("this host does not allow mknod")
    layer = tar_of(
        entry("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
        entry("dev/loop0", tarfile.BLKTYPE, mode=0o660, devmajor=7, devminor=0, gid=6),
    )
    apply_layers(image(layer), dest)
    null = (dest / "dev/null").lstat()
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    loop = (dest / "dev/loop0").lstat()
    assert stat.S_ISBLK(loop.st_mode) and loop.st_gid == 6


def test_whiteouts_and_opaque_dirs(dest: Path) -> None:
    lower = tar_of(
        d("a"),
        entry("a/gone", data=b"1"),
        entry("a/kept", data=b"2"),
        d("b"),
        entry("b/deep/file", data=b"3"),
        d("c"),
        entry("c/old", data=b"4"),
        d("c/sub"),
        entry("c/sub/old", data=b"5"),
        entry("c/sub2/old", data=b"6"),
    )
    upper = tar_of(
        entry("a/.wh.gone"),
        entry(".wh.b"),
        entry(".wh.never-existed"),
        entry("c/new-before", data=b"7"),
        entry("c/.wh..wh..opq"),
        entry("c/sub/new", data=b"8"),
    )
    apply_layers(image(lower, upper), dest)
    assert listing(dest) == [
        "a",
        "a/kept",
        "c",
        "c/new-before",
        "c/sub",
        "c/sub/new",
    ]


def test_later_layers_replace_other_types(dest: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    lower = tar_of(
        d("was-dir"),
        entry("was-dir/child", data=b"x"),
        entry("was-file", data=b"x"),
        sym("link", str(outside)),
        entry("twice", data=b"first"),
    )
    upper = tar_of(
        entry("was-dir", data=b"now a file"),
        d("was-file"),
        entry("was-file/child", data=b"y"),
        entry("link", data=b"replaces the link"),
        entry("twice", data=b"second"),
    )
    apply_layers(image(lower, upper), dest)
    assert (dest / "was-dir").read_bytes() == b"now a file"
    assert (dest / "was-file/child").read_bytes() == b"y"
    assert not (dest / "link").is_symlink()
    assert (dest / "link").read_bytes() == b"replaces the link"
    assert (dest / "twice").read_bytes() == b"second"
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    "layers, message",
    [
        ([[entry("../escape", data=b"x")]], "outside the image root"),
        ([[entry("a/../../escape", data=b"x")]], "outside the image root"),
        ([[entry("/abs", data=b"x")]], "absolute path"),
        ([[sym("evil", "OUTSIDE"), entry("evil/pwned", data=b"x")]], "through the symbolic link"),
        ([[sym("evil", "/tmp")], [entry("evil/pwned", data=b"x")]], "through the symbolic link"),
        ([[sym("rel", "../../..")], [entry("rel/pwned", data=b"x")]], "through the symbolic link"),
        ([[sym("evil", "OUTSIDE")], [d("evil/sub")]], "through the symbolic link"),
        ([[hard("pwned", "../../victim")]], "outside the image root"),
        ([[hard("pwned", "/etc/passwd")]], "absolute path"),
        ([[sym("evil", "OUTSIDE")], [hard("pwned", "evil/victim")]], "through the symbolic link"),
        ([[sym("evil", "OUTSIDE")], [entry("evil/.wh.victim")]], "through the symbolic link"),
        ([[entry("x/.wh...")]], "invalid name"),
        ([[hard("pwned", "missing")]], "is a hard link"),
    ],
)
def test_escapes_are_refused(
    dest: Path, tmp_path: Path, layers: list[list[Any]], message: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("safe")
    (tmp_path / "victim").write_text("safe")
    blobs = []
    for entries in layers:
        fixed = []
        for info, data in entries:
            info.linkname = info.linkname.replace("OUTSIDE", str(outside))
            fixed.append((info, data))
        blobs.append(tar_of(*fixed))
    with pytest.raises(InvalidInput, match=message) as err:
        apply_layers(image(*blobs), dest)
    assert "layer sha256:" in str(err.value) and "img" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "root", "victim"]
    assert [p.name for p in outside.iterdir()] == ["victim"]
    assert (outside / "victim").read_text() == (tmp_path / "victim").read_text() == "safe"
    assert not Path("/tmp/pwned").exists()


def test_digest_mismatch(dest: Path) -> None:
    layer = tar_of(entry("file", data=b"x"))
    src = image(layer)
    bad = ImageSource(
        src.kind, None, src.digest, {}, [blob_layer(layer, "sha256:" + "1" * 64)], src.size, None
    )
    with pytest.raises(InvalidInput, match=r"layer sha256:1{64} of .* does not match its digest"):
        apply_layers(bad, dest)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_layers(dest: Path, compress: bool) -> None:
    layer = tar_of(entry("big", data=os.urandom(100_000)), entry("after", data=b"x"))
    blob = gzip.compress(layer) if compress else layer
    with pytest.raises(InvalidInput, match="truncated"):
        apply_layers(image(blob[:50_000]), dest)


def test_not_a_tar_layer(dest: Path) -> None:
    with pytest.raises(InvalidInput, match="not a tar archive"):
        apply_layers(image(b"\x01" * 4096), dest)
    with pytest.raises(InvalidInput, match="not valid gzip"):
        apply_layers(image(b"\x1f\x8b" + b"\x00" * 100), dest)


def test_zstd_layer(dest: Path) -> None:
    """zstd is unpacked by the zstandard library (no program): several frames, a
    skippable frame, checksums; data cut inside a frame is truncated, not a clean end."""
    zstandard = pytest.importorskip("zstandard")
    layer = tar_of(entry("hello", data=b"from zstd"), entry("two/three", data=b"3"))
    blob = zstandard.ZstdCompressor(write_checksum=True).compress(layer)
    apply_layers(image(blob), dest)
    assert (dest / "hello").read_bytes() == b"from zstd"
    half = len(layer) // 2
    frames = (zstandard.ZstdCompressor().compress(layer[:half])
              + b"\x50\x2a\x4d\x18" + (3).to_bytes(4, "little") + b"pad"
              + zstandard.ZstdCompressor(write_content_size=False).compress(layer[half:]))
    shutil.rmtree(dest)
    dest.mkdir()
    apply_layers(image(frames), dest)
    assert (dest / "two" / "three").read_bytes() == b"3"
    for cut in (blob[: len(blob) // 2], blob[:-1], frames[:-5]):
        shutil.rmtree(dest)
        dest.mkdir()
        with pytest.raises(InvalidInput, match="zstd"):
            apply_layers(image(cut), dest)
    with pytest.raises(InvalidInput, match="not valid zstd data"):
        apply_layers(image(blob[:12] + bytes(len(blob) - 12)), dest)


def test_zstd_truncated_between_tar_members(dest: Path) -> None:
    """A zstd stream whose whole tar is there, cut before its frame ends (the library's
    reader would call that a clean end): said truncated, from the frame headers."""
    zstandard = pytest.importorskip("zstandard")
    layer = tar_of(entry("a", data=os.urandom(300_000)), entry("b", data=b"x"))
    cobj = zstandard.ZstdCompressor().compressobj()
    blob = cobj.compress(layer) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    assert zstandard.ZstdDecompressor().stream_reader(blob).read() == layer
    with pytest.raises(InvalidInput, match=r"truncated \(its zstd data ends early"):
        apply_layers(image(blob), dest)


def test_zstd_window_over_the_limit_is_refused(dest: Path) -> None:
    """A frame asking for a window past 128 MiB (the zstd program's default bound) is
    refused before any memory is taken for it."""
    zstandard = pytest.importorskip("zstandard")
    params = zstandard.ZstdCompressionParameters.from_level(
        3, window_log=30, enable_ldm=True)
    cobj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    blob = cobj.compress(tar_of(entry("a", data=b"x"))) + cobj.flush()
    with pytest.raises(InvalidInput, match="not valid zstd data"):
        apply_layers(image(blob), dest)


@pytest.mark.parametrize("kind", ["gzip", "xz"])
def test_rootfs_tarballs(tmp_path: Path, kind: str) -> None:
    layer = tar_of(d("./"), entry("./etc/os-release", data=b"ID=test\n"), sym("./sh", "busybox"))
    half = len(layer) // 2
    path = tmp_path / "rootfs.tar.z"
    if kind == "gzip":  # two members, as parallel compressors write
        path.write_bytes(gzip.compress(layer[:half]) + gzip.compress(layer[half:]))
    else:
        path.write_bytes(lzma.compress(layer))
    dest = tmp_path / "root"
    dest.mkdir()
    with open_source(path) as src:
        apply_layers(src, dest)
    assert (dest / "etc/os-release").read_bytes() == b"ID=test\n"
    assert os.readlink(dest / "sh") == "busybox"


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
def test_a_huge_header_record_is_refused_before_it_is_read(tmp_path: Path, kind: bytes) -> None:
    """A layer whose first member claims a 3 GiB pax or long-name record (a few
    KB once compressed): refused at once, not read into memory."""
    from ignitevm.errors import InvalidInput
    from ignitevm.images.unpack import Stream, Unpacker

    hdr = tarfile.TarInfo("././@PaxHeader")
    hdr.type = kind
    hdr.size = 3 << 30
    block = hdr.tobuf(format=tarfile.USTAR_FORMAT)
    sent = [0]

    def zeros(n: int) -> bytes:  # what a decompression bomb would give
        if sent[0] >= 4 << 30:
            return b""
        k = min(n, 1 << 20)
        sent[0] += k
        return bytes(k)

    root = tmp_path / "root"
    root.mkdir()
    with Unpacker(str(root)) as u, pytest.raises(InvalidInput, match="header record"):
        u.apply_tar(Stream(zeros, block), "layer")
    assert sent[0] <= 2 << 20
