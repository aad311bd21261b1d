"""`ignite exec VM -- true` round trip (issue 15: <= 50 ms), beside `python3 -c pass`.

One small VM (the tests' busybox image, 256 MB); then, interleaved N times:
- `python3 -c pass` (the interpreter the CLI runs on): the floor of any
  Python CLI on this host, measured in the same run;
- `ignite exec vm -- true`: the CLI's fast path (cli/fastexec.py);
- `ignite exec vm true` (no `--`): the same exec through the full command
  tree, as every exec ran before the fast path;
- a raw exec through the agent channel from this (warm) process: the
  guest's own share (connect, HELLO/PING, EXEC of `true`, EXIT).

Usage: python -m bench.exec [rounds] [--idle]
  --idle: take each round only once the host's CPUs were >= 80 % idle for half
  a second (for a shared host; the report says how many rounds waited in vain).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, cli_env, ignite, median, run_bench


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def _cpu() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs so far."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)


def wait_idle(share: float = 0.8, window: float = 0.5, deadline: float = 120.0) -> bool:
    """Wait until the CPUs were at least ``share`` idle over ``window`` seconds;
    False if that did not happen within ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        idle0, total0 = _cpu()
        time.sleep(window)  # (a sampling window, not a wait for an event)
        idle1, total1 = _cpu()
        if total1 > total0 and (idle1 - idle0) / (total1 - total0) >= share:
            return True
    return False


def main(root: Path) -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    rounds = int(args[0]) if args else 40
    idle = "--idle" in sys.argv
    env = cli_env(root)
    sys.path.insert(0, str(REPO))
    from tests.helpers.images import busybox_image

    exe = REPO / ".venv" / "bin" / "ignite"
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "ignitevm"]
    python = str(REPO / ".venv" / "bin" / "python") if exe.exists() else sys.executable
    ignite(root, "kernel", "import", "debian")
    ignite(root, "image", "import", str(busybox_image(root.parent / "testbox.tar")))
    ignite(root, "run", "testbox:latest", "--name", "x", "--memory", "256MB", "--size",
           "256MB", "--network-plugin", "none")
    timed([*cli, "exec", "x", "--", "true"], env)  # waits for the agent; warms caches

    from ignitevm.agent import session
    from ignitevm.api.types import VM
    from ignitevm.operations import guest
    from ignitevm.operations.context import Context

    ctx = Context(root=root)
    vm = ctx.store.resolve(VM, "x")

    def raw() -> float:
        start = time.monotonic()
        with guest.channel(ctx, vm) as ch:
            session.run_exec(ch, session.ExecRequest(["true"]))
        return time.monotonic() - start

    py, fast, full, agent = [], [], [], []
    busy = 0
    for _ in range(rounds):
        if idle and not wait_idle():
            busy += 1
        py.append(timed([python, "-c", "pass"], env))
        fast.append(timed([*cli, "exec", "x", "--", "true"], env))
        full.append(timed([*cli, "exec", "x", "true"], env))
        agent.append(raw())
    ms = {name: median(xs) * 1000 for name, xs in
          (("py", py), ("fast", fast), ("full", full), ("agent", agent))}
    print(f"exec round trip, median of {rounds} (interleaved" + (
        f"; each round on an idle host, {busy} of them not)" if idle else ")") + ":")
    print(f"  ignite exec x -- true      {ms['fast']:6.1f} ms  (target <= 50 ms)")
    print(f"  ignite exec x true (tree)  {ms['full']:6.1f} ms")
    print(f"  python3 -c pass            {ms['py']:6.1f} ms  (exec = python + "
          f"{ms['fast'] - ms['py']:.1f} ms)")
    print(f"  agent round trip, in-process {ms['agent']:4.1f} ms  (connect, HELLO/PING, "
          "EXEC, EXIT)")
    ignite(root, "rm", "-f", "x")


if __name__ == "__main__":
    run_bench(main)
