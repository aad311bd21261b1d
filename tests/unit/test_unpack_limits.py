"""Resource bombs in hostile layers: bounded bytes and entries, sparse files kept sparse."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from ignitevm.errors import InvalidInput
from ignitevm.images.layers import apply_layers
from ignitevm.images.limits import Budget, UnpackLimits, reserve
from ignitevm.images.rootfs import measure
from tests.unit.test_layers import entry, image, tar_of

MiB = 1 << 20
GiB = 1 << 30


def gzip_stream(*parts: bytes, zeros_after: int = 0) -> bytes:
    """A gzip member of ``parts`` then ``zeros_after`` zero bytes, compressed
    piecewise (the zeros are never held whole)."""
    z = zlib.compressobj(1, zlib.DEFLATED, 31)
    out = [z.compress(p) for p in parts]
    block = bytes(4 * MiB)
    left = zeros_after
    while left > 0:
        out.append(z.compress(block[: min(left, len(block))]))
        left -= len(block)
    out.append(z.flush())
    return b"".join(out)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


def test_a_file_claiming_2gib_is_refused_before_it_is_read(dest: Path) -> None:
    """A few KB of gzip whose tar header says 2 GiB: refused from the header,
    nothing of it written."""
    info = tarfile.TarInfo("big")
    info.size = 2 * GiB
    blob = gzip_stream(info.tobuf(format=tarfile.PAX_FORMAT), zeros_after=1 * MiB)
    assert len(blob) < 64 * 1024
    with pytest.raises(InvalidInput, match=r"unpacks to more than 1024.0 MB") as exc:
        apply_layers(image(blob), dest, limits=UnpackLimits(max_bytes=1 * GiB))
    assert "nothing was kept" in exc.value.brief and exc.value.hint
    assert not (dest / "big").exists()


def test_a_decompression_bomb_stops_at_the_limit(dest: Path) -> None:
    """Many files of zeros, each within the limit, together past it: the stream
    stops being read once the limit is crossed."""
    files = [entry(f"f{i}", data=bytes(4 * MiB)) for i in range(8)]
    blob = gzip.compress(tar_of(*files), compresslevel=1)
    assert len(blob) < 200 * 1024
    with pytest.raises(InvalidInput, match=r"unpacks to more than 10.0 MB"):
        apply_layers(image(blob), dest, limits=UnpackLimits(max_bytes=10 * MiB))
    written = sum(p.stat().st_blocks * 512 for p in dest.iterdir())
    assert written <= 10 * MiB


def test_zeros_after_the_end_of_the_archive_count_too(dest: Path) -> None:
    """A tiny tar, then 64 MiB of compressed zeros after its end marker."""
    blob = gzip_stream(tar_of(entry("a", data=b"x")), zeros_after=64 * MiB)
    with pytest.raises(InvalidInput, match="unpacks to more than"):
        apply_layers(image(blob), dest, limits=UnpackLimits(max_bytes=8 * MiB))


def test_a_zstd_bomb_stops_at_the_limit(dest: Path) -> None:
    """The same bounds for zstd: a tiny tar, then 64 MiB of zeros in a few KB; the
    stream stops being read once the limit is crossed (each read is bounded too)."""
    zstandard = pytest.importorskip("zstandard")
    cobj = zstandard.ZstdCompressor().compressobj()
    blob = cobj.compress(tar_of(entry("a", data=b"x")) + bytes(64 * MiB)) + cobj.flush()
    assert len(blob) < 64 * 1024
    with pytest.raises(InvalidInput, match=r"unpacks to more than 8\.0 MB"):
        apply_layers(image(blob), dest, limits=UnpackLimits(max_bytes=8 * MiB))


def test_the_byte_limit_spans_all_layers(dest: Path) -> None:
    layer = tar_of(entry("a", data=bytes(3 * MiB)))
    apply_layers(image(layer, layer), dest, limits=UnpackLimits(max_bytes=7 * MiB))
    with pytest.raises(InvalidInput, match="unpacks to more than"):
        apply_layers(image(layer, layer, layer), dest, limits=UnpackLimits(max_bytes=7 * MiB))


def test_too_many_entries_are_refused(dest: Path) -> None:
    blob = tar_of(*(entry(f"e{i}") for i in range(300)))
    apply_layers(image(blob), dest, limits=UnpackLimits(max_entries=300))
    shutil.rmtree(dest)
    dest.mkdir()
    with pytest.raises(InvalidInput, match="more than 299 files and folders"):
        apply_layers(image(blob), dest, limits=UnpackLimits(max_entries=299))
    assert len(list(dest.iterdir())) <= 299


def test_the_default_limit_comes_from_the_free_space(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    budget = Budget(UnpackLimits(), str(tmp_path), "image x")
    # (the free space moves a little as others write: compare loosely)
    expected = max(0, (free - reserve(total)) // 2)
    assert abs(budget.max_bytes - expected) <= 64 * MiB
    assert "free" in budget.bytes_why
    assert reserve(100 * GiB) == GiB and reserve(GiB) == GiB // 10


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
def test_an_image_larger_than_the_free_space_is_refused(tmp_path: Path) -> None:
    """On a real 64 MiB filesystem, a layer of 48 MiB (that would leave the
    host nothing) is refused by the default limit, and the tree left half
    made is the caller's to remove (the store's staging folder is)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    try:
        tree = mnt / "tree"
        tree.mkdir()
        layer = gzip.compress(tar_of(entry("big", data=os.urandom(48 * MiB))), compresslevel=1)
        with pytest.raises(InvalidInput, match="free where it is unpacked"):
            apply_layers(image(layer), tree)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_runs_of_zeros_are_written_as_holes(dest: Path) -> None:
    data = bytes(8 * MiB) + b"tail"
    apply_layers(image(tar_of(entry("sparse", data=data))), dest)
    st = (dest / "sparse").stat()
    assert st.st_size == len(data)
    assert st.st_blocks * 512 < 2 * MiB
    with open(dest / "sparse", "rb") as f:
        assert f.read() == data


def _gnu_sparse_tar(tmp_path: Path, size: int, pieces: dict[int, bytes]) -> bytes:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    with open(src / "holey", "wb") as f:
        f.truncate(size)
        for offset, data in pieces.items():
            f.seek(offset)
            f.write(data)
    out = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-C", str(src), "-cf", str(out),
                    "holey"], check=True)
    return out.read_bytes()


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar makes the sparse archive")
def test_tar_sparse_entries_stay_sparse(dest: Path, tmp_path: Path) -> None:
    """A tar sparse entry with a 1 TiB size and two small pieces: written as
    holes (the tree holds kilobytes), its size within no byte limit, and the
    ext4 plan counts what it holds, not its size."""
    pieces = {4096: b"a" * 5000, (1 << 40) - 8192: b"b" * 100}
    blob = _gnu_sparse_tar(tmp_path, 1 << 40, pieces)
    assert len(blob) < 64 * 1024
    apply_layers(image(blob), dest, limits=UnpackLimits(max_bytes=1 * MiB))
    st = (dest / "holey").stat()
    assert st.st_size == 1 << 40
    assert st.st_blocks * 512 < 1 * MiB
    with open(dest / "holey", "rb") as f:
        for offset, data in pieces.items():
            f.seek(offset - 10)
            assert f.read(len(data) + 20) == bytes(10) + data + bytes(10)
    assert measure(dest).blocks < 64
    if shutil.which("mkfs.ext4"):  # and mkfs copies it as holes into a small image
        from ignitevm.images.rootfs import build_ext4

        out = tmp_path / "img.ext4"
        assert build_ext4(dest, out) < 64 * MiB
        assert out.stat().st_blocks * 512 < 64 * MiB


def test_a_sparse_map_past_the_file_is_refused(dest: Path, tmp_path: Path) -> None:
    blob = bytearray(_gnu_sparse_tar(tmp_path, 1 << 20, {0: b"x" * 10}))
    # The old GNU header's real size (at byte 483, 12 octal digits) made smaller
    # than the map's piece: the map now reaches past the file.
    blob[483:495] = b"00000000001\0"
    hdr = bytes(blob[:512])
    chk = sum(hdr[:148]) + 8 * 32 + sum(hdr[156:])
    blob[148:156] = b"%06o\0 " % chk
    with pytest.raises(InvalidInput, match="sparse map"):
        apply_layers(image(bytes(blob)), dest)


def test_cli_limits_flag_and_configuration(tmp_path: Path) -> None:
    from ignitevm.images.limits import configured

    cfg = tmp_path / "config.yaml"
    cfg.write_text("apiVersion: ignite.weave.works/v1alpha4\nkind: Configuration\n"
                   "spec:\n  unpackLimit: 3GB\n  unpackEntryLimit: 1000\n")
    assert configured(None, str(cfg)) == UnpackLimits(3 * GiB, 1000)
    assert configured("512MB", str(cfg)) == UnpackLimits(512 * MiB, 1000)
    with pytest.raises(InvalidInput, match="--unpack-limit"):
        configured("lots", str(cfg))
    cfg.write_text("apiVersion: ignite.weave.works/v1alpha4\nkind: Configuration\n"
                   "spec:\n  unpackEntryLimit: many\n")
    with pytest.raises(InvalidInput, match="unpackEntryLimit"):
        configured(None, str(cfg))


def test_a_refused_import_leaves_nothing_behind(tmp_path: Path) -> None:
    """Through the operation: no image, nothing in the store's tmp or image folders."""
    from ignitevm.operations.context import Context
    from ignitevm.operations.images import import_image
    from tests.helpers.images import write_docker_archive

    archive = write_docker_archive(tmp_path / "bomb.tar", "bomb:latest",
                                   [tar_of(entry("zeros", data=bytes(16 * MiB)))])
    root = tmp_path / "state"
    ctx = Context(root)
    ctx.unpack_limit = "4MB"
    ctx.config_file = str(tmp_path / "none.yaml")
    (tmp_path / "none.yaml").write_text("apiVersion: v1\nkind: Configuration\n")
    with pytest.raises(InvalidInput, match=r"unpacks to more than 4.0 MB"):
        import_image(ctx, str(archive))
    from ignitevm.api.types import Image

    assert ctx.store.list(Image) == []
    left = [str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and "lock" not in p.name]
    assert left == []


def test_the_stream_is_not_read_past_the_limit(dest: Path) -> None:
    """A file announced past the limit: not a byte of it is asked of the filler."""
    from ignitevm.images.unpack import Stream, Unpacker

    info = tarfile.TarInfo("f")
    info.size = 512 * MiB
    sent = [0]

    def zeros(n: int) -> bytes:
        sent[0] += n
        return bytes(n)

    budget = Budget(UnpackLimits(max_bytes=256 * MiB), str(dest), "image x")
    with Unpacker(str(dest), budget) as u, pytest.raises(InvalidInput):
        u.apply_tar(Stream(zeros, info.tobuf(format=tarfile.PAX_FORMAT)), "layer")
    assert sent[0] == 0


def test_the_cli_refuses_a_bomb_in_one_line(ignite: Any, tmp_path: Path) -> None:
    """``ignite image import --unpack-limit``: one error line, exit 1, no image."""
    from tests.helpers.images import write_docker_archive

    archive = write_docker_archive(tmp_path / "bomb.tar", "bomb:latest",
                                   [tar_of(entry("zeros", data=bytes(8 * MiB)))])
    res = ignite("image", "import", str(archive), "--unpack-limit", "2MB", check=False)
    assert res.returncode == 1
    assert res.stderr.startswith("error: image ") and "unpacks to more than 2.0 MB" in res.stderr
    assert "Traceback" not in res.stderr
    assert ignite("image", "ls", "-q").stdout.strip() == ""


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_pulled_layer_bomb_stops_hashing_at_the_limit(kind: str) -> None:
    """The diff_id of a pulled layer is hashed as it streams: a bomb stops at
    the limit (its time is bounded too), whatever the compression."""
    from ignitevm.images.registry.diffid import DiffHasher

    if kind == "gzip":
        blob = gzip_stream(zeros_after=64 * MiB)
    else:
        zstandard = pytest.importorskip("zstandard")
        blob = zstandard.ZstdCompressor().compress(bytes(64 * MiB))
    ok = DiffHasher("layer", 64 * MiB)
    ok.feed(blob)
    assert ok.digest().startswith("sha256:")
    bomb = DiffHasher("layer", 8 * MiB)
    with pytest.raises(InvalidInput, match="decompresses to more than"):
        for i in range(0, len(blob), 4096):
            bomb.feed(blob[i:i + 4096])
        bomb.digest()
    assert bomb.out <= 8 * MiB + (4 << 20) + 1


def test_a_bad_unpack_limit_is_refused_at_once(ignite: Any) -> None:
    res = ignite("image", "ls", "--unpack-limit", "lots", check=False)
    assert res.returncode == 1 and res.stderr.startswith("error: invalid --unpack-limit 'lots'")
