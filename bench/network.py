"""Networking figures, ratios measured in the same run:

- host <-> VM throughput (iperf3, one stream) with CNI (bridge + tc redirect
  to a tap) against a tap on a plain bridge set up by hand (same image,
  kernel, disk, QEMU command line): target >= 0.9x;
- CNI against user mode (QEMU slirp, through a forwarded port): target >= 3x;
- passt against user mode: target >= 2x;
- network setup + teardown per VM (namespace, record, CNI chain, tap and tc,
  release) against the bare steps any CNI runtime takes (``ip netns add``,
  each plugin's ADD, each plugin's DEL, ``ip netns delete``): target <= 1.2x.

Throughput: in every guest the iperf3 server and the NIC's interrupt are on
vCPU 0 (left to the guest, where the server lands against the interrupt
varies from boot to boot and moved guest -> host by up to 0.65x between two
VMs of one path: docs/networking.md), and the hand-made VM's QEMU runs in a
session of its own, as `ignite run` leaves every QEMU. The four VMs run
side by side (an idle one costs ~1 % of a core) and each round measures
every path both ways, in an order that turns
from round to round; each ratio is taken within a round and the median of
the rounds' ratios is printed with its quartiles and range. Under TCG the
guest's vCPUs bound every path, so on a shared host the figures follow the
CPU the VMs get: ratios of runs seconds apart are what can be trusted.

Needs root and the CNI plugins. The bench network has its own bridge and
subnet. Usage: python -m bench.network [all|setup|throughput] [setup rounds
(15)] [throughput rounds (8)] [seconds per run (4)]
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from bench.common import ignite, median, report, run_bench, wait_file
from tests.helpers import images
from tests.helpers.cninet import remove_network, write_default

MARKER = b"IPERF-READY"
# The NIC's interrupt and the iperf3 server on one vCPU, the same in every VM:
# left to the guest, the server lands on the interrupt's vCPU in some boots
# and on the other in others, and that alone moved guest -> host by up to
# 0.65x between two VMs of the same path (docs/networking.md, "Throughput
# under TCG"). (Busybox's sh only: the image links few applets.)
INIT = """#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys 2>/dev/null
irq=none
for d in /sys/bus/virtio/devices/virtio*; do
  [ "$(cat $d/device)" = 0x0001 ] || continue
  while read -r n rest; do
    case "$rest" in *" ${d##*/}") irq=${n%:}; echo 1 > /proc/irq/$irq/smp_affinity;; esac
  done < /proc/interrupts
done
/usr/bin/iperf3 -s -D -A 0
echo IPERF-READY nic-irq=$irq
while true; do /bin/busybox sleep 3600; done
"""
HAND_BRIDGE, HAND_TAP, HAND_NET = "igbench0", "igbtap0", "10.212.0"


def iperf_image(out: Path) -> Path:
    """The busybox test image plus the host's iperf3 and the libraries it links."""
    exe = shutil.which("iperf3") or "/usr/bin/iperf3"
    libs = re.findall(r"(/\S+\.so[.\d]*)", subprocess.run(
        ["ldd", exe], capture_output=True, text=True, check=True).stdout)
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = []
    dirs: set[str] = set()
    for src, dest in [(exe, "usr/bin/iperf3"), *[(lib, lib.lstrip("/")) for lib in libs]]:
        parts = dest.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d)
                entries.append(images._dir(d))
        entries.append(images._file(dest, Path(src).read_bytes(), 0o755))
    layers = [*images.busybox_layers(INIT), images._tar_bytes(entries)]
    return images.write_docker_archive(out, "iperfbox:latest", layers,
                                       {"Cmd": ["/sbin/init"], "Env": ["PATH=/bin"]})


def iperf(host: str, port: int = 5201, reverse: bool = False, seconds: int = 4) -> float:
    """Mb/s received, one stream, ``seconds`` after a first second left out
    (TCP's slow start; reverse: the guest sends)."""
    argv = ["iperf3", "-c", host, "-p", str(port), "-t", str(seconds), "-O", "1", "-J",
            *(["-R"] if reverse else [])]
    for _ in range(5):  # (the server may still be closing the previous test)
        out = json.loads(subprocess.run(argv, capture_output=True, text=True).stdout)
        if "error" not in out:
            break
        time.sleep(1)
    else:
        raise RuntimeError(f"iperf3 {' '.join(argv[1:])}: {out['error']}")
    return float(out["end"]["sum_received"]["bits_per_second"]) / 1e6


def vm_uid(root: Path, name: str) -> str:
    return ignite(root, "inspect", "vm", name, "-t", "{{.ObjectMeta.UID}}").stdout.strip()


def run_vm(root: Path, name: str, *flags: str) -> Path:
    ignite(root, "run", "iperfbox:latest", "--name", name, "--cpus", "2", "--memory", "256MB",
           "--size", "256MB", *flags)
    d = root / "vm" / vm_uid(root, name)
    wait_file(d / "console.log", MARKER, timeout=300)
    check_pinned(d / "console.log")
    return d


def check_pinned(console: Path) -> None:
    if b"nic-irq=none" in console.read_bytes():
        raise RuntimeError(f"the guest found no virtio-net interrupt to pin (see {console})")


def hand_config(src: Path, dest: Path) -> None:
    """The VM's config disk with the hand-made bridge's address in its network
    lines (``net``, as docs/agent-protocol.md's RESTORE)."""
    with tarfile.open(src) as tin, tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if m.name == "net" and data is not None:
                text = re.sub(r"^(net=eth0 \S+) \S+", rf"\1 {HAND_NET}.2/24", data.decode(),
                              flags=re.M)
                text = re.sub(r"^gw=\S+", f"gw={HAND_NET}.1", text, flags=re.M)
                data = text.encode()
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)


def hand_bridge_vm(d: Path) -> subprocess.Popen[bytes]:
    """The stopped user-mode VM's QEMU command line with its NIC on a tap of
    a plain bridge made here (no namespace, no CNI, no tc)."""
    sh = ["ip", "link"]
    subprocess.run([*sh, "add", HAND_BRIDGE, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", f"{HAND_NET}.1/24", "dev", HAND_BRIDGE], check=True)
    subprocess.run([*sh, "set", HAND_BRIDGE, "up"], check=True)
    subprocess.run(["ip", "tuntap", "add", HAND_TAP, "mode", "tap", "vnet_hdr"], check=True)
    subprocess.run([*sh, "set", HAND_TAP, "master", HAND_BRIDGE, "up"], check=True)
    hand_config(d / "config.tar", d / "hand-config.tar")
    argv = (d / "qemu.cmdline").read_text().splitlines()
    out: list[str] = []
    skip = 0
    for i, a in enumerate(argv):
        if skip:
            skip -= 1
            continue
        if a in ("-daemonize",):
            continue
        if a == "-pidfile":
            skip = 1
            continue
        if i and argv[i - 1] == "-netdev":
            a = f"tap,id=net0,ifname={HAND_TAP},script=no,downscript=no"
        a = a.replace(str(d / "config.tar"), str(d / "hand-config.tar"))
        out.append(a)
    (d / "console.log").write_bytes(b"")
    # In a session of its own, as `ignite run` leaves each QEMU (it daemonizes):
    # with the kernel's autogroup on, the session is the unit the scheduler
    # shares the CPU between, and a QEMU left in this bench's session would
    # share its slice with the iperf3 clients of every path.
    proc = subprocess.Popen(out, stdin=subprocess.DEVNULL, start_new_session=True)
    wait_file(d / "console.log", MARKER, timeout=300)
    check_pinned(d / "console.log")
    return proc


def drop_hand_bridge() -> None:
    for dev in (HAND_TAP, HAND_BRIDGE):
        subprocess.run(["ip", "link", "del", dev], capture_output=True, check=False)


def _cpu() -> float:
    """CPU (user + sys) of this process and the programs it waited for."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bare_add_del(conf: dict[str, object], ns: str) -> None:
    """The baseline: the steps any CNI runtime takes, done by hand."""
    subprocess.run(["ip", "netns", "add", ns], check=True)
    env = dict(os.environ, CNI_CONTAINERID=ns, CNI_NETNS=f"/run/netns/{ns}", CNI_IFNAME="eth0",
               CNI_PATH="/usr/lib/cni")
    prev = None
    plugins = conf["plugins"]
    for p in plugins:  # type: ignore[attr-defined]
        c = {**p, "cniVersion": conf["cniVersion"], "name": conf["name"],
             **({"prevResult": prev} if prev else {})}
        prev = json.loads(subprocess.run([f"/usr/lib/cni/{p['type']}"], input=json.dumps(c),
                                         env={**env, "CNI_COMMAND": "ADD"}, check=True,
                                         capture_output=True, text=True).stdout)
    for p in reversed(plugins):  # type: ignore[call-overload]
        c = {**p, "cniVersion": conf["cniVersion"], "name": conf["name"], "prevResult": prev}
        subprocess.run([f"/usr/lib/cni/{p['type']}"], input=json.dumps(c),
                       env={**env, "CNI_COMMAND": "DEL"}, check=True, capture_output=True,
                       text=True)
    subprocess.run(["ip", "netns", "delete", ns], check=True)


def ours_add_del(root: Path, d: Path) -> None:
    from ignitevm.providers.network.cni import vm

    with vm.attached(root, d, "ignite-bench", "0123456789abcdef", ()):
        pass
    vm.release(d)


def setup_teardown(root: Path, rounds: int) -> None:
    """In turns, each first every other round; wall and CPU (user + sys, with
    the programs run) of each, and the median of the rounds' ratios."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ignitevm.providers.network.cni import conflist

    conf = conflist.load(root)
    d = root / "vm" / "0123456789abcdef"
    d.mkdir(parents=True, exist_ok=True)
    steps = {"ours": lambda: ours_add_del(root, d),
             "bare": lambda: bare_add_del(conf, "ignite-bench-bare")}
    for step in steps.values():  # warm: imports, the bridge, page cache of the plugins
        step()
    wall: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(rounds):
        for k in list(steps)[::1 if r % 2 else -1]:
            c0, t0 = _cpu(), time.monotonic()
            steps[k]()
            wall[k].append(time.monotonic() - t0)
            cpu[k].append(_cpu() - c0)
    report("network setup + teardown per VM vs bare netns + CNI ADD/DEL (target <= 1.2)",
           wall["ours"], wall["bare"])
    xs = sorted(o / b for o, b in zip(wall["ours"], wall["bare"], strict=True))
    print(f"  median of the rounds' ratios {median(xs):.3f} (quartiles {xs[len(xs) // 4]:.3f}-"
          f"{xs[(3 * len(xs)) // 4]:.3f}); CPU (user + sys, with the programs run) "
          f"{median(cpu['ours']) * 1000:.1f} ms vs {median(cpu['bare']) * 1000:.1f} ms; "
          f"load {os.getloadavg()[0]:.1f}")


PATHS = ("CNI", "bridge", "slirp", "passt")
RATIOS = (("CNI", "bridge", 0.9), ("CNI", "slirp", 3.0), ("passt", "slirp", 2.0))
WAYS = ("guest -> host", "host -> guest")


def qemu_pid(d: Path) -> int:
    """The pid of the QEMU whose command line names the VM folder ``d``."""
    from ignitevm.util.proc import pids_where

    found = pids_where("cmdline", lambda cmd: cmd.split(b"\0")[0].endswith(
        b"qemu-system-x86_64") and str(d).encode() in cmd)
    if not found:
        raise RuntimeError(f"no QEMU runs for {d}")
    return found[0]


def cpu_seconds(pid: int) -> float:
    """user + sys of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(root: Path, rounds: int, seconds: int) -> None:
    """The four paths side by side, all four VMs up, measured in turns: each
    round runs every path both ways in an order that turns from round to
    round, and the ratios are taken within a round (the load of this shared
    machine drifts from minute to minute far more than within a round)."""
    ignite(root, "kernel", "import", "debian")
    ignite(root, "image", "import", str(iperf_image(root.parent / "iperfbox.tar")))
    # The hand-made VM: a user-mode VM's command line with its NIC moved to a
    # tap on a plain bridge (the VM itself stopped: its folder is borrowed).
    d = run_vm(root, "h", "--network-plugin", "user")
    ignite(root, "stop", "h")
    try:
        proc = hand_bridge_vm(d)
        try:
            run_vm(root, "u", "--network-plugin", "user", "-p", "15201:5201")
            run_vm(root, "p", "--network-plugin", "passt", "-p", "15202:5201")
            dc = run_vm(root, "c", "--network-plugin", "cni")
            pids = {"CNI": qemu_pid(dc), "bridge": qemu_pid(d)}
            ip = json.loads(ignite(root, "inspect", "vm", "c").stdout)["status"][
                "network"]["ipAddresses"][0]
            where = {"CNI": (ip, 5201), "bridge": (f"{HAND_NET}.2", 5201),
                     "slirp": ("127.0.0.1", 15201), "passt": ("127.0.0.1", 15202)}
            for host, port in where.values():  # (TCG translates each guest's path once)
                iperf(host, port, seconds=1)
                iperf(host, port, reverse=True, seconds=1)
            got: dict[tuple[str, str], list[float]] = {(p, w): [] for p in PATHS for w in WAYS}
            # CPU (user + sys) of the QEMU of each tap path per Mb carried: the host's
            # side of the path runs in that process too (tap writes, tc, veth, bridge)
            cost: dict[tuple[str, str], list[float]] = {(p, w): [] for p in pids for w in WAYS}
            loads: list[float] = []
            for r in range(rounds):
                order = PATHS[r % 4:] + PATHS[:r % 4]
                for path in order[::-1] if r % 8 >= 4 else order:
                    for way in WAYS if r % 2 else WAYS[::-1]:
                        c0 = cpu_seconds(pids[path]) if path in pids else 0.0
                        t0 = time.monotonic()
                        mbps = iperf(*where[path], reverse=way == WAYS[0], seconds=seconds)
                        got[(path, way)].append(mbps)
                        if path in pids:  # (iperf's run: the first second too, and its ends)
                            mb = mbps * (time.monotonic() - t0)
                            cost[(path, way)].append((cpu_seconds(pids[path]) - c0) / mb * 1000)
                loads.append(os.getloadavg()[0])
                print(f"round {r + 1}: " + "; ".join(
                    f"{p} " + "/".join(f"{got[(p, w)][-1]:.0f}" for w in WAYS) for p in PATHS)
                    + f"; load {loads[-1]:.1f}", file=sys.stderr)
        finally:
            proc.kill()
            proc.wait()
    finally:
        drop_hand_bridge()
    ignite(root, "rm", "-f", "u", "p", "c", "h")
    for way in WAYS:
        mbps = ", ".join(f"{p} {median(got[(p, way)]):.0f} ({min(got[(p, way)]):.0f}-"
                         f"{max(got[(p, way)]):.0f})" for p in PATHS)
        print(f"iperf3 {way}, Mb/s, median (range) of {rounds} rounds of {seconds} s: {mbps}")
        for a, b, target in RATIOS:
            xs = sorted(x / y for x, y in zip(got[(a, way)], got[(b, way)], strict=True))
            q1, q3 = xs[len(xs) // 4], xs[(3 * len(xs)) // 4]
            print(f"  {way} {a}/{b}: median of the rounds' ratios {median(xs):.2f} "
                  f"(quartiles {q1:.2f}-{q3:.2f}, range {xs[0]:.2f}-{xs[-1]:.2f}; "
                  f"target >= {target:g})")
        xs = sorted(x / y for x, y in zip(cost[("CNI", way)], cost[("bridge", way)], strict=True))
        print(f"  {way} QEMU CPU per Gb, CNI {median(cost[('CNI', way)]):.2f} s, bridge "
              f"{median(cost[('bridge', way)]):.2f} s; CNI/bridge median of the rounds' "
              f"ratios {median(xs):.2f} (quartiles {xs[len(xs) // 4]:.2f}-"
              f"{xs[(3 * len(xs)) // 4]:.2f})")
    print(f"load average (1 min) over the rounds: median {median(loads):.1f} "
          f"(range {min(loads):.1f}-{max(loads):.1f})")


def main(root: Path) -> None:
    if os.geteuid() != 0:
        sys.exit("bench.network needs root")
    # Every VM unconfined, as the hand-made baseline's QEMU is: the figures
    # compare network paths, not the jail (bench/sandbox.py measures that).
    os.environ["IGNITE_SANDBOX"] = "none"
    args = sys.argv[1:]
    what = args.pop(0) if args and args[0] in ("all", "setup", "throughput") else "all"
    rounds = int(args[0]) if args else 15
    tp_rounds = int(args[1]) if len(args) > 1 else 8
    seconds = int(args[2]) if len(args) > 2 else 4
    name, bridge, _subnet = write_default(root, tag=11)
    try:
        if what in ("all", "setup"):
            setup_teardown(root, rounds)
        if what in ("all", "throughput"):
            throughput(root, tp_rounds, seconds)
    finally:
        remove_network(name, bridge)


if __name__ == "__main__":
    run_bench(main)
