"""`ignite create` does not copy the image: its time with a 1 GB image against a 100 MB one.

Two synthetic docker-archives (a small tree plus a few big files of random
data, so that importing them is quick) are imported once each; then `ignite
create` is timed alternately on each, with `ignite rm` (untimed) after each.
The ratio 1 GB / 100 MB should be ~1: a VM's disk is a qcow2 overlay over the
shared image.ext4, whatever the image's size. Needs Debian's cloud kernel
(`ignite kernel import debian`: apt-get download, ~3 s).

Usage: python3 -m bench.create [rounds]
"""

from __future__ import annotations

import shutil
import sys
import time

from bench.common import ignite, median, report, temp_root
from bench.image_import import MB, synthetic_archive

IMAGES = {"small:latest": (100 * MB, 1), "big:latest": (1000 * MB, 4)}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    root = temp_root()
    try:
        start = time.perf_counter()
        ignite(root, "kernel", "import", "debian")
        print(f"(kernel import debian: {time.perf_counter() - start:.1f}s)")
        for ref, (size, files) in IMAGES.items():
            archive = synthetic_archive(root.parent / f"{ref.split(':')[0]}.tar", ref, size,
                                        big_files=files, seed=len(ref))
            start = time.perf_counter()
            ignite(root, "image", "import", str(archive))
            took = time.perf_counter() - start
            archive.unlink()
            print(f"(image import {ref}: {size / MB:.0f} MB in {files} file(s), {took:.1f}s)")
        print(ignite(root, "image", "ls").stdout.rstrip())
        times: dict[str, list[float]] = {ref: [] for ref in IMAGES}
        for i in range(rounds + 1):  # the first round warms up and is not counted
            for ref in (IMAGES if i % 2 else reversed(IMAGES)):
                name = f"c{i}-{ref.split(':')[0]}"
                start = time.perf_counter()
                ignite(root, "create", ref, "--name", name)
                took = time.perf_counter() - start
                ignite(root, "rm", name)
                if i:
                    times[ref].append(took)
        small, big = times["small:latest"], times["big:latest"]
        report("ignite create, 1 GB image vs 100 MB image", big, small)
        ratio = median(big) / median(small)
        verdict = "ok" if ratio <= 1.1 else "MISSED"
        print(f"  target: ratio ~1 (create copies nothing) -> {ratio:.3f}, {verdict}")
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
