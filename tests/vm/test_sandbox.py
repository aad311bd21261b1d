"""Confinement on a real jailed QEMU: who it runs as, what it can see and open,
its cgroups, and a lifecycle that leaves no cgroup behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ignitevm.providers.sandbox import cgroups, ids
from tests.conftest import Ignite
from tests.helpers.hostserver import host_address
from tests.vm.conftest import wait_console

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root")


def _uid(cli: Ignite, vm: str) -> str:
    return cli("inspect", "vm", vm, "-t", "{{.ObjectMeta.UID}}").stdout.strip()


def _pid(cli: Ignite, uid: str) -> int:
    return int((cli.root / "vm" / uid / "run" / "qemu.pid").read_text())


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent, init, to reap it is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FORWARD = _free_port()  # the shared VM's host port forwarded to its port 80


@pytest.fixture(scope="module")
def jailed(cli: Ignite, testbox: str) -> Iterator[str]:
    """One running jailed VM shared by the tests of this module."""
    cli("run", testbox, "--name", "jailed", "--memory", "128MB", "--size", "256MB",
        "-p", f"127.0.0.1:{FORWARD}:80")
    wait_console(cli, "jailed", "TEST-READY")
    yield "jailed"
    cli("rm", "-f", "jailed", check=False)


def test_qemu_runs_as_the_vms_own_uid_without_privileges(cli: Ignite, jailed: str) -> None:
    uid = _uid(cli, jailed)
    pid = _pid(cli, uid)
    st = _status(pid)
    ident = int((cli.root / "vm" / uid / ids.ID_FILE).read_text())
    assert ids.BASE < ident < ids.BASE + ids.SLOTS
    assert st["Uid"].split() == [str(ident)] * 4
    assert st["Gid"].split() == [str(ident)] * 4
    assert st["Groups"].split() == [str(ids.SHARED_GID)]
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"
    for caps in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        assert int(st[caps], 16) == 0, caps
    # Its own mount, IPC and UTS namespaces (the network is the host's:
    # user-mode networking forwards host ports).
    for ns in ("mnt", "ipc", "uts"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns


def test_qemu_sees_only_its_own_files(cli: Ignite, jailed: str) -> None:
    uid = _uid(cli, jailed)
    pid = _pid(cli, uid)
    vm_dir = cli.root / "vm" / uid
    sentinel = cli.root / "sentinel-host-file"
    sentinel.write_text("host secret\n")
    root = Path(f"/proc/{pid}/root")
    try:
        assert not (root / "etc").exists()
        assert not (root / "etc/shadow").exists()
        assert not (root / str(sentinel).lstrip("/")).exists()
        assert not (root / "proc/1").exists() and not (root / "sys").exists()
        inside = root / str(vm_dir).lstrip("/")
        # Of the VM's folder: its disk and config disk only (not its console
        # log, which the jail's console writer keeps; not run/, whose sockets
        # the host made and handed over; not its metadata, keys, or the other VMs).
        assert sorted(os.listdir(inside)) == ["config.tar", "disk.qcow2"]
        assert sorted(os.listdir(inside.parent)) == [uid]
        assert sorted(os.listdir(root / "dev")) in (["null", "random", "urandom", "zero"],
                                                    ["kvm", "null", "random", "urandom", "zero"])
        with pytest.raises(OSError):
            (root / "usr/new-file").write_text("x")  # read-only
    finally:
        sentinel.unlink()


def test_qemu_itself_cannot_open_a_host_file(cli: Ignite, jailed: str) -> None:
    """Ask QEMU (over QMP) to open files: outside its jail they do not exist,
    its root is read-only, and only its own files open."""
    from qemu.qmp.legacy import QEMUMonitorProtocol, QMPError

    uid = _uid(cli, jailed)
    vm_dir = cli.root / "vm" / uid
    sentinel = cli.root / "sentinel-host-file"
    sentinel.write_text("host secret\n")
    mon = QEMUMonitorProtocol(str(vm_dir / "run" / "qmp.sock"))
    mon.settimeout(30)
    mon.connect(negotiate=True)
    try:
        for path in ("/etc/shadow", str(sentinel), str(vm_dir / "metadata.json")):
            res = mon.cmd_raw("blockdev-add", {"driver": "file", "filename": path,
                                               "node-name": "probe", "read-only": True})
            assert "error" in res, (path, res)
            assert "No such file or directory" in res["error"]["desc"], res
        res = mon.cmd_raw("chardev-add", {"id": "escape", "backend": {
            "type": "file", "data": {"out": str(cli.root / "escaped")}}})
        assert "error" in res and not (cli.root / "escaped").exists()
        # Its own config disk does open (the probe reaches the jail's files); its
        # console log is not there (only the console writer holds it).
        res = mon.cmd_raw("blockdev-add", {"driver": "file",
                                           "filename": str(vm_dir / "console.log"),
                                           "node-name": "probe", "read-only": True})
        assert "No such file or directory" in res["error"]["desc"], res
        res = mon.cmd_raw("blockdev-add", {"driver": "file",
                                           "filename": str(vm_dir / "config.tar"),
                                           "node-name": "probe", "read-only": True})
        assert "return" in res, res
        mon.cmd("blockdev-del", **{"node-name": "probe"})
    except QMPError:
        raise
    finally:
        mon.close()
        sentinel.unlink()


# Run in a fresh interpreter (one thread: setns into a mount namespace needs
# that): enter QEMU's mount namespace, list every folder of its jail as root,
# then take QEMU's uid, gid and groups and try to make a file, a folder, a
# FIFO and a link in each; print what was made, then whether the disk
# overlay opens for writing.
_AS_QEMU = r"""
import ctypes, errno, json, os, sys
pid, ident, shared, disk = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
if ctypes.CDLL(None, use_errno=True).setns(fd, 0x00020000) != 0:  # CLONE_NEWNS
    sys.exit(f"setns: {os.strerror(ctypes.get_errno())}")
os.chdir("/")
folders = [top for top, _, _ in os.walk("/") if not top.startswith("/proc")]
os.setgroups([shared])
os.setresgid(ident, ident, ident)
os.setresuid(ident, ident, ident)
made, why = [], set()
def attempt(path, make):
    try:
        make(path)
    except OSError as exc:
        why.add(errno.errorcode[exc.errno])
        return
    made.append(path)
for top in [*folders, sys.argv[5]]:
    probe = os.path.join(top, ".ignite-probe")
    attempt(probe, lambda p: os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)))
    attempt(probe + "-dir", os.mkdir)
    attempt(probe + "-fifo", os.mkfifo)
    attempt(probe + "-link", lambda p: os.symlink("/etc/passwd", p))
os.close(os.open(disk, os.O_WRONLY))
print(json.dumps({"folders": len(folders), "made": made, "why": sorted(why)}))
"""


def test_qemu_can_create_nothing_in_its_jail_nor_in_run(cli: Ignite, jailed: str) -> None:
    """As QEMU's uid in its mount namespace, no file, folder, FIFO or link can
    be made anywhere (not in the VM's folder, not in run/, not in the jail's
    root): a compromised QEMU can neither fill the host's disk with files nor
    plant one for root to touch. It writes its disk overlay only. On the host,
    run/ (the sockets and pid file) is root's alone."""
    import json
    import sys

    uid = _uid(cli, jailed)
    pid = _pid(cli, uid)
    vm_dir = cli.root / "vm" / uid
    ident = int((vm_dir / ids.ID_FILE).read_text())
    run_dir = vm_dir / "run"
    st = run_dir.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o700)
    names = sorted(p.name for p in run_dir.iterdir())
    assert "qemu.pid" in names and "qmp.sock" in names and "console.sock" in names, names
    for name in names:
        assert (run_dir / name).lstat().st_uid == 0, name
    res = subprocess.run([sys.executable, "-c", _AS_QEMU, str(pid), str(ident),
                          str(ids.SHARED_GID), str(vm_dir / "disk.qcow2"), str(run_dir)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout)
    assert found["folders"] >= 5 and found["made"] == [], found
    # (EROFS: the jail's read-only root and binds; ENOENT: run/ is not in it)
    assert set(found["why"]) <= {"EROFS", "ENOENT", "EACCES", "EPERM"}, found
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    # On the host too (were it to get out of its namespace), as the VM's uid:
    as_vm = ["setpriv", f"--reuid={ident}", f"--regid={ident}", "--clear-groups", "--"]
    for victim in (run_dir / "probe", run_dir / "agent-1.lock", vm_dir / "probe"):
        res = subprocess.run([*as_vm, "touch", str(victim)], capture_output=True, text=True)
        assert res.returncode != 0 and "ermission denied" in res.stderr, (victim, res)
    assert not (run_dir / "probe").exists() and not (vm_dir / "probe").exists()


def test_cp_and_exec_work_jailed(cli: Ignite, jailed: str, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("to the guest\n")
    cli("cp", str(src), f"{jailed}:/tmp/in.txt")
    out = cli("exec", jailed, "--", "/bin/busybox", "cat", "/tmp/in.txt").stdout
    assert out == "to the guest\n"
    cli("cp", f"{jailed}:/tmp/in.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "to the guest\n"


def test_cgroups_limit_memory_cpu_and_pids(cli: Ignite, jailed: str) -> None:
    uid = _uid(cli, jailed)
    pid = _pid(cli, uid)
    found = cgroups.hierarchies()
    if not found:
        pytest.skip("no cgroup controllers on this host")
    assert pid in cgroups.members(uid, found)
    lim = cgroups.limits(1, 128)
    for h in found:
        d = h.path / cgroups.PARENT / uid
        if "memory" in h.controllers:
            name = "memory.max" if h.v2 else "memory.limit_in_bytes"
            assert int((d / name).read_text()) == lim.memory_bytes == (128 + 256) << 20
        if "pids" in h.controllers:
            assert int((d / "pids.max").read_text()) == lim.pids
        if "cpu" in h.controllers and not h.v2:
            assert int((d / "cpu.cfs_quota_us").read_text()) == lim.cpu_quota_us
        if "cpu" in h.controllers and h.v2:
            assert (d / "cpu.max").read_text().split()[0] == str(lim.cpu_quota_us)


def test_exec_and_a_hot_plugged_agent_channel_work_jailed(cli: Ignite, jailed: str) -> None:
    """A second concurrent client hot-plugs a channel: the host makes its socket
    in run/ and hands it to QEMU (over QMP, getfd), which serves it."""
    uid = _uid(cli, jailed)
    run_dir = cli.root / "vm" / uid / "run"
    slow = threading.Thread(target=cli, args=("exec", jailed, "--", "/bin/busybox", "sleep", "3"))
    slow.start()
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "agent-2.sock").exists() and time.monotonic() < deadline:
            out = cli("exec", jailed, "--", "/bin/busybox", "echo", "hi").stdout
            assert out == "hi\n"
    finally:
        slow.join()
    assert (run_dir / "agent-2.sock").exists()
    assert (run_dir / "agent-2.sock").stat().st_uid == 0


def test_user_mode_guest_cannot_reach_host_loopback(cli: Ignite, jailed: str) -> None:
    """With user-mode networking, slirp maps the gateway 10.0.2.2 to the host's
    127.0.0.1: the VM's cgroup programs refuse QEMU's connections there, while
    the guest still reaches the host's other addresses (outbound works)."""
    import http.server
    import socket

    outward = host_address()
    hits: list[object] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            hits.append(self.client_address)

    def fetch(host: str, port: int) -> str:
        # (busybox nc: this busybox's static wget cannot resolve even an address)
        res = cli("exec", jailed, "--", "/bin/busybox", "sh", "-c",
                  'printf "GET / HTTP/1.0\\r\\n\\r\\n" | /bin/busybox nc -w 5 "$0" "$1"',
                  host, str(port), check=False)
        return res.stdout + res.stderr

    with contextlib.ExitStack() as stack:
        servers = {}
        for host in ("127.0.0.1", *([outward] if outward else [])):
            srv = http.server.ThreadingHTTPServer((host, 0), Handler)
            stack.callback(srv.server_close)
            stack.callback(srv.shutdown)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            servers[host] = srv.server_address[1]
        out = fetch("10.0.2.2", servers["127.0.0.1"])
        assert "HTTP/1.0 200" not in out and hits == [], out  # it never got there
        if outward is not None:
            out = fetch(outward, servers[outward])
            assert "HTTP/1.0 200" in out and hits, out
    # Port forwards still work: QEMU listens on the host, it does not connect.
    cli("exec", jailed, "--", "/bin/busybox", "httpd", "-p", "80", "-h", "/etc")
    with socket.create_connection(("127.0.0.1", FORWARD), timeout=30) as c:
        c.sendall(b"GET /passwd HTTP/1.0\r\n\r\n")
        got = b""
        while chunk := c.recv(4096):
            got += chunk
    assert b"root:x:0:0" in got
    if outward is None:
        pytest.skip("this host has no non-loopback IPv4 address: outbound access not tested")


def test_a_socket_planted_in_run_is_not_taken_for_the_vms(cli: Ignite, jailed: str,
                                                          tmp_path: Path) -> None:
    """A link found in run/ (QEMU's uid cannot write there any more, but an
    unconfined VM's QEMU can), to a socket some root service of the host
    listens on, must not get the host's agent client (root) talking to that
    service: QEMU listens on its sockets itself, and the peer is checked."""
    import fcntl
    import socket

    uid = _uid(cli, jailed)
    run_dir = cli.root / "vm" / uid / "run"
    socks = sorted(run_dir.glob("agent-*.sock"), key=lambda p: int(p.stem.split("-")[1]))
    service = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    service.bind(str(tmp_path / "root-service.sock"))   # served by root, as a daemon's
    service.listen(4)
    planted = run_dir / f"agent-{len(socks) + 1}.sock"
    planted.symlink_to(tmp_path / "root-service.sock")
    held = []
    try:
        for sock in socks:       # every real channel busy: the planted one is next
            fd = os.open(sock.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            held.append(fd)
        res = cli("exec", jailed, "--timeout", "10", "--", "true", check=False)
    finally:
        for fd in held:
            os.close(fd)
        planted.unlink()
        service.close()
    assert res.returncode == 1 and "not by the VM's QEMU" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert cli("exec", jailed, "--", "true").returncode == 0


def test_stop_start_rm_leave_no_cgroup_and_the_overlay_header_is_not_trusted(
        cli: Ignite, jailed: str) -> None:
    uid = _uid(cli, jailed)
    vm_dir = cli.root / "vm" / uid
    cli("stop", jailed)
    groups = cgroups.paths(uid)
    assert groups and not any(g.exists() for g in groups)
    # A QEMU that rewrote its overlay's header to name a host file: the next
    # start still reads the image the host names (and the jail holds nothing else).
    subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", "/etc/shadow",
                    str(vm_dir / "disk.qcow2")], check=True)
    boots = (vm_dir / "console.log").read_text(errors="replace").count("TEST-READY")
    cli("start", jailed)
    deadline = time.monotonic() + 120
    while (vm_dir / "console.log").read_text(errors="replace").count("TEST-READY") <= boots:
        assert time.monotonic() < deadline, "the restarted VM did not boot"
        time.sleep(0.1)
    assert cli("exec", jailed, "--", "/bin/busybox", "true").returncode == 0
    assert all(g.exists() for g in groups)
    pid = _pid(cli, uid)
    cli("rm", "-f", jailed)
    assert not _alive(pid)
    assert not any(g.exists() for g in groups)


def test_sandbox_none_runs_qemu_unconfined(cli: Ignite, testbox: str) -> None:
    cli("run", testbox, "--name", "loose", "--memory", "128MB", "--size", "256MB",
        "--sandbox=none")
    try:
        uid = _uid(cli, "loose")
        st = _status(_pid(cli, uid))
        assert st["Uid"].split()[0] == "0" and st["Seccomp"] == "0"
        assert not any(g.exists() for g in cgroups.paths(uid))
    finally:
        cli("rm", "-f", "loose")


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="this host has no /dev/kvm")
def test_kvm_is_reachable_from_the_jail(cli: Ignite, testbox: str) -> None:
    """QEMU initialises its accelerator before QMP greets, so a started VM
    with --accel kvm means the jailed QEMU opened /dev/kvm (a node made for
    it, owned by the VM's uid). Only the start is checked: whether a guest
    then runs well under this host's KVM is the accelerator probe's question
    (where a guest dies under it, QEMU may exit before it is looked at: then
    the start is tried again, and after three such the test says so)."""
    for _ in range(3):
        cli("run", testbox, "--name", "kvmjail", "--memory", "128MB", "--size", "256MB",
            "--accel", "kvm")
        try:
            uid = _uid(cli, "kvmjail")
            pid = _pid(cli, uid)
            ident = int((cli.root / "vm" / uid / ids.ID_FILE).read_text())
            try:
                owner = Path(f"/proc/{pid}/root/dev/kvm").stat().st_uid
                runs_as = _status(pid)["Uid"].split()[0]
                links = {os.readlink(f"/proc/{pid}/fd/{fd}")
                         for fd in os.listdir(f"/proc/{pid}/fd")}
            except FileNotFoundError:
                assert not _alive(pid)  # (only QEMU's exit may take what is looked at)
                continue
            assert owner == ident and runs_as == str(ident)
            assert "/dev/kvm" in links or "anon_inode:kvm-vm" in links, links
            return
        finally:
            cli("rm", "-f", "kvmjail")
    pytest.skip("three guests in a row died under this host's KVM before their QEMU "
                "could be looked at")


def _free_low_port() -> int:
    import socket

    for port in range(1000, 900, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024 on 127.0.0.1")


def test_a_low_host_port_keeps_only_net_bind_service(cli: Ignite, testbox: str) -> None:
    """`-p 127.0.0.1:<1024:80` still works jailed: QEMU keeps the one
    capability that binds it (and only when a forward needs it)."""
    import socket

    port = _free_low_port()
    cli("run", testbox, "--name", "lowport", "--memory", "128MB", "--size", "256MB",
        "-p", f"127.0.0.1:{port}:80")
    try:
        st = _status(_pid(cli, _uid(cli, "lowport")))
        assert st["Uid"].split()[0] != "0" and st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"
        for caps in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            assert int(st[caps], 16) == 1 << 10, caps  # CAP_NET_BIND_SERVICE
        with socket.create_connection(("127.0.0.1", port), timeout=30):
            pass  # QEMU listens there
    finally:
        cli("rm", "-f", "lowport")


PROBE_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct stat st;
    char out[8192], cwd[4096];
    int n = snprintf(out, sizeof(out), "uid=%d nnp=%d passwd=%d self=%d cwd=%s\n",
                     (int)getuid(), prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
                     stat("/etc/passwd", &st) == 0, stat(argv[0], &st) == 0,
                     getcwd(cwd, sizeof(cwd)) ? cwd : "?");
    return write(atoi(argv[1]), out, (size_t)n) == n ? 0 : 1;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_the_helper_passes_fds_through_to_the_confined_program(tmp_path: Path) -> None:
    """What a provider opens for the VMM (a tap, say) reaches it through the
    jail: here a pipe, written by a tiny static program run in a jail that
    holds only that program."""
    from ignitevm.providers.sandbox import build, jail

    prog = tmp_path / "probe"
    (tmp_path / "probe.c").write_text(PROBE_C)
    subprocess.run(["gcc", "-static", "-O1", "-o", prog, tmp_path / "probe.c"], check=True)
    work = tmp_path / "work"
    work.mkdir()
    me = jail.identity(ids.BASE + 4242)
    plan = jail.Plan(me, [(str(prog), "rx"), (str(work), "r")], jail.base_nodes(False, me.uid),
                     [], [], True, work)
    r, w = os.pipe()
    try:
        proc = subprocess.run([*plan.argv(build.helper(tmp_path / "cache")), str(prog), str(w)],
                              pass_fds=(w,), capture_output=True, text=True)
        os.close(w)
        assert proc.returncode == 0, proc.stderr
        with os.fdopen(r) as f:  # EOF once the detached program has exited
            got = f.read()
    finally:
        with contextlib.suppress(OSError):
            os.close(w)
    assert got == f"uid={me.uid} nnp=1 passwd=0 self=1 cwd={work}\n"


FLOOD_C = r"""
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char line[100];
    memset(line, 'y', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\n';
    int con = atoi(argv[1]);
    dprintf(con, "BOOT-LINE\n");
    for (int i = 0; i < 20000; i++)  /* 2 MB through the console pipe */
        if (write(con, line, sizeof(line)) != (ssize_t)sizeof(line))
            return 2;
    /* A file of its own past its RLIMIT_FSIZE: the write is cut short. */
    signal(SIGXFSZ, SIG_IGN);
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    static char block[1 << 16];
    long total = 0;
    ssize_t n;
    while (total < (8L << 20) && (n = write(fd, block, sizeof(block))) > 0)
        total += n;
    printf("wrote=%ld errno=%d\n", total, errno);
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_the_console_writer_and_file_size_limit(tmp_path: Path) -> None:
    """ignite-jail -c and -s, on a tiny program in place of QEMU: 2 MB written to
    the console pipe leave console.log and its two companions under the cap
    (the boot line kept in .0), with nobody looking; the program cannot grow a
    file past its RLIMIT_FSIZE; the writer is gone when the program is."""
    from ignitevm.providers.sandbox import build, jail

    prog = tmp_path / "flood"
    (tmp_path / "flood.c").write_text(FLOOD_C)
    subprocess.run(["gcc", "-static", "-O1", "-o", prog, tmp_path / "flood.c"], check=True)
    work = tmp_path / "work"
    work.mkdir()
    os.chmod(tmp_path, 0o755)
    log = tmp_path / "console.log"
    me = jail.identity(ids.BASE + 4243)
    os.chown(work, me.uid, me.gid)
    cap = 64 * 1024
    plan = jail.Plan(me, [(str(prog), "rx"), (str(work), "w")], jail.base_nodes(False, me.uid),
                     [], [], True, work, console=(9, cap, str(log)), file_size=1 << 20)
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        proc = subprocess.run([*plan.argv(build.helper(tmp_path / "cache")), str(prog), "9",
                               str(work / "big")], stdout=f, stderr=subprocess.STDOUT)
    assert proc.returncode == 0, out.read_text()
    # Detached: wait for the program (its output) and its writer (EOF on the pipe).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and ("wrote=" not in out.read_text() or _writers(work)):
        time.sleep(0.1)
    assert not _writers(work), "the console writer outlived its program"
    text = out.read_text()
    assert "wrote=1048576 errno=27" in text, text  # EFBIG at 1 MiB
    sizes = {p.name: p.stat().st_size for p in tmp_path.glob("console.log*")}
    assert sizes["console.log"] <= cap and sizes["console.log.1"] <= cap, sizes
    assert sum(sizes.values()) <= 2 * cap + 64 * 1024, sizes
    assert (tmp_path / "console.log.0").read_bytes().startswith(b"BOOT-LINE\n")
    tail = (tmp_path / "console.log.1").read_bytes() + log.read_bytes()
    # At least the last cap bytes but the start of a cut line: the older part starts
    # at a line (100 bytes here), and the flood may end just after a trim.
    assert tail.endswith(b"y\n") and len(tail) > cap - 100


def _writers(work: Path) -> list[int]:
    """Running console writers whose folder is ``work``."""
    found = []
    for p in Path("/proc").glob("[0-9]*"):
        try:
            if ((p / "cmdline").read_bytes().rstrip(b"\0") == b"ignite-console-writer"
                    and os.readlink(p / "cwd") == str(work) and _alive(int(p.name))):
                found.append(int(p.name))
        except OSError:
            pass
    return found


def test_the_kvm_probe_runs_jailed_and_dies_with_its_caller(cli: Ignite, kernel: str) -> None:
    """The probe's QEMU, through the same jail (here under TCG: the same command
    line but the accelerator): not root, no capabilities, no-new-privs, seccomp,
    its own mount namespace; it boots to the probe marker; it is killed when
    the process that started it dies."""
    from ignitevm.api.types import Kernel
    from ignitevm.operations import kernels
    from ignitevm.operations.context import Context
    from ignitevm.providers.vmm.qemu import accel

    ctx = Context(cli.root)
    found = ctx.store.find(Kernel, kernel)
    assert found is not None
    kpath, initrd = kernels.kernel_files(ctx, found)
    found = accel.probe_kvm(kpath, initrd, deadline=300, jail_in=ctx.cache, accel="tcg")
    assert found.works and found.kind == accel.DEFINITE, found.detail
    # Started by a child that is then killed: the jailed QEMU must go too.
    cmd = accel.probe_argv(kpath, initrd, ctx.cache, accel="tcg")
    starter = subprocess.Popen(
        ["python3", "-c", "import os, subprocess, sys, ctypes; "
         "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, "
         "preexec_fn=lambda: ctypes.CDLL(None).prctl(1, 9)); "  # PR_SET_PDEATHSIG
         "print(p.pid, flush=True); os.kill(os.getpid(), 9)", *cmd],
        stdout=subprocess.PIPE, text=True)
    assert starter.stdout is not None
    line = starter.stdout.readline()
    starter.wait()
    qemu = int(line)
    gone = time.monotonic() + 30
    while _alive(qemu) and time.monotonic() < gone:
        time.sleep(0.1)
    assert not _alive(qemu), "the probe's QEMU outlived its caller"
    # Confined while it ran: checked on one started and kept for a moment.
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None
            out = b""
            while b"ignitevm-init: probe ok" not in out:
                chunk = proc.stdout.read1(4096)
                assert chunk, out[-500:]
                out += chunk
            st = _status(proc.pid)
            assert st["Uid"].split() == [str(ids.SHARED_GID)] * 4
            assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"
            assert st["CapEff"] == "0000000000000000"
            assert os.readlink(f"/proc/{proc.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
            assert os.readlink(f"/proc/{proc.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        finally:
            proc.kill()
