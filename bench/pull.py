"""Registry pulls against skopeo, from a docker-registry on loopback, in the same run.

1. Download and verify: ignitevm's pull into its content store (every blob's
   size, sha256 and diff_id checked as it streams) vs
   `skopeo copy docker://… oci:DIR` of the same image (target <= 1.0x).
2. Until bootable: `ignite image pull` (download + root file system) vs
   `skopeo copy` then `ignite image import DIR` of that layout (target <= 0.8x).
3. A second `ignite image pull` of the unchanged tag, as a % of the first
   (target <= 1 %), SECONDS times a round; with its CPU time (user + sys) and
   that of `python3 -c pass` run as often beside it (on a host other jobs load,
   CPU times say more than wall times).

The image: LAYERS layers of incompressible data, ~200 MB in all (--quick: ~40 MB),
pushed once with skopeo. Each round starts from an empty store; rounds alternate.

Usage: python3 -m bench.pull [--quick] [rounds]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, cli_env, median, report
from tests.helpers.images import OCILayout, big_layers
from tests.helpers.registry import missing_tools, running_registry

LAYERS = 6
SECONDS = 5  # second pulls (and `python3 -c pass` runs) a round

FETCH = """
import sys
from pathlib import Path
from ignitevm.images.blobs import ContentStore
from ignitevm.images.registry.options import PullOptions
from ignitevm.images.registry.pull import pull_into
pull_into(ContentStore(Path(sys.argv[1])), sys.argv[2], PullOptions(show="quiet"),
          lambda identity: False)
"""


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, env=env, stdin=subprocess.DEVNULL)
    return time.monotonic() - start


def timed_cpu(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU: user + sys of it and what it waited for."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv)
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    quick = "--quick" in sys.argv
    rounds = int(args[0]) if args else 3
    why = missing_tools()
    if why:
        sys.exit(f"bench: {why}")
    work = Path(tempfile.mkdtemp(prefix="ignite-bench-pull-"))
    try:
        layout = OCILayout(work / "layout")
        size = (40 if quick else 200) * 1_000_000 // LAYERS
        print(f"building a {LAYERS}-layer image of ~{size * LAYERS // 1_000_000} MB...")
        src = layout.tag(layout.image(big_layers(LAYERS, size), {"Cmd": ["/bin/sh"]},
                                      compression="gzip"), "big")
        with running_registry(work / "registry") as reg:
            reg.push(src, "bench/big:1")
            ref = f"{reg.host}/bench/big:1"
            skopeo = [shutil.which("skopeo") or "skopeo", "--insecure-policy", "copy", "-q",
                      "--src-tls-verify=false", f"docker://{ref}"]
            fetch, ske, full, imp, second, start = [], [], [], [], [], []
            fetch_cpu, ske_cpu = [], []
            second_cpu, bare, bare_cpu = [], [], []
            for i in range(rounds + 1):  # round 0 warms caches, untimed
                root = work / f"root{i}"
                env = cli_env(root)
                t_fetch, c_fetch = timed_cpu([sys.executable, "-c", FETCH, str(root / "content"),
                                              ref], env=dict(env, PYTHONPATH=str(REPO)))
                t_start = timed([sys.executable, "-c", FETCH.split("pull_into(", 1)[0]],
                                env=dict(env, PYTHONPATH=str(REPO)))
                t_skopeo, c_skopeo = timed_cpu([*skopeo, f"oci:{work / f'oci{i}'}:big"])
                shutil.rmtree(root, ignore_errors=True)
                t_full = timed([str(REPO / ".venv/bin/ignite"), "image", "pull", "-q", ref],
                               env=env)
                seconds = []
                for _ in range(SECONDS):  # (interleaved with the interpreter's own start)
                    seconds.append((timed_cpu([str(REPO / ".venv/bin/ignite"), "image", "pull",
                                               "-q", ref], env=env),
                                    timed_cpu([sys.executable, "-c", "pass"], env=env)))
                root2 = work / f"rootb{i}"
                t_import = t_skopeo + timed([str(REPO / ".venv/bin/ignite"), "image", "import",
                                             "-q", "--name", "big", str(work / f"oci{i}")],
                                            env=cli_env(root2))
                for d in (root, root2, work / f"oci{i}"):
                    shutil.rmtree(d, ignore_errors=True)
                if i:
                    fetch.append(t_fetch)
                    fetch_cpu.append(c_fetch)
                    ske_cpu.append(c_skopeo)
                    start.append(t_start)
                    ske.append(t_skopeo)
                    full.append(t_full)
                    imp.append(t_import)
                    for (t_second, c_second), (t_bare, c_bare) in seconds:
                        second.append(t_second)
                        second_cpu.append(c_second)
                        bare.append(t_bare)
                        bare_cpu.append(c_bare)
        report("download+verify vs skopeo copy", fetch, ske)
        print(f"  (of which Python start-up and imports: median {median(start):.3f}s; CPU, user + "
              f"sys: {median(fetch_cpu):.3f}s vs skopeo's {median(ske_cpu):.3f}s; load "
              f"{os.getloadavg()[0]:.1f})")
        report("pull until bootable vs skopeo copy + image import", full, imp)
        print(f"second pull of an unchanged tag: median {median(second):.3f}s, "
              f"{100 * median(second) / median(full):.2f}% of the first pull, n={len(second)}; "
              f"CPU {1000 * median(second_cpu):.1f} ms; `python3 -c pass` beside it: "
              f"{median(bare):.3f}s, CPU {1000 * median(bare_cpu):.1f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
