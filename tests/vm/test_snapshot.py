"""Snapshots and clones on real QEMU guests: one booted source VM and one
snapshot of it are shared by the tests of this module (TCG boots cost
seconds; the machine has two cores), once under TCG and once under KVM
(skipped, with the probe's reason, where KVM cannot boot a guest)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Ignite
from tests.helpers.cninet import remove_network, require_cni, write_default
from tests.helpers.hostserver import passt_unusable
from tests.vm.conftest import kvm_unusable

SNAP = "src-booted"


def _cni_ok() -> bool:
    try:
        require_cni()
    except pytest.skip.Exception:
        return False
    return True


@pytest.fixture(scope="module")
def plugin(cli: Ignite) -> Iterator[str]:
    """CNI (clones get their own lease) where the host allows it, else user mode."""
    if not _cni_ok():
        yield "user"
        return
    name, bridge, _subnet = write_default(cli.root, tag=11)
    yield "cni"
    ids = cli("ps", "-a", "-q", check=False).stdout.split()
    if ids:
        cli("rm", "-f", *ids, check=False)
    remove_network(name, bridge)


@pytest.fixture(scope="module", params=["tcg", "kvm"])
def accel(request: pytest.FixtureRequest, cli: Ignite, kernel: str) -> str:
    """The source's accelerator (its clones take the snapshot's)."""
    if request.param == "kvm" and (why := kvm_unusable(cli, kernel)) is not None:
        pytest.skip(why)
    return str(request.param)


@pytest.fixture(scope="module")
def source(cli: Ignite, testbox: str, plugin: str, accel: str) -> Iterator[str]:
    cli("run", testbox, "--name", "src", "--memory", "256MB", "--size", "256MB",
        "--network-plugin", plugin, "--accel", accel)
    assert cli("exec", "src", "--", "true").returncode == 0  # (waits for the agent)
    cli("snapshot", "create", "src", SNAP)
    yield "src"
    cli("rm", "-f", "src", check=False)
    cli("snapshot", "rm", "-f", SNAP, check=False)


def sh(cli: Ignite, vm: str, script: str, check: bool = True) -> str:
    return cli("exec", vm, "--", "/bin/busybox", "sh", "-c", script, check=check).stdout


def ip_of(cli: Ignite, vm: str) -> str:
    obj = json.loads(cli("inspect", "vm", vm).stdout)
    return str((obj["status"]["network"]["ipAddresses"] or [""])[0])


def uid_of(cli: Ignite, vm: str) -> str:
    return cli("inspect", "vm", vm, "-t", "{{.ObjectMeta.UID}}").stdout.strip()


def test_snapshot_is_listed_and_the_source_runs_on(cli: Ignite, source: str) -> None:
    listed = json.loads(cli("snapshot", "ls", "-o", "json").stdout)
    snap = next(s for s in listed if s["metadata"]["name"] == SNAP)
    assert snap["kind"] == "Snapshot" and snap["spec"]["vm"] == "src"
    names = {f["name"] for f in snap["status"]["files"]}
    assert {"state", "disk.qcow2"} <= names
    assert "state" in cli("snapshot", "inspect", SNAP, "-o", "yaml").stdout
    assert "Paused" not in cli("ps").stdout
    sh(cli, source, "echo after > /after-snapshot")
    assert sh(cli, source, "cat /after-snapshot").strip() == "after"
    res = cli("snapshot", "create", "src", SNAP, check=False)
    assert res.returncode == 1 and "already exists" in res.stderr


def test_two_clones_have_their_own_identity(cli: Ignite, source: str, plugin: str) -> None:
    cli("run", "--from-snapshot", SNAP, "--name", "clone-a")
    sh(cli, "clone-a", "echo a > /only-in-a")
    cli("run", "--from-snapshot", SNAP, "--name", "clone-b")
    try:
        seen = {}
        for vm in ("clone-a", "clone-b"):
            before = time.time()
            out = sh(cli, vm, "cat /proc/sys/kernel/hostname /sys/class/net/eth0/address; "
                     "busybox date +%s; head -c 64 /dev/urandom | sha256sum; "
                     "busybox ip -4 addr show eth0")
            after = time.time()
            lines = out.splitlines()
            hostname, mac, clock, rnd = lines[0], lines[1], int(lines[2]), lines[3]
            assert hostname == uid_of(cli, vm)
            assert before - 1 <= clock <= after + 1, (clock, before, after)
            if plugin == "cni":
                assert ip_of(cli, vm) and f"inet {ip_of(cli, vm)}/" in out, out
                assert out.count("inet ") == 1, out  # the snapshot's address replaced
            seen[vm] = (hostname, mac, rnd, ip_of(cli, vm))
        a, b = seen["clone-a"], seen["clone-b"]
        assert a[0] != b[0] and a[1] != b[1] and a[2] != b[2]
        if plugin == "cni":
            assert a[3] != b[3]
            assert ip_of(cli, "src") not in (a[3], b[3])
        # What one clone writes, the other (started after it) and the
        # snapshot do not have; nor what the source wrote after the snapshot.
        assert sh(cli, "clone-a", "cat /only-in-a").strip() == "a"
        probe = "test -e /only-in-a && echo yes; test -e /after-snapshot && echo src; true"
        assert sh(cli, "clone-b", probe).strip() == ""
        sh(cli, "clone-b", "echo b > /only-in-b")
        assert "only-in-b" not in sh(cli, "clone-a", "ls /")
        assert cli("exec", source, "--", "true").returncode == 0
        # A clone saved in turn: its clone has both layers' files (the saved
        # layer is made to stand on the image alone).
        cli("snapshot", "create", "clone-a", "of-a", "--no-shared-memory")
        assert sh(cli, "clone-b", "cat /only-in-b").strip() == "b"  # (undisturbed)
        cli("run", "--from-snapshot", "of-a", "--name", "clone-aa")
        assert sh(cli, "clone-aa", "sync; echo 3 > /proc/sys/vm/drop_caches; cat /only-in-a"
                  ).strip() == "a"
        # The source saved again while its clones run: they run on, each with
        # its own files and identity, and still write to their disks.
        cli("snapshot", "create", "src", "src-again")
        for vm, mine, other in (("clone-a", "a", "b"), ("clone-b", "b", "a")):
            out = sh(cli, vm, f"cat /only-in-{mine}; test -e /only-in-{other} && echo {other}; "
                     f"echo {mine}2 > /again; sync; cat /again /proc/sys/kernel/hostname")
            assert out.split() == [mine, f"{mine}2", uid_of(cli, vm)], out
        assert cli("exec", source, "--", "true").returncode == 0
    finally:
        cli("rm", "-f", "clone-a", "clone-b", "clone-aa", check=False)
        cli("snapshot", "rm", "of-a", check=False)
        cli("snapshot", "rm", "-f", "src-again", check=False)


def test_restore_hook_runs_in_the_clone(cli: Ignite, source: str) -> None:
    sh(cli, source, "mkdir -p /etc/ignitevm/restore.d && printf '#!/bin/sh\\n"
       "cat /proc/sys/kernel/hostname > /rekeyed\\n' > /etc/ignitevm/restore.d/10-rekey && "
       "chmod +x /etc/ignitevm/restore.d/10-rekey")
    cli("snapshot", "create", "src", "with-hook", "--no-shared-memory")
    try:
        cli("run", "--from-snapshot", "with-hook", "--name", "hooked")
        assert sh(cli, "hooked", "cat /rekeyed").strip() == uid_of(cli, "hooked")
        res = cli("snapshot", "rm", "with-hook", check=False)
        assert res.returncode == 1 and "in use by VM 'hooked'" in res.stderr
    finally:
        cli("rm", "-f", "hooked", check=False)
        cli("snapshot", "rm", "with-hook", check=False)
        sh(cli, source, "rm -rf /etc/ignitevm", check=False)


def test_bad_restores_leave_nothing(cli: Ignite, source: str, testbox: str) -> None:
    before = set(cli("ps", "-a", "-q").stdout.split())
    res = cli("run", "--from-snapshot", SNAP, "--memory", "512MB", check=False)
    assert res.returncode == 1 and "--memory" in res.stderr and "Traceback" not in res.stderr
    res = cli("run", "--from-snapshot", SNAP, "--cpus", "2", check=False)
    assert res.returncode == 1 and "--cpus" in res.stderr
    res = cli("run", "--from-snapshot", "no-such-snapshot", check=False)
    assert res.returncode == 1 and "can't find snapshot" in res.stderr
    # A stopped VM cannot be saved.
    cli("create", testbox, "--name", "cold", "--memory", "128MB", "--size", "256MB")
    try:
        res = cli("snapshot", "create", "cold", "cold-snap", check=False)
        assert res.returncode == 1 and "is not running" in res.stderr
    finally:
        cli("rm", "cold")
    # A truncated state file is refused before QEMU sees it.
    cli("snapshot", "create", "src", "damaged", "--no-shared-memory")
    sid = json.loads(cli("snapshot", "inspect", "damaged").stdout)["metadata"]["uid"]
    state = cli.root / "snapshot" / sid / "state"
    with open(state, "r+b") as f:
        f.truncate(state.stat().st_size // 2)
    res = cli("run", "--from-snapshot", "damaged", check=False)
    assert res.returncode == 1 and "is damaged" in res.stderr, res.stderr
    cli("snapshot", "rm", "damaged")
    assert set(cli("ps", "-a", "-q").stdout.split()) == before
    assert not [p for p in (cli.root / "tmp").iterdir() if p.is_dir()]


def test_a_state_qemu_refuses_leaves_nothing(cli: Ignite, source: str) -> None:
    """A state the host's checks pass (size and digest match: here made to) but that
    QEMU cannot load: one clear error, exit 1, no VM, no staging folder, no QEMU left."""
    import hashlib

    from tests.vm.conftest import _qemu_pids

    cli("snapshot", "create", source, "unloadable", "--no-shared-memory")
    sid = json.loads(cli("snapshot", "inspect", "unloadable").stdout)["metadata"]["uid"]
    d = cli.root / "snapshot" / sid
    state = d / "state"
    with open(state, "r+b") as f:
        assert f.read(4) == b"QEVM"  # (QEMU's migration stream starts with its magic)
        f.seek(0)
        f.write(b"XXXX")
    meta = d / "metadata.json"
    obj = json.loads(meta.read_text())
    for rec in obj["status"]["files"]:
        if rec["name"] == "state":
            rec["digest"] = "sha256:" + hashlib.sha256(state.read_bytes()).hexdigest()
    meta.write_text(json.dumps(obj))
    (d / ".state.verified").unlink(missing_ok=True)
    before, qemus = set(cli("ps", "-a", "-q").stdout.split()), set(_qemu_pids(cli.root))
    def staged() -> set[Path]:  # (not the RAM templates of the source's snapshots,
        # made in the background there: they come and go on their own)
        return {p for p in (cli.root / "tmp").iterdir()
                if p.is_dir() and not p.name.endswith("-tpl")}

    staging = staged()
    try:
        res = cli("run", "--from-snapshot", "unloadable", check=False)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        assert "error: QEMU could not restore the snapshot's state" in res.stderr, res.stderr
        assert set(cli("ps", "-a", "-q").stdout.split()) == before
        assert set(_qemu_pids(cli.root)) == qemus
        assert not staged() - staging
        assert cli("exec", source, "--", "true").returncode == 0
    finally:
        cli("snapshot", "rm", "unloadable")


def test_a_full_disk_while_saving_leaves_no_snapshot(cli: Ignite, source: str) -> None:
    """The file system filling up while the state is written (a real one: a small
    tmpfs over the store's staging folder): one `no space left` error, exit 1, no
    snapshot listed, nothing left in the staging folder, and the source runs on."""
    import subprocess

    staging = cli.root / "tmp"
    staging.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(staging)],
                   check=True)
    try:
        res = cli("snapshot", "create", source, "too-big", "--no-shared-memory", check=False)
        assert res.returncode == 1 and "no space left" in res.stderr.lower(), res.stderr
        assert "Traceback" not in res.stderr
        assert not [p for p in staging.iterdir() if p.is_dir()], list(staging.iterdir())
    finally:
        subprocess.run(["umount", str(staging)], check=True)
    assert "too-big" not in cli("snapshot", "ls").stdout
    assert cli("exec", source, "--", "true").returncode == 0


def test_a_save_killed_midway_leaves_the_source_running(cli: Ignite, source: str) -> None:
    """SIGKILL to `snapshot create` while it writes: the source runs on, and no
    snapshot of that name is listed (its staging folder is swept later)."""
    import os
    import signal
    import subprocess
    import sys

    from ignitevm.providers.vmm.qemu.machine import QemuVMM
    from tests.conftest import REPO

    env = {**os.environ, "IGNITE_ROOT": str(cli.root), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ignitevm", "snapshot", "create", "src",
                             "killed"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = cli.root / "tmp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any((d / "state").exists() for d in tmp.iterdir() if d.is_dir()):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    vmdir = cli.root / "vm" / uid_of(cli, source)
    deadline = time.monotonic() + 60
    while QemuVMM().run_state(vmdir) != "running":
        assert time.monotonic() < deadline, "the source was left stopped"
        time.sleep(0.05)
    assert cli("exec", source, "--", "true").returncode == 0
    names = [s["metadata"]["name"] for s in json.loads(cli("snapshot", "ls", "-o", "json").stdout)]
    assert "killed" not in names
    # (the name is free: a save under it works, once the killed one's child is done)
    cli("snapshot", "create", "src", "killed", "--no-shared-memory")
    cli("snapshot", "rm", "killed")


def test_a_passt_clone_is_reached_through_its_forwarded_port(cli: Ignite, testbox: str) -> None:
    """A clone on passt (the template gets a stream backend like passt's) is
    reachable at once through a forwarded port: its agent sends a packet out
    after re-addressing, so passt knows the clone's new MAC."""
    import socket
    import urllib.request

    if (why := passt_unusable()) is not None:
        pytest.skip(why)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    cli("run", testbox, "--name", "psrc", "--network-plugin", "passt", "--memory", "256MB",
        "--size", "256MB")
    try:
        assert cli("exec", "psrc", "--", "true").returncode == 0
        cli("snapshot", "create", "psrc", "psnap")
        cli("run", "--from-snapshot", "psnap", "--name", "pclone", "--sandbox=none",
            "-p", f"{port}:80")
        cli("exec", "pclone", "--", "/bin/busybox", "httpd", "-p", "80", "-h", "/etc")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=30) as r:
            assert r.read().decode().strip() == uid_of(cli, "pclone")
    finally:
        cli("rm", "-f", "psrc", "pclone", check=False)
        cli("snapshot", "rm", "psnap", check=False)


def test_user_networking_clones_get_a_new_mac_and_the_same_network(cli: Ignite,
                                                                    testbox: str) -> None:
    """With user networking a clone is sent its new MAC alone (the address,
    route and name server are every VM's): each clone has its own MAC, keeps
    the snapshot's address, default route and resolv.conf, is reached through
    a forwarded port and reaches its gateway."""
    import socket
    import urllib.request

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
    cli("run", testbox, "--name", "usrc", "--network-plugin", "user", "--memory", "256MB",
        "--size", "256MB")
    names = ["uclone-0", "uclone-1"]
    try:
        assert cli("exec", "usrc", "--", "true").returncode == 0
        cli("snapshot", "create", "usrc", "usnap")
        probe = ("cat /sys/class/net/eth0/address; busybox ip -4 addr show eth0; "
                 "busybox ip route; cat /etc/resolv.conf")
        src = sh(cli, "usrc", probe).splitlines()
        macs = {src[0]}
        for n, port in zip(names, ports, strict=True):
            cli("run", "--from-snapshot", "usnap", "--name", n, "-p", f"{port}:80")
            out = sh(cli, n, probe).splitlines()
            macs.add(out[0])
            # (the MAC the host gave the clone's QEMU, now the guest's)
            cmdline = (cli.root / "vm" / uid_of(cli, n) / "qemu.cmdline").read_text()
            assert f"mac={out[0]}\n" in cmdline, (out[0], cmdline)
            # (address, routes, resolv.conf; not the link's flags: a just-booted
            # source may still show NO-CARRIER while its link-up work is pending)
            assert out[2:] == src[2:], (out, src)
            assert "inet 10.0.2.15/24" in "\n".join(out)
            assert "default via 10.0.2.2" in "\n".join(out)
            assert "nameserver 10.0.2.3" in out
            sh(cli, n, "busybox ping -c 1 -W 5 10.0.2.2 >/dev/null")  # (out, by ARP anew)
            cli("exec", n, "--", "/bin/busybox", "httpd", "-p", "80", "-h", "/etc")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=30) as r:
                assert r.read().decode().strip() == uid_of(cli, n)
        assert len(macs) == 3, macs
    finally:
        cli("rm", "-f", "usrc", *names, check=False)
        cli("snapshot", "rm", "usnap", check=False)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_ten_clones_share_ram(cli: Ignite, source: str) -> None:
    """Ten unconfined clones map the snapshot's RAM file privately: their RSS
    is measured and printed (no limit here: bench/snapshot.py compares)."""
    names = [f"many-{i}" for i in range(10)]
    try:
        for n in names:
            cli("run", "--from-snapshot", SNAP, "--name", n, "--sandbox=none")
        rss = []
        for n in names:
            pid = int((cli.root / "vm" / uid_of(cli, n) / "run" / "qemu.pid").read_text())
            rss.append(_rss_kib(pid))
        assert cli("exec", names[-1], "--", "true").returncode == 0
        print(f"\nten clones: RSS {sum(rss) / 1024:.0f} MiB in all, "
              f"{sum(rss) / 10 / 1024:.0f} MiB each on average")
    finally:
        cli("rm", "-f", *names, check=False)


def test_jailed_clones_share_one_sealed_ram(cli: Ignite, source: str) -> None:
    """Jailed clones map one sealed memfd: the same inode in every QEMU, which
    no one (not root) can write, nor map shared and writable."""
    import errno
    import mmap
    import os

    names = ["jail-0", "jail-1"]
    try:
        inodes = set()
        for n in names:
            cli("run", "--from-snapshot", SNAP, "--name", n)
            d = cli.root / "vm" / uid_of(cli, n)
            pid = int((d / "run" / "qemu.pid").read_text())
            fdpath = f"/proc/{pid}/fd/{int((d / 'ram-fd').read_text())}"
            inodes.add(os.stat(fdpath).st_ino)
            fd = os.open(fdpath, os.O_RDWR)
            try:
                with pytest.raises(OSError) as err:
                    os.pwrite(fd, b"x", 0)
                assert err.value.errno == errno.EPERM
                with pytest.raises(OSError):
                    mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_WRITE)
            finally:
                os.close(fd)
            print(f"\njailed clone {n}: RSS {_rss_kib(pid) / 1024:.0f} MiB")
        assert len(inodes) == 1
        assert sh(cli, names[0], "cat /proc/sys/kernel/hostname").strip() == uid_of(cli, names[0])
    finally:
        cli("rm", "-f", *names, check=False)


def _spares_ready(cli: Ignite, snap: str) -> str:
    """The SPARES column of ``snapshot ls`` for ``snap`` ("ready/wanted")."""
    rows = [line.split() for line in cli("snapshot", "ls").stdout.splitlines()]
    return next(cols[-1] for cols in rows if cols[1:2] == [snap])


def _spare_dirs(cli: Ignite) -> set[str]:
    return {d.name for d in (cli.root / "vm").iterdir() if (d / "spare.json").exists()}


def _qemus_of(cli: Ignite, uids: set[str]) -> list[int]:
    """The QEMU processes of these VMs (by their folders in the command line)."""
    from ignitevm.util.proc import pids_where

    marks = [str(cli.root / "vm" / uid).encode() for uid in uids]
    return pids_where("cmdline", lambda cmd: b"qemu-system" in cmd and
                      any(m in cmd for m in marks))


def _wait_spares(cli: Ignite, snap: str, want: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (got := _spares_ready(cli, snap)) != want:
        assert time.monotonic() < deadline, f"spares of {snap}: {got}, not {want}"
        time.sleep(0.2)


def test_spares_are_hidden_taken_as_new_vms_and_made_again(cli: Ignite, source: str,
                                                          plugin: str) -> None:
    """`snapshot spares`: clones started and paused ahead; `run --from-snapshot`
    takes one (its own identity, the host's clock, fresh RNG); the pool is made
    full again in the background; a dead spare is passed over and removed; the
    snapshot's removal takes every spare with it."""
    import os
    import signal

    cli("snapshot", "create", source, "spared")
    before = set(cli("ps", "-a", "-q").stdout.split())
    made: set[str] = set()
    try:
        res = cli("snapshot", "spares", "spared", "2")
        assert "keeps 2 spares ready" in res.stderr, res.stderr
        assert _spares_ready(cli, "spared") == "2/2"
        spares = _spare_dirs(cli)
        made |= spares
        assert len(spares) == 2 and len(_qemus_of(cli, spares)) == 2
        assert set(cli("ps", "-a", "-q").stdout.split()) == before  # (not listed)
        seen = {}
        for vm in ("sp-a", "sp-b"):
            res = cli("run", "--from-snapshot", "spared", "--name", vm)
            assert "from a spare of snapshot 'spared'" in res.stderr, res.stderr
            assert uid_of(cli, vm) in spares
            t0 = time.time()
            out = sh(cli, vm, "cat /proc/sys/kernel/hostname /sys/class/net/eth0/address; "
                     "busybox date +%s; head -c 64 /dev/urandom | sha256sum")
            hostname, mac, clock, rnd = out.splitlines()
            assert hostname == uid_of(cli, vm)
            assert t0 - 1 <= int(clock) <= time.time() + 1, (clock, t0)
            assert "Up" in cli("ps").stdout.split(vm)[0].splitlines()[-1]  # (not Paused)
            seen[vm] = (hostname, mac, rnd, ip_of(cli, vm))
        a, b = seen["sp-a"], seen["sp-b"]
        assert a[0] != b[0] and a[1] != b[1] and a[2] != b[2]
        if plugin == "cni":
            assert a[3] and b[3] and a[3] != b[3]
        sh(cli, "sp-a", "echo a > /only-in-a")
        assert sh(cli, "sp-b", "test -e /only-in-a && echo yes; true").strip() == ""
        # Made again in the background, as new ones.
        _wait_spares(cli, "spared", "2/2")
        assert not _spare_dirs(cli) & spares
        made |= _spare_dirs(cli)
        # A clone with a port map is not taken from the pool (its QEMU or
        # network was set up without it): it starts the usual way.
        res = cli("run", "--from-snapshot", "spared", "--name", "sp-p", "-p", "18099:80")
        assert "from a spare" not in res.stderr and _spares_ready(cli, "spared") == "2/2"
        # A spare whose QEMU died (as after the host's restart) is not counted,
        # passed over by a run, and removed by the fill that run starts.
        dead = sorted(_spare_dirs(cli))[0]
        os.kill(int((cli.root / "vm" / dead / "run" / "qemu.pid").read_text()), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _spares_ready(cli, "spared") != "1/2":
            assert time.monotonic() < deadline, _spares_ready(cli, "spared")
            time.sleep(0.1)
        cli("run", "--from-snapshot", "spared", "--name", "sp-c")
        assert uid_of(cli, "sp-c") != dead
        _wait_spares(cli, "spared", "2/2")
        assert not (cli.root / "vm" / dead).exists()
        # Bad counts: one clear line, nothing changed.
        for bad in ("65", "-1"):
            res = cli("snapshot", "spares", "spared", bad, check=False)
            assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
        res = cli("snapshot", "spares", "no-such", "1", check=False)
        assert res.returncode == 1 and "can't find snapshot" in res.stderr
        _wait_spares(cli, "spared", "2/2")
        made |= _spare_dirs(cli)
        res = cli("snapshot", "spares", "spared", "1")
        assert "keeps 1 spare ready" in res.stderr and len(_spare_dirs(cli)) == 1
    finally:
        cli("rm", "-f", "sp-a", "sp-b", "sp-c", "sp-p", check=False)
        cli("snapshot", "rm", "-f", "spared", check=False)
    assert not _spare_dirs(cli) and not _qemus_of(cli, made)
    assert set(cli("ps", "-a", "-q").stdout.split()) == before


def test_a_fill_killed_midway_leaves_nothing_for_good(cli: Ignite, source: str) -> None:
    """SIGKILL to `snapshot spares` while it makes a spare: the half-made one
    is not in the pool, and the next fill removes it (and its QEMU)."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    cli("snapshot", "create", source, "killfill")
    made: set[str] = set()
    env = {**os.environ, "IGNITE_ROOT": str(cli.root), "PYTHONPATH": str(REPO)}
    try:
        proc = subprocess.Popen([sys.executable, "-m", "ignitevm", "snapshot", "spares",
                                 "killfill", "1"], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not _spare_dirs(cli) and proc.poll() is None:
            assert time.monotonic() < deadline, "no spare was begun"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        half = _spare_dirs(cli)
        made |= half
        assert len(half) == 1 and _spares_ready(cli, "killfill") == "0/1"
        assert set(cli("ps", "-a", "-q").stdout.split()).isdisjoint(half)
        cli("snapshot", "spares", "killfill", "1")
        assert _spares_ready(cli, "killfill") == "1/1" and not _spare_dirs(cli) & half
        assert not _qemus_of(cli, half)
        made |= _spare_dirs(cli)
    finally:
        cli("snapshot", "rm", "killfill", check=False)
    assert not _spare_dirs(cli) and not _qemus_of(cli, made)
