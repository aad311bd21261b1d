"""Unpacking a zstd layer: the zstandard library in-process vs the `zstd` program.

A ~100 MB zstd layer (a tar of this host's /usr/lib and /usr/share files, ~250 MB
uncompressed, level 3 as `zstd` and buildkit write it) is applied with
`apply_layers` (sha256, diff_id, tar entries written) by ignitevm's code, which
decompresses with the zstandard library, and by the baseline: the same code
reading the plain tar from `zstd -dc` (the zstd program in its own process, as the
project unpacked zstd layers before). Each run is a fresh child process; runs
alternate; CPU is user + sys of the child and its children (the program).
``--decompress``: only decompression (the output hashed, nothing written).

Usage: python3 -m bench.zstd_layer [--decompress] [rounds]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench.common import REPO, median, report

TARGET = 100 << 20  # compressed bytes
SOURCES = ("/usr/lib", "/usr/share")

APPLY = """
import hashlib, subprocess, sys
from contextlib import contextmanager
from ignitevm.images.layers import apply_layers
from ignitevm.images.limits import UnpackLimits
from ignitevm.images.source import ImageSource, Layer
blob, tar_digest, dest, how, mode = sys.argv[1:6]
if mode == "decompress":
    h = hashlib.sha256()
    if how == "library":
        import zstandard
        with open(blob, "rb") as f:
            r = zstandard.ZstdDecompressor().stream_reader(f, read_size=1 << 20)
            for chunk in iter(lambda: r.read(1 << 20), b""):
                h.update(chunk)
    else:
        p = subprocess.Popen(["zstd", "-dcq", blob], stdout=subprocess.PIPE)
        for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
            h.update(chunk)
        assert p.wait() == 0
    assert "sha256:" + h.hexdigest() == tar_digest
    sys.exit(0)
if how == "library":
    digest = "sha256:" + "1" * 64  # (a verified blob's own digest is not checked again)
    @contextmanager
    def opener():
        with open(blob, "rb", buffering=1 << 20) as f:
            yield f
else:
    digest = tar_digest
    @contextmanager
    def opener():
        p = subprocess.Popen(["zstd", "-dcq", blob], stdout=subprocess.PIPE)
        try:
            yield p.stdout
        finally:
            p.stdout.close()
            assert p.wait() == 0
layer = Layer(digest, 0, opener, tar_digest, verified=True)
src = ImageSource("bench", "bench", "sha256:" + "0" * 64, {}, [layer], 0, None)
apply_layers(src, dest, limits=UnpackLimits(max_bytes=8 << 30))
"""


def make_layer(work: Path) -> tuple[Path, str]:
    """A ~TARGET-byte zstd blob of host files, and the sha256 of its tar."""
    import hashlib

    import zstandard

    tar = work / "layer.tar"
    budget = int(TARGET * 2.6)
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as tf:
        total = 0
        for base in SOURCES:
            for root, dirs, files in os.walk(base):
                dirs.sort()
                for name in sorted(files):
                    path = os.path.join(root, name)
                    if not os.path.isfile(path) or os.path.islink(path):
                        continue
                    try:
                        tf.add(path, arcname=path.lstrip("/"), recursive=False)
                    except OSError:
                        continue
                    total += os.path.getsize(path)
                    if total > budget:
                        break
                if total > budget:
                    break
            if total > budget:
                break
    blob = work / "layer.tar.zst"
    with open(tar, "rb") as src, open(blob, "wb") as out:
        zstandard.ZstdCompressor(level=3).copy_stream(src, out)
    digest = hashlib.sha256()
    with open(tar, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    tar.unlink()
    return blob, "sha256:" + digest.hexdigest()


def run(blob: Path, tar_digest: str, work: Path, how: str, mode: str) -> tuple[float, float]:
    """(wall, CPU) of one child applying (or decompressing) the layer."""
    dest = work / "dest"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", APPLY, str(blob), tar_digest, str(dest), how,
                             mode], env=env, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{how} run failed ({proc.returncode})")
    # (wait4's usage covers the child and the children it waited for: the program)
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    args = sys.argv[1:]
    mode = "decompress" if "--decompress" in args else "apply"
    args = [a for a in args if a != "--decompress"]
    rounds = int(args[0]) if args else 5
    if shutil.which("zstd") is None:
        raise SystemExit("the zstd program (the baseline) is not installed")
    work = Path(tempfile.mkdtemp(prefix="ignite-bench-zstd-"))
    try:
        blob, tar_digest = make_layer(work)
        print(f"layer: {blob.stat().st_size / 1e6:.1f} MB zstd; {mode}; {rounds} rounds")
        walls: dict[str, list[float]] = {"library": [], "program": []}
        cpus: dict[str, list[float]] = {"library": [], "program": []}
        for i in range(rounds):
            order = ("library", "program") if i % 2 == 0 else ("program", "library")
            for how in order:
                wall, cpu = run(blob, tar_digest, work, how, mode)
                walls[how].append(wall)
                cpus[how].append(cpu)
        report(f"zstd layer {mode}, CPU (user+sys)", cpus["library"], cpus["program"])
        report(f"zstd layer {mode}, wall", walls["library"], walls["program"])
        for how in ("library", "program"):
            print(f"  {how}: CPU median {median(cpus[how]):.3f}s, wall median "
                  f"{median(walls[how]):.3f}s, fastest wall {min(walls[how]):.3f}s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
