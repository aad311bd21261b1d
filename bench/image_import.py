"""Image import throughput: `ignite image import` against doing the same by hand.

The baseline, measured in the same run on the same archive: `tar -x` of each
layer straight out of the archive into a folder, then `mkfs.ext4 -T default -d`
of that folder into a file of the size ignitevm chose. Both run warm (one
untimed round each first), alternating. Then a second import of the same image
into the same store, reported as a % of the first (target <= 1 %).

The image is the project's base image (`ignite image build`, Debian + systemd
+ openssh, ~25 s to build once into the bench's own root), or with --quick a
synthetic ~100 MB image made here (thousands of files of varied sizes).

Usage: python3 -m bench.image_import [--quick] [rounds]
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench.common import ignite, median, report, temp_root
from ignitevm.images.archive import open_source

MB = 1_000_000


class _RandomData(io.RawIOBase):
    """``size`` bytes of seeded pseudo-random data, made as they are read."""

    def __init__(self, rng: random.Random, size: int):
        self._rng = rng
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        n = self._left if n < 0 else min(n, self._left)
        self._left -= n
        return self._rng.randbytes(n)


def _add(tf: tarfile.TarFile, name: str, *, size: int = 0, rng: random.Random | None = None,
         kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, link, mode, 1_700_000_000
    data = None
    if kind == tarfile.REGTYPE:
        info.size = size
        data = _RandomData(rng or random.Random(0), size)
    tf.addfile(info, data)


def _many_files(tf: tarfile.TarFile, rng: random.Random, total: int) -> None:
    """Files the way a distribution spreads them: mostly small, some large."""
    for top in ("usr", "usr/lib", "usr/share", "usr/bin", "etc"):
        _add(tf, top, kind=tarfile.DIRTYPE, mode=0o755)
    written, i = 0, 0
    while written < total:
        if i % 40 == 0:
            d = f"usr/{('lib', 'share', 'bin')[i // 40 % 3]}/pkg{i // 40:04d}"
            _add(tf, d, kind=tarfile.DIRTYPE, mode=0o755)
        r = rng.random()
        lo, hi = (100, 16 << 10) if r < 0.9 else (16 << 10, 256 << 10) if r < 0.995 \
            else (256 << 10, 8 << 20)
        size = min(int(lo * (hi / lo) ** rng.random()), total - written)
        _add(tf, f"{d}/file{i:05d}", size=size, rng=rng, mode=0o755 if i % 9 == 0 else 0o644)
        if i % 25 == 0:
            _add(tf, f"{d}/link{i:05d}", kind=tarfile.SYMTYPE, link=f"file{i:05d}")
        if i % 100 == 0:
            _add(tf, f"{d}/hard{i:05d}", kind=tarfile.LNKTYPE, link=f"{d}/file{i:05d}")
        written += size
        i += 1


def _big_files(tf: tarfile.TarFile, rng: random.Random, total: int, count: int) -> None:
    """A small tree plus ``count`` big files of random data that make up the size."""
    for d in ("bin", "etc", "data"):
        _add(tf, d, kind=tarfile.DIRTYPE, mode=0o755)
    _add(tf, "etc/os-release", size=64, rng=rng)
    for i in range(count):
        _add(tf, f"data/blob{i}", size=total // count, rng=rng)


def synthetic_archive(out: Path, ref: str, total: int, *, big_files: int = 0,
                      seed: int = 0) -> Path:
    """A one-layer docker-archive of about ``total`` bytes, written without holding it in memory.

    ``big_files`` > 0: that many big files of random data; else many files of varied sizes.
    """
    rng = random.Random(seed)
    layer = out.with_name(out.name + ".layer")
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tf:
        tf.copybufsize = 1 << 20  # type: ignore[attr-defined]
        if big_files:
            _big_files(tf, rng, total, big_files)
        else:
            _many_files(tf, rng, total)
    h = hashlib.sha256()
    with layer.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    diff_id = h.hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref],
                            "Layers": [f"{diff_id}/layer.tar"]}]).encode()
    with tarfile.open(out, "w") as tf:
        tf.copybufsize = 1 << 20  # type: ignore[attr-defined]
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        tf.add(layer, arcname=f"{diff_id}/layer.tar")
    layer.unlink()
    return out


def layer_members(archive: Path) -> tuple[list[str], int]:
    """Names of the layer blobs inside ``archive`` (docker or OCI), and their total size."""
    with open_source(archive) as src:
        kind, digests, size = src.kind, [layer.digest for layer in src.layers], src.size
    if kind == "docker-archive":
        out = subprocess.run(["tar", "-xOf", str(archive), "manifest.json"], check=True,
                             capture_output=True).stdout
        return list(json.loads(out)[0]["Layers"]), size
    return [f"blobs/sha256/{d[7:]}" for d in digests], size


def _entries(archive: Path, members: list[str]) -> list[str]:
    names: list[str] = []
    for member in members:
        out = subprocess.run(f"tar -xOf '{archive}' '{member}' | tar -t", shell=True,
                             check=True, capture_output=True, text=True).stdout
        names += out.splitlines()
    return names


def by_hand(archive: Path, members: list[str], ext4_bytes: int, work: Path) -> float:
    """The baseline: tar -x of each layer out of the archive, then mkfs.ext4 -d."""
    tree = work / "tree"
    image = work / "image.ext4"
    tree.mkdir(parents=True)
    start = time.perf_counter()
    for member in members:
        cat = subprocess.Popen(["tar", "-xOf", str(archive), member], stdout=subprocess.PIPE)
        subprocess.run(["tar", "--numeric-owner", "-xpf", "-", "-C", str(tree)],
                       stdin=cat.stdout, check=True)
        assert cat.stdout is not None
        cat.stdout.close()
        if cat.wait() != 0:
            raise RuntimeError(f"tar -xOf {archive} {member} failed")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-T", "default", "-d", str(tree), str(image),
                    f"{ext4_bytes // 1024}k"], check=True, stdout=subprocess.DEVNULL)
    took = time.perf_counter() - start
    shutil.rmtree(work)
    return took


def ours(archive: Path) -> tuple[float, int, Path]:
    """One first import into a fresh root: (seconds, image.ext4 size, root)."""
    root = temp_root()
    start = time.perf_counter()
    ignite(root, "image", "import", str(archive))
    took = time.perf_counter() - start
    ext4 = next((root / "image").glob("*/image.ext4"))
    return took, ext4.stat().st_size, root


def base_image(root: Path) -> Path | None:
    """Build the project's base image once into ``root``'s cache; None if it can't be built."""
    start = time.perf_counter()
    res = ignite(root, "image", "build", "base", check=False)
    archive = root / "cache" / "build" / "base.oci.tar"
    if res.returncode != 0 or not archive.is_file():
        print(f"(ignite image build failed: {res.stderr.strip()[-300:]})")
        return None
    print(f"(built the base image in {time.perf_counter() - start:.1f}s)")
    return archive


def main() -> None:
    argv = sys.argv[1:]
    quick = "--quick" in argv
    argv = [a for a in argv if a != "--quick"]
    rounds = int(argv[0]) if argv else 5
    build_root = temp_root()
    scratch = build_root.parent
    try:
        archive = None if quick else base_image(build_root)
        what = "base image (Debian + systemd + openssh, OCI archive)"
        if archive is None:
            archive = synthetic_archive(scratch / "synthetic.tar", "synthetic:latest", 100 * MB)
            what = "synthetic image (~100 MB, many files of varied sizes, docker-archive)"
        members, size = layer_members(archive)
        files = sum(1 for _ in _entries(archive, members))
        print(f"image: {what}: {size / MB:.1f} MB, {files} entries in {len(members)} layer(s)")
        # Warm-up: one untimed round of each (page cache, first mkfs).
        _, ext4_bytes, warm = ours(archive)
        shutil.rmtree(warm.parent)
        by_hand(archive, members, ext4_bytes, Path(tempfile.mkdtemp(prefix="ignite-bench-")))
        mine, base, last = [], [], None
        for _ in range(rounds):
            base.append(by_hand(archive, members, ext4_bytes,
                                Path(tempfile.mkdtemp(prefix="ignite-bench-"))))
            took, _, root = ours(archive)
            mine.append(took)
            if last is not None:
                shutil.rmtree(last.parent)
            last = root
        report("first import (CLI wall time)", mine, base)
        print(f"  throughput: ignitevm {size / MB / median(mine):.0f} MB/s, by hand "
              f"{size / MB / median(base):.0f} MB/s (layer bytes / wall time)")
        assert last is not None
        again = []
        for _ in range(max(rounds, 5)):
            start = time.perf_counter()
            res = ignite(last, "image", "import", str(archive))
            again.append(time.perf_counter() - start)
            assert "already imported" in res.stderr, res.stderr
        floor = []
        for _ in range(max(rounds, 5)):
            start = time.perf_counter()
            ignite(last, "version", "-o", "short")
            floor.append(time.perf_counter() - start)
        pct = 100 * median(again) / median(mine)
        verdict = "ok" if pct <= 1.0 else "MISSED"
        print(f"second import of the same image: median {median(again) * 1000:.0f} ms, "
              f"{pct:.2f} % of the first ({median(mine):.2f}s); target <= 1 %: {verdict}")
        print("  (CLI floor, `ignite version -o short` in the same store: "
              f"{median(floor) * 1000:.0f} ms;"
              f" the second import beyond it: {(median(again) - median(floor)) * 1000:.0f} ms)")
        shutil.rmtree(last.parent)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
