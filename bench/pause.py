"""pause/resume latency: `ignite pause vm` and `ignite resume vm` (the whole CLI
call), median over N, against a raw QMP round trip on the same VM in the same
run (connect to its QMP socket, greeting, qmp_capabilities, stop or cont,
answer: what any client must do), with `python3 -c pass` beside them.

Target: <= 50 ms each. Usage: python -m bench.pause [rounds]
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, cli_env, ignite, median, report, run_bench
from tests.helpers.images import busybox_image


def raw_qmp(path: Path, command: str) -> float:
    """One QMP client's whole round trip for ``command``, in this process."""
    start = time.monotonic()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        f = s.makefile("rb")
        f.readline()  # greeting
        for execute in ("qmp_capabilities", command):
            s.sendall(json.dumps({"execute": execute}).encode() + b"\n")
            while b'"return"' not in (line := f.readline()):
                if not line or b'"error"' in line:
                    raise RuntimeError(f"QMP {execute}: {line!r}")
    return time.monotonic() - start


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def main(root: Path) -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    env = cli_env(root)
    exe = [str(REPO / ".venv/bin/ignite")] if (REPO / ".venv/bin/ignite").exists() \
        else [sys.executable, "-m", "ignitevm"]
    ignite(root, "kernel", "import", "debian")
    ignite(root, "image", "import", str(busybox_image(root.parent / "testbox.tar")))
    ignite(root, "run", "testbox:latest", "--name", "p", "--memory", "256MB", "--size", "256MB")
    ignite(root, "exec", "p", "--", "true")  # booted, agent up
    uid = ignite(root, "inspect", "vm", "p", "-t", "{{.ObjectMeta.UID}}").stdout.strip()
    qmp = root / "vm" / uid / "run" / "qmp.sock"
    timed([*exe, "pause", "p"], env)  # warm both paths once
    timed([*exe, "resume", "p"], env)
    pause, resume, stop, cont, py = [], [], [], [], []
    for _ in range(rounds):
        stop.append(raw_qmp(qmp, "stop"))
        cont.append(raw_qmp(qmp, "cont"))
        pause.append(timed([*exe, "pause", "p"], env))
        resume.append(timed([*exe, "resume", "p"], env))
        py.append(timed([sys.executable, "-c", "pass"], env))
    report("ignite pause vs raw QMP stop", pause, stop)
    report("ignite resume vs raw QMP cont", resume, cont)
    print(f"python3 -c pass: median {median(py) * 1000:.1f} ms; targets: pause and resume "
          f"<= 50 ms each ({median(pause) * 1000:.1f} / {median(resume) * 1000:.1f} ms)")


if __name__ == "__main__":
    run_bench(main)
