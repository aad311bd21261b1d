"""The guest agent against its baselines, on one VM of the base image (systemd + sshd):

- exec round trip: `ignite exec vm -- true`, median over N, against the same
  command over SSH to the same VM (the system ssh client, same key and port).
  Target: <= SSH's time, and <= 50 ms (issue 15), printed beside `python3 -c
  pass` in the same run.
- cp of a 256 MB file host -> guest and back, MB/s, against `cat` through the
  raw agent channel (`ignite exec` with stdin/stdout). Target: >= 70 % of it.

Usage: python -m bench.agent [rounds]   (builds the base image: ~1 min)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, cli_env, ignite, median, report, run_bench, wait_file


def timed(argv: list[str], env: dict[str, str], **kw: object) -> float:
    start = time.monotonic()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return time.monotonic() - start


def main(root: Path) -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    env = cli_env(root)
    exe = [str(REPO / ".venv/bin/ignite")] if (REPO / ".venv/bin/ignite").exists() \
        else [sys.executable, "-m", "ignitevm"]
    ignite(root, "kernel", "import", "debian")
    ignite(root, "image", "build", "base")
    ignite(root, "run", "base", "--name", "b", "--cpus", "2", "--memory", "1GB", "--ssh")
    uid = ignite(root, "inspect", "vm", "b", "-t", "{{.ObjectMeta.UID}}").stdout.strip()
    wait_file(root / "vm" / uid / "console.log", b"Multi-User System", timeout=300)

    sys.path.insert(0, str(REPO))
    from ignitevm.api.types import VM
    from ignitevm.cli.ssh import ssh_argv
    from ignitevm.operations.context import Context

    ctx = Context(root=root)
    ssh = ssh_argv(ctx, ctx.store.resolve(VM, "b"), None, False, 60)
    timed([*ssh, "true"], env)  # warm both paths once
    timed([*exe, "exec", "b", "--", "true"], env)
    ours, base, py = [], [], []
    for _ in range(rounds):
        base.append(timed([*ssh, "true"], env))
        ours.append(timed([*exe, "exec", "b", "--", "true"], env))
        py.append(timed([sys.executable, "-c", "pass"], env))
    report("exec round trip (`true`), agent vs SSH", ours, base)
    print(f"exec round trip: median {median(ours) * 1000:.1f} ms (target <= 50 ms), "
          f"`python3 -c pass` {median(py) * 1000:.1f} ms in the same run")

    size = 256 << 20
    src = root.parent / "big.bin"
    src.write_bytes(os.urandom(size))
    back = root.parent / "back.bin"
    mb = size / (1 << 20)
    cp_in, raw_in, cp_out, raw_out = [], [], [], []
    clear = [*exe, "exec", "b", "--", "rm", "-f", "/dev/shm/raw", "/dev/shm/big.bin"]
    for _ in range(3):
        # (a 1 GB guest's /dev/shm holds one 256 MB copy at a time)
        timed(clear, env)
        with src.open("rb") as f:
            raw_in.append(timed([*exe, "exec", "b", "--", "sh", "-c", "cat > /dev/shm/raw"],
                                env, stdin=f))
        timed(clear, env)
        cp_in.append(timed([*exe, "cp", str(src), "b:/dev/shm/big.bin"], env))
        raw_out.append(timed([*exe, "exec", "b", "--", "cat", "/dev/shm/big.bin"], env))
        back.unlink(missing_ok=True)
        cp_out.append(timed([*exe, "cp", "b:/dev/shm/big.bin", str(back)], env))
    assert back.read_bytes() == src.read_bytes()
    for name, c, r in (("host -> guest", cp_in, raw_in), ("guest -> host", cp_out, raw_out)):
        mc, mr = mb / median(c), mb / median(r)
        print(f"cp 256 MB {name}: ignitevm cp {mc:.0f} MB/s, raw channel (exec cat) "
              f"{mr:.0f} MB/s, ratio {mc / mr:.2f} (target >= 0.70)")
    ignite(root, "rm", "-f", "b")


if __name__ == "__main__":
    run_bench(main)
