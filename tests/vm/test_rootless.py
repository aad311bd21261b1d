"""A user without root: the CLI run under a throwaway uid with a state root
of its own, with the defaults (passt networking, QEMU unconfined as that
user). The VM reaches a server on the host, and a port forward reaches the
VM. The tests run as root: the uid is one with no passwd entry (nothing the
CLI runs may need one; ssh-keygen did).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, Result
from tests.helpers.hostserver import BODY, passt_unusable, serving
from tests.helpers.images import busybox_image


@dataclass
class Rootless:
    uid: int
    home: Path

    @property
    def root(self) -> Path:
        return self.home / "root"

    def __call__(self, *args: str, check: bool = True) -> Result:
        # (no IGNITE_NETWORK_PLUGIN or IGNITE_SANDBOX: the defaults are the test)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(self.home),
               "IGNITE_ROOT": str(self.root), "PYTHONPATH": str(REPO), "LANG": "C.UTF-8"}
        setpriv = ([] if os.geteuid() != 0 else
                   ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups"])
        proc = subprocess.run([*setpriv, sys.executable, "-m", "ignitevm", *args], env=env,
                              capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL, cwd=self.home)
        res = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"ignite {' '.join(args)} (uid {self.uid}) failed "
                                 f"({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return res


def _pids_of(uid: int) -> list[int]:
    out = []
    for p in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if p.stat().st_uid == uid and b"State:\tZ" not in (p / "status").read_bytes():
                out.append(int(p.name))
    return out


def _free_uid() -> int:
    """A uid with no passwd entry (as a user of a container or a directory
    service may have) that runs nothing."""
    for uid in range(61000 + os.getpid() % 1000, 63000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if not _pids_of(uid):
                return uid
    raise AssertionError("no free uid in 61000-63000")


def _kill_all(uid: int) -> None:
    from ignitevm.util.proc import kill_and_wait

    for pid in _pids_of(uid):  # (the throwaway uid runs nothing but this test's CLI)
        kill_and_wait(pid)


@pytest.fixture(scope="module")
def rootless(kernel_debs: list[Path]) -> Iterator[Rootless]:
    for tool in ("qemu-system-x86_64", "mkfs.ext4"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (run scripts/setup.sh)")
    if (why := passt_unusable()) is not None:  # (the defaults without root: passt)
        pytest.skip(why)
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop root")
    home = Path(tempfile.mkdtemp(prefix="ignite-rootless-", dir="/tmp"))
    uid = os.geteuid()
    try:
        if uid == 0:
            uid = _free_uid()
            os.chown(home, uid, uid)
            # The repository and its interpreter must be readable by that uid.
            probe = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}",
                                    "--clear-groups", sys.executable, "-c", "import ignitevm"],
                                   cwd=home, env={"PYTHONPATH": str(REPO)},
                                   capture_output=True, text=True)
            if probe.returncode != 0:
                pytest.skip("the repository is not readable by an unprivileged uid: "
                            + (probe.stderr.strip().splitlines() or [""])[-1])
        home.chmod(0o700)
        archive = busybox_image(home / "testbox.tar")
        os.chown(archive, uid, uid)
        ig = Rootless(uid, home)
        # (the session's download of the kernel package, not a second one)
        debs = ig.root / "cache" / "debs"
        debs.mkdir(parents=True)
        for deb in kernel_debs:
            shutil.copy(deb, debs)
        for d in (ig.root, ig.root / "cache", debs, *debs.iterdir()):
            os.chown(d, uid, uid)
        ig("kernel", "import", "debian")
        ig("image", "import", str(archive))
        yield ig
    finally:
        if uid != 0:
            ig = Rootless(uid, home)
            ids = ig("ps", "-a", "-q", check=False).stdout.split()
            if ids:
                ig("rm", "-f", *ids, check=False)
        if os.geteuid() == 0 and uid != 0:
            _kill_all(uid)
        shutil.rmtree(home, ignore_errors=True)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _vm_processes(uid: int) -> list[bytes]:
    """The QEMU, passt and console writer processes of ``uid``."""
    return [c for c in map(_cmdline, _pids_of(uid))
            if b"qemu-system" in c or c.startswith(b"passt") or b"/passt\0" in c
            or c.startswith(b"ignite-console-writer")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_console(ig: Rootless, vm: str, marker: str, timeout: float = 180) -> None:
    uid = ig("inspect", "vm", vm, "-t", "{{.ObjectMeta.UID}}").stdout.strip()
    log = ig.root / "vm" / uid / "console.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if marker in text:
            return
        if "Kernel panic" in text:
            raise AssertionError(text[-3000:])
        time.sleep(0.2)
    raise AssertionError(f"no {marker!r} on the console of {vm} within {timeout}s")


def test_a_user_without_root_runs_a_vm_with_passt(rootless: Rootless) -> None:
    ig = rootless
    port = _free_port()
    with serving() as url:
        try:
            ig("run", "testbox:latest", "--name", "rl", "--memory", "128MB", "--size", "256MB",
               "-p", f"{port}:80")
            row = ig("ps", "-o", "wide").stdout
            assert " passt " in row and f"0.0.0.0:{port}->80/tcp" in row, row
            procs = _vm_processes(ig.uid)  # (all three run as the user)
            assert any(b"passt" in c for c in procs) and any(b"qemu" in c for c in procs), procs
            # The console log is bounded by its writer, unconfined too (no privilege needed).
            assert any(c.startswith(b"ignite-console-writer") for c in procs), procs
            _wait_console(ig, "rl", "TEST-READY")
            # A port forward reaches the guest...
            ig("exec", "rl", "--", "/bin/busybox", "httpd", "-p", "80", "-h", "/etc")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/passwd", timeout=30) as r:
                assert b"root:x:0:0" in r.read()
            # ...and the guest reaches out (to a server on the host's own address).
            if url is not None:
                got = ig("exec", "rl", "--", "/bin/busybox", "wget", "-q", "-O", "-", url)
                assert got.stdout == BODY.decode()
            ig("rm", "-f", "rl")
            # (passt ends once QEMU's end of the pair closes, the writer once its pipe's does)
            deadline = time.monotonic() + 30
            while _vm_processes(ig.uid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _vm_processes(ig.uid)
        finally:
            ig("rm", "-f", "rl", check=False)
    if url is None:
        pytest.skip("this host has no non-loopback IPv4 address: outbound access not tested")
