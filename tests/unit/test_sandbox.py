"""The sandbox's logic without a VM: cgroup discovery and limits, per-VM ids,
the jail helper's command line, and QEMU's confined command line.

cgroup hierarchies are played by temporary folders here (a real pure-v2 host
is not available on this machine; the VM tests use its real v1 controllers)."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from ignitevm.cli.common import sandbox_mode
from ignitevm.errors import InvalidInput
from ignitevm.providers.sandbox import build, cgroups, ids, jail
from ignitevm.providers.vmm.base import Disk, LaunchSpec
from ignitevm.providers.vmm.qemu import args

HYBRID = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
V1_COMBINED = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n"


def test_hybrid_host_takes_every_controller_from_v1() -> None:
    found = cgroups.hierarchies(HYBRID)
    assert [(str(h.path), h.v2, h.controllers) for h in found] == [
        ("/sys/fs/cgroup/memory", False, ("memory",)),
        ("/sys/fs/cgroup/cpu", False, ("cpu",)),
        ("/sys/fs/cgroup/pids", False, ("pids",)),
        ("/sys/fs/cgroup/unified", True, ()),  # for the VM's loopback programs
    ]


def test_combined_v1_mount() -> None:
    (h,) = cgroups.hierarchies(V1_COMBINED)
    assert str(h.path) == "/sys/fs/cgroup/cpu,cpuacct" and h.controllers == ("cpu",)


def _v2(tmp_path: Path, offered: str = "cpuset cpu io memory hugetlb pids rdma") -> Path:
    root = tmp_path / "cg2"
    root.mkdir()
    (root / "cgroup.controllers").write_text(offered + "\n")
    return root


def test_pure_v2_host(tmp_path: Path) -> None:
    root = _v2(tmp_path)
    (h,) = cgroups.hierarchies(f"cgroup2 {root} cgroup2 rw,nsdelegate 0 0\n")
    assert h.v2 and h.path == root and h.controllers == ("memory", "cpu", "pids")


def test_v2_offers_only_what_it_has(tmp_path: Path) -> None:
    root = _v2(tmp_path, "memory pids")
    (h,) = cgroups.hierarchies(f"cgroup2 {root} cgroup2 rw 0 0\n")
    assert h.controllers == ("memory", "pids")


def test_limits() -> None:
    lim = cgroups.limits(cpus=2, memory_mib=512)
    assert lim.memory_bytes == (512 + cgroups.OVERHEAD_MIB) * 2**20
    assert lim.cpu_quota_us == 3 * cgroups.PERIOD_US
    assert lim.pids == cgroups.PIDS_MAX + 2 and lim.cpu_weight == 200


def test_v2_create_writes_limits_and_enables_controllers(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = _v2(tmp_path)
    writes: list[tuple[Path, str]] = []
    real = cgroups._write

    def record(path: Path, value: str) -> None:
        writes.append((path, value))
        real(path, value)

    monkeypatch.setattr(cgroups, "_write", record)
    found = [cgroups.Hierarchy(root, True, ("memory", "cpu", "pids"))]
    procs = cgroups.create("vm1", cgroups.limits(1, 256), found)
    d = root / "ignite" / "vm1"
    assert procs == [d / "cgroup.procs"]
    assert (d / "memory.max").read_text() == str(512 * 2**20)
    assert (d / "cpu.max").read_text() == f"200000 {cgroups.PERIOD_US}"
    assert (d / "pids.max").read_text() == str(cgroups.PIDS_MAX + 1)
    for parent in (root, root / "ignite"):  # one controller per write
        assert [v for p, v in writes if p == parent / "cgroup.subtree_control"] == [
            "+memory", "+cpu", "+pids"]


def test_v1_create_and_release(tmp_path: Path) -> None:
    found = []
    for c in ("memory", "cpu", "pids"):
        (tmp_path / c).mkdir()
        found.append(cgroups.Hierarchy(tmp_path / c, False, (c,)))
    cgroups.create("vm1", cgroups.limits(1, 128), found)
    assert (tmp_path / "memory/ignite/vm1/memory.limit_in_bytes").read_text() == str(384 << 20)
    assert (tmp_path / "cpu/ignite/vm1/cpu.cfs_quota_us").read_text() == "200000"
    assert (tmp_path / "cpu/ignite/vm1/cpu.shares").read_text() == "1024"
    assert (tmp_path / "pids/ignite/vm1/pids.max").read_text() == str(cgroups.PIDS_MAX + 1)
    # A real cgroup folder has only kernel files, which rmdir removes with
    # it; here they are plain files, so empty the folders first.
    for h in found:
        for f in (h.path / "ignite" / "vm1").iterdir():
            f.unlink()
    assert cgroups.release("vm1", found)
    assert not any((h.path / "ignite" / "vm1").exists() for h in found)
    assert cgroups.release("vm1", found)  # twice is fine


def test_create_leaves_nothing_when_a_limit_fails(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "pids").mkdir()
    found = [cgroups.Hierarchy(tmp_path / "memory", False, ("memory",)),
             cgroups.Hierarchy(tmp_path / "pids", False, ("pids",))]
    (tmp_path / "pids" / "ignite" / "vm1" / "pids.max").mkdir(parents=True)  # unwritable
    with pytest.raises(OSError):
        cgroups.create("vm1", cgroups.limits(1, 128), found)
    memory_group = tmp_path / "memory" / "ignite" / "vm1"
    for f in memory_group.iterdir():  # (see above: plain files stand in for kernel ones)
        f.unlink()
    cgroups.release("vm1", found[:1])
    assert not memory_group.exists()


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/sys/fs/cgroup/memory").is_dir(),
                    reason="needs root and a v1 memory hierarchy")
def test_real_memory_cgroup_keeps_a_running_member() -> None:
    """On this host's real v1 hierarchies: a group with a process cannot be
    released (the VM keeps its limits); once the process is gone, it can."""
    name = f"unit-{os.getpid()}"
    procs = cgroups.create(name, cgroups.limits(1, 64))
    try:
        child = subprocess.Popen(["sleep", "60"])
        try:
            for f in procs:
                f.write_text(str(child.pid))
            assert cgroups.members(name) == {child.pid}
            assert not cgroups.release(name)
        finally:
            child.kill()
            child.wait()
        assert cgroups.release(name)
    finally:
        cgroups.release(name)


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/sys/fs/cgroup/pids").is_dir(),
                    reason="needs root and a v1 pids hierarchy")
@pytest.mark.parametrize("exits_by_itself", [True, False])
def test_clear_waits_for_a_vmm_on_its_way_out_then_kills(exits_by_itself: bool) -> None:
    """A stopped VM's group may still hold its VMM for a moment (QEMU removes
    its pid file before it has exited): clear waits for it, and kills what
    would outlive the VM, then the group goes."""
    name = f"unit-clear-{os.getpid()}-{exits_by_itself}"
    found = [h for h in cgroups.hierarchies() if "pids" in h.controllers]
    procs = cgroups.create(name, cgroups.limits(1, 64), found)
    child = subprocess.Popen(["sleep", "0.3" if exits_by_itself else "60"])
    try:
        for f in procs:
            f.write_text(str(child.pid))
        reaper = threading.Thread(target=child.wait)  # as init reaps a real VMM
        reaper.start()
        assert cgroups.clear(name, grace=10 if exits_by_itself else 0.2, found=found)
        reaper.join()
        assert child.returncode == (0 if exits_by_itself else -9)
        assert not any(p.exists() for p in cgroups.paths(name, found))
    finally:
        child.kill()
        child.wait()
        cgroups.release(name, found)


def test_pick_starts_at_the_hash_and_skips_taken_ids() -> None:
    first = ids.pick("0123456789abcdef", [], lambda _: False)
    assert ids.BASE < first < ids.BASE + ids.SLOTS
    assert ids.pick("0123456789abcdef", [], lambda _: False) == first  # stable
    second = ids.pick("0123456789abcdef", [first], lambda i: i == first + 1)
    assert second not in (first, first + 1) and second != ids.SHARED_GID


def test_allocate_records_unique_ids(tmp_path: Path) -> None:
    vms = [tmp_path / f"{n:016x}" for n in range(20)]
    got = []
    for d in vms:
        d.mkdir()
        got.append(ids.allocate(d))
    assert len(set(got)) == len(got)
    assert all(ids.read(d) == i for d, i in zip(vms, got, strict=True))
    assert ids.allocate(vms[3]) == got[3]  # kept for the VM's life
    (vms[4] / ids.ID_FILE).write_text("0\n")  # damaged or root: never used
    assert ids.read(vms[4]) is None and ids.allocate(vms[4]) != 0


def test_identity_has_the_shared_group() -> None:
    me = jail.identity(ids.BASE + 7)
    assert me == jail.Identity(ids.BASE + 7, ids.BASE + 7, (ids.SHARED_GID,))


def test_system_binds_hold_qemu_libraries_and_firmware() -> None:
    qemu = "/usr/bin/qemu-system-x86_64"
    if not Path(qemu).exists():
        pytest.skip("qemu-system-x86 is not installed")
    binds, links = jail.system_binds(qemu)
    paths = dict(binds)
    assert paths[os.path.realpath(qemu)] == "rx"
    assert paths[os.path.realpath("/usr/lib/x86_64-linux-gnu")] == "rx"
    assert paths["/usr/share/qemu"] == "r"
    # no bind inside another one
    for p, _ in binds:
        assert not any(p != q and p.startswith(q + "/") for q, _ in binds)
    if os.path.islink("/lib64"):
        assert (os.readlink("/lib64"), "/lib64") in links


def test_plan_argv() -> None:
    me = jail.identity(ids.BASE + 5)
    p = jail.Plan(me, [("/usr/bin/qemu", "rx"), ("/r/vm/x/run", "w")],
                  [("/dev/null", "c", 1, 3, 0o666, 0), ("/dev/kvm", "c", 10, 232, 0o600, me.uid)],
                  [("usr/lib", "/lib")], [Path("/cg/memory/ignite/x/cgroup.procs")], True,
                  Path("/r/vm/x"))
    argv = p.argv(Path("/cache/ignite-jail"))
    assert argv[:9] == ["/cache/ignite-jail", "-u", str(me.uid), "-g", str(me.gid),
                        "-G", str(ids.SHARED_GID), "-w", "/r/vm/x"]
    joined = " ".join(argv)
    assert "-C /cg/memory/ignite/x/cgroup.procs" in joined
    assert "-b /r/vm/x/run /r/vm/x/run w" in joined
    assert "-d /dev/null c 1 3 666 0 0" in joined
    assert f"-d /dev/kvm c 10 232 600 {me.uid} {me.uid}" in joined
    assert "-l usr/lib /lib" in joined and argv[-2:] == ["-N", "--"]
    assert p._replace(low_ports=True).argv(Path("/h"))[-3:] == ["-N", "-P", "--"]


def test_own_refuses_links(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/etc/passwd")
    with pytest.raises(OSError, match="symbolic link"):
        jail.own(tmp_path / "link", os.getuid(), os.getgid(), 0o600)


def _spec(sandbox: str) -> LaunchSpec:
    w = Path("/r/vm/0123456789abcdef")
    return LaunchSpec(uid="0123456789abcdef", workdir=w, kernel=Path("/k/vmlinuz"),
                      initrd=None, cmdline="console=ttyS0", cpus=1, memory_mib=256,
                      disks=(Disk(w / "disk.qcow2", "ignite-root", "qcow2",
                                  backing=Path("/r/image/i/image.ext4")),),
                      accel="tcg", sandbox=sandbox)


def test_jailed_qemu_argv() -> None:
    spec = _spec("jail")._replace(agent_channels=2)
    argv = args.argv(spec, "/usr/bin/qemu-system-x86_64", qmp_fd=7, console_fd=12,
                     socket_fds=(8, 9, 10))
    joined = " ".join(argv)
    assert f"-sandbox {args.SECCOMP}" in joined
    assert "spawn=deny" in args.SECCOMP and "elevateprivileges=deny" in args.SECCOMP
    assert "-daemonize" not in argv and "-runas" not in argv
    assert "-chardev socket,id=qmp,fd=7,server=on,wait=off -mon chardev=qmp,mode=control" in joined
    # QEMU names no path to write: the host made its sockets (passed as fds)
    # and writes its pid file.
    assert "-pidfile" not in argv and "/run/" not in joined
    assert "socket,id=console,fd=8,server=on,wait=off,logfile=/dev/fdset/7" in joined
    assert "socket,id=agent1,fd=9,server=on" in joined
    assert "socket,id=agent2,fd=10,server=on" in joined
    # The overlay's backing file is named by the host, not read from its header.
    assert "backing.driver=raw,backing.file.filename=/r/image/i/image.ext4" in joined


def test_unconfined_qemu_argv() -> None:
    argv = args.argv(_spec("none"), console_fd=9)
    assert "-sandbox" not in argv and argv[-1] == "-daemonize"
    assert "-pidfile /r/vm/0123456789abcdef/run/qemu.pid" in " ".join(argv)


@pytest.mark.parametrize("given, env, want", [
    ("none", None, "none"), (None, "none", "none"), (None, None, "jail"), ("jail", "none", "jail"),
])
def test_sandbox_mode_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                 given: str | None, env: str | None, want: str) -> None:
    import argparse

    monkeypatch.delenv("IGNITE_SANDBOX", raising=False)
    if env:
        monkeypatch.setenv("IGNITE_SANDBOX", env)
    cfg = tmp_path / "config.yaml"
    cfg.write_text("apiVersion: ignite.weave.works/v1alpha4\nkind: Configuration\nspec: {}\n")
    ns = argparse.Namespace(sandbox=given, ignite_config=str(cfg))
    assert sandbox_mode(ns) == want


def test_sandbox_mode_from_configuration_and_bad_values(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    monkeypatch.delenv("IGNITE_SANDBOX", raising=False)
    cfg = tmp_path / "config.yaml"
    cfg.write_text("apiVersion: ignite.weave.works/v1alpha4\nkind: Configuration\n"
                   "spec:\n  sandbox: none\n")
    assert sandbox_mode(argparse.Namespace(sandbox=None, ignite_config=str(cfg))) == "none"
    monkeypatch.setenv("IGNITE_SANDBOX", "off")
    with pytest.raises(InvalidInput, match="invalid sandbox 'off'"):
        sandbox_mode(argparse.Namespace(sandbox=None, ignite_config=str(cfg)))


def test_sandbox_mode_default_is_none_without_root(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A user without root runs QEMU as themselves (the jail needs root): the
    default then is none, not an error at every run."""
    import argparse

    monkeypatch.delenv("IGNITE_SANDBOX", raising=False)
    ns = argparse.Namespace(sandbox=None, ignite_config=None)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert sandbox_mode(ns) == "jail"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert sandbox_mode(ns) == "none"
    assert sandbox_mode(argparse.Namespace(sandbox="jail", ignite_config=None)) == "jail"


@pytest.mark.skipif(not Path("/usr/bin/gcc").exists(), reason="gcc is not installed")
def test_helper_builds_once_and_refuses_bad_usage(tmp_path: Path) -> None:
    helper = build.helper(tmp_path)
    assert build.helper(tmp_path) == helper and os.stat(helper).st_mode & 0o777 == 0o700
    # uid 0 is refused before anything is done (and without forking)
    res = subprocess.run([str(helper), "-u", "0", "-g", "0", "--", "/bin/true"],
                         capture_output=True, text=True)
    assert res.returncode == 125 and "ignite-jail: usage" in res.stderr
    res = subprocess.run([str(helper), "-u", "5", "-g", "5", "--", "relative"],
                         capture_output=True, text=True)
    assert res.returncode == 125 and "absolute" in res.stderr


@pytest.mark.skipif(not Path("/usr/bin/gcc").exists(), reason="gcc is not installed")
def test_helper_refuses_a_pid_fd_in_the_foreground(tmp_path: Path) -> None:
    """-i FD reports a detached child's pid; with -f there is no child, so FD
    would stay open into the program: the pair is refused before anything is
    done, and nothing is written to FD."""
    helper = build.helper(tmp_path)
    r, w = os.pipe()
    try:
        res = subprocess.run([str(helper), "-u", "5", "-g", "5", "-f", "-i", str(w),
                              "--", "/bin/true"], capture_output=True, text=True, pass_fds=(w,))
        os.close(w)
        w = -1
        assert res.returncode == 125, res.stderr
        assert res.stderr.startswith("ignite-jail: usage: -i") and "-f" in res.stderr
        assert res.stderr.count("\n") == 1
        assert os.read(r, 64) == b""
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


@pytest.mark.skipif(not Path("/usr/bin/gcc").exists(), reason="gcc is not installed")
def test_unconfined_console_writer_bounds_the_log_without_privilege(tmp_path: Path) -> None:
    """``ignite-jail -n -c``: no jail, only the console writer, as an unconfined
    VMM (--sandbox=none) gets it; it needs no privilege (run as nobody when
    the tests run as root). A program flooding the pipe with nobody looking
    leaves the files bounded; the writer runs in a session of its own, without
    the caller's stdio, and exits once the pipe's last write end is closed."""
    import shutil
    import tempfile

    from ignitevm.providers.vmm.qemu.machine import wait_pid

    helper = build.helper(tmp_path)
    res = subprocess.run([str(helper), "-n", "-u", "5", "-c", "5", "8192", "/x/console.log",
                          "--", "/bin/true"], capture_output=True, text=True)
    assert res.returncode == 125 and "-n takes -c" in res.stderr
    res = subprocess.run([str(helper), "-n", "--", "/bin/true"], capture_output=True, text=True)
    assert res.returncode == 125 and "-n takes -c" in res.stderr
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to drop root")
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    # (a folder that uid can reach: pytest's tmp_path is root's alone)
    work = Path(tempfile.mkdtemp(prefix="ignite-console-", dir="/tmp"))
    try:
        mine = work / "ignite-jail"
        shutil.copy(helper, mine)
        mine.chmod(0o755)
        if as_user:
            os.chown(work, 65534, 65534)
        log = work / "console.log"
        flood = 300_000
        # The program's first child is the writer (forked before the exec).
        # (its stat once it is set up: it names itself after taking its session)
        script = ("read kids < /proc/$$/task/$$/children; echo $kids; "
                  "while read st < /proc/$kids/stat; do "
                  "case $st in *'(ignite-console)'*) break;; esac; done; "
                  "echo $st; "
                  f"/usr/bin/yes | /usr/bin/head -c {flood} >&5")
        res = subprocess.run([*as_user, str(mine), "-n", "-c", "5", "8192", str(log),
                              "--", "/bin/sh", "-c", script],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        writer = int(lines[0])
        stat = lines[1].rsplit(")", 1)[1].split()  # (state, ppid, pgrp, session, ...)
        assert int(stat[3]) == writer, lines  # the leader of a session of its own
        assert wait_pid(writer, 60), "the console writer outlived the pipe"
        names = sorted(p.name for p in work.iterdir())
        assert names == ["console.log", "console.log.0", "console.log.1", "console.log.lock",
                         "console.log.writer", "ignite-jail"], names
        sizes = {p.name: p.stat().st_size for p in work.glob("console.log*")}
        assert sum(sizes.values()) <= 2 * 8192 + (64 << 10), sizes
        assert 0 < sizes["console.log.1"] <= 8192 and sizes["console.log.0"] > 0, sizes
        kept = (work / "console.log.1").read_bytes() + log.read_bytes()
        assert kept.endswith(b"y\n") and set(kept) == set(b"y\n")
        if as_user:  # written by the unprivileged writer
            assert all(p.stat().st_uid == 65534 for p in work.glob("console.log*"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_host_file_replaces_links_folders_and_foreign_files(tmp_path: Path) -> None:
    target = tmp_path / "target"
    link = tmp_path / "agent-1.lock"
    link.symlink_to(target)  # dangling: following it would create `target`
    jail.host_file(link)
    assert not target.exists() and link.is_file() and not link.is_symlink()
    folder = tmp_path / "agent-2.lock"
    (folder / "sub").mkdir(parents=True)
    jail.host_file(folder)
    assert folder.is_file()
    if os.geteuid() == 0:
        foreign = tmp_path / "agent-3.lock"
        foreign.write_text("x")
        os.chown(foreign, 12345, 12345)
        jail.host_file(foreign)
        st = foreign.stat()
        assert st.st_uid == 0 and st.st_size == 0 and st.st_mode & 0o777 == 0o600
