"""The guest agent on real VMs: exec, stdin, TTYs, concurrency, cp, init-less images."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pty
import select
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import Ignite, cli_env
from tests.helpers.images import app_image
from tests.vm.conftest import wait_console


@pytest.fixture(scope="module")
def agentbox(cli: Ignite, testbox: str) -> Iterator[str]:
    cli("run", testbox, "--name", "agentbox", "--cpus", "2", "--memory", "256MB",
        "--size", "1GB")
    # No sleep and no console watching: exec itself waits for the agent.
    yield "agentbox"
    cli("rm", "-f", "agentbox")


def test_exec_exit_codes(cli: Ignite, agentbox: str) -> None:
    assert cli("exec", agentbox, "--", "true").returncode == 0
    assert cli("exec", agentbox, "--", "false", check=False).returncode == 1
    res = cli("exec", agentbox, "--", "no-such-command", check=False)
    assert res.returncode == 127 and "not found" in res.stderr
    res = cli("exec", agentbox, "--", "sh", "-c", "kill -9 $$", check=False)
    assert res.returncode == 137


def test_stdout_stderr_apart(cli: Ignite, agentbox: str) -> None:
    res = cli("exec", agentbox, "--", "sh", "-c", "echo out; echo err >&2; exit 3",
              check=False)
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")


def test_piped_stdin_reaches_the_command(cli: Ignite, agentbox: str) -> None:
    res = cli("exec", agentbox, "--", "tee", "/tmp/piped", input="hello\nworld\n")
    assert res.stdout == "hello\nworld\n"
    assert cli("exec", agentbox, "--", "cat", "/tmp/piped").stdout == "hello\nworld\n"


def test_env_workdir_user(cli: Ignite, agentbox: str) -> None:
    out = cli("exec", "-e", "FOO=1", "-w", "/tmp", "-u", "nobody", agentbox, "--",
              "sh", "-c", "echo $FOO; pwd; id -u").stdout.split()
    assert out == ["1", "/tmp", "65534"]


def test_twenty_concurrent_execs(cli: Ignite, agentbox: str) -> None:
    def one(i: int) -> str:
        return cli("exec", agentbox, "--", "sh", "-c", f"sleep 0.5; echo {i}").stdout.strip()

    with ThreadPoolExecutor(20) as pool:
        assert sorted(pool.map(one, range(20)), key=int) == [str(i) for i in range(20)]


def _read_until(fd: int, marker: bytes, timeout: float = 60) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        if not select.select([fd], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


def test_tty_session(cli: Ignite, agentbox: str) -> None:
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(cli_env(cli.root))
        script = "tty; stty size; read x; echo got=$x; exit 7"
        # `-it` as Docker users type it
        # (the test's own interpreter: the .venv's, which has the dependencies)
        os.execv(sys.executable, [sys.executable, "-m", "ignitevm", "exec", "-it",
                                  agentbox, "--", "sh", "-c", script])
    try:
        out = _read_until(fd, b"\n", 60)
        out += _read_until(fd, b"\n", 10)  # stty size
        os.write(fd, b"hello\r")
        out += _read_until(fd, b"got=hello", 30)
        out += _read_until(fd, b"\xff", 5)  # until the command's end closes the pty
    finally:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError(f"exec -t did not end: {out!r}")
    assert b"/dev/pts/" in out, out
    assert b"got=hello" in out, out
    assert os.waitstatus_to_exitcode(status) == 7


def test_cp_round_trip(cli: Ignite, agentbox: str, tmp_path: Path) -> None:
    src = tmp_path / "dir"
    (src / "sub").mkdir(parents=True)
    data = os.urandom(8 << 20)
    (src / "sub" / "big.bin").write_bytes(data)
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o750)
    cli("cp", str(src), f"{agentbox}:/srv/")
    out = cli("exec", agentbox, "--", "sha256sum", "/srv/dir/sub/big.bin").stdout
    assert out.split()[0] == hashlib.sha256(data).hexdigest()
    back = tmp_path / "back"
    cli("cp", f"{agentbox}:/srv/dir", str(back))
    assert (back / "sub" / "big.bin").read_bytes() == data
    assert (back / "run.sh").stat().st_mode & 0o777 == 0o750
    single = tmp_path / "one.txt"
    cli("cp", f"{agentbox}:/etc/os-release", str(single))
    assert single.read_text() == "ID=ignitevm-test\n"


@pytest.mark.parametrize("after", [0.3, 0.9])
def test_clients_killed_mid_transfer_leave_the_agent_usable(cli: Ignite, agentbox: str,
                                                            tmp_path: Path,
                                                            after: float) -> None:
    """kill -9 of a cp mid-frame: the next client on that channel still gets
    through (padding completes the dead client's frame), and what the dead
    client ran ends."""
    import signal
    import subprocess

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(96 << 20))
    env = cli_env(cli.root)
    proc = subprocess.Popen([sys.executable, "-m", "ignitevm", "cp", str(big),
                             f"{agentbox}:/tmp/killed.bin"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert cli("exec", agentbox, "--", "echo", "still here", timeout=60).stdout == "still here\n"
    # An exec whose client is killed: its command ends too.
    proc = subprocess.Popen([sys.executable, "-m", "ignitevm", "exec", agentbox, "--",
                             "sleep", "300"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while "sleep 300" not in cli("exec", agentbox, "--", "sh", "-c", "ps").stdout:
        assert time.monotonic() < deadline, "the exec never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while "sleep 300" in cli("exec", agentbox, "--", "sh", "-c", "ps").stdout:
        assert time.monotonic() < deadline, "the dead client's command still runs"
        time.sleep(0.5)


def test_a_hello_that_ends_a_killed_clients_cut_frame_is_said_again(cli: Ignite,
                                                                    agentbox: str) -> None:
    """A client left a frame 12 bytes short on a real port, its command running;
    the next client's HELLO then ends that frame and its PING alone is answered:
    it must still get a reset channel (it got "session id already in use")."""
    import json

    from ignitevm.agent import protocol as p
    from ignitevm.agent.client import Channel, lock_free
    from ignitevm.providers.vmm.qemu.machine import QemuVMM

    vmdir = cli.root / "vm" / json.loads(cli("inspect", "vm", agentbox).stdout)["metadata"]["uid"]
    vmm = QemuVMM()
    taken = lock_free(vmm.agent_sockets(vmdir))
    assert taken is not None
    ch = Channel(vmm.connect_socket(vmdir, taken[1]), taken[0])
    with ch:
        ch._handshake(time.monotonic() + 120, agentbox, 120)
        sid = ch.new_session()
        ch.send(p.Frame(p.EXEC, sid, p.request(["sleep", "1000"])))
        while (frame := ch.recv()) is not None and frame.session != sid:
            pass
        assert frame is not None and frame.type == p.STARTED
        ch.sock.sendall(p.Frame(p.DATA, sid, bytes(100)).encode()[:-12])
        # the next client, on the same stream (as after a kill -9)
        ch._handshake(time.monotonic() + 120, agentbox, 120)
        ch.send(p.Frame(p.EXEC, sid, p.request(["true"])))
        while (frame := ch.recv()) is not None and frame.session != sid:
            pass
        assert frame is not None and frame.type == p.STARTED, frame


def test_a_fifo_for_passwd_does_not_hold_up_the_agent(cli: Ignite, agentbox: str) -> None:
    """The guest's /etc/passwd made a FIFO: exec (which looks the user up) still
    answers, and a user name is refused saying why."""
    cli("exec", agentbox, "--", "sh", "-c",
        "mv /etc/passwd /etc/passwd.real && mkfifo /etc/passwd")
    try:
        assert cli("exec", agentbox, "--", "echo", "still here", timeout=60).stdout == \
            "still here\n"
        res = cli("exec", "-u", "nobody", agentbox, "--", "true", check=False, timeout=60)
        assert res.returncode == 1 and "/etc/passwd: not a regular file" in res.stderr
        # (a uid needs no entry; the command itself must not read the FIFO: no `id`)
        res = cli("exec", "-u", "65534", agentbox, "--", "cat", "/proc/self/status")
        assert "\nUid:\t65534\t" in res.stdout
    finally:
        cli("exec", agentbox, "--", "sh", "-c",
            "rm -f /etc/passwd && mv /etc/passwd.real /etc/passwd")


def test_cp_out_merges_as_cp_r_and_refuses_links_out(cli: Ignite, agentbox: str,
                                                      tmp_path: Path) -> None:
    cli("exec", agentbox, "--", "sh", "-c",
        "mkdir -p /srv/m/sub && echo new > /srv/m/new && echo after > /srv/m/sub/replaced"
        " && echo a > /srv/m/sub/added && ln -s sub/added /srv/m/link"
        " && chmod 4755 /srv/m/new && chown 123:456 /srv/m/new")
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    (dest / "mine").write_text("mine")
    (dest / "sub" / "old").write_text("old")
    (dest / "sub" / "replaced").write_text("before")
    cli("cp", f"{agentbox}:/srv/m/.", str(dest))
    assert (dest / "mine").read_text() == "mine"            # DEST is merged into, not replaced
    assert (dest / "sub" / "old").read_text() == "old"
    assert (dest / "sub" / "replaced").read_text() == "after\n"
    assert (dest / "link").read_text() == "a\n"
    st = (dest / "new").stat()
    assert (st.st_uid, st.st_mode & 0o7000) == (os.getuid(), 0)
    # an existing folder as DEST: the copy lands in DEST/m
    cli("cp", f"{agentbox}:/srv/m", str(dest))
    assert (dest / "m" / "sub" / "added").read_text() == "a\n"
    # a link out of the copy: refused, nothing left behind
    cli("exec", agentbox, "--", "sh", "-c", "ln -s /etc/shadow /srv/m/out")
    res = cli("cp", f"{agentbox}:/srv/m", str(tmp_path / "x"), check=False)
    assert res.returncode == 1 and "refused" in res.stderr and "Traceback" not in res.stderr
    assert sorted(os.listdir(tmp_path)) == ["dest"]


@pytest.fixture
def fresh(cli: Ignite, testbox: str) -> Iterator[str]:
    """A VM of its own, with only its boot channel (the shared one may have
    all its channels hot-plugged by the tests before)."""
    cli("run", testbox, "--name", "fresh", "--memory", "128MB", "--size", "256MB")
    yield "fresh"
    cli("rm", "-f", "fresh")


@pytest.mark.parametrize("state", ["socket-named", "socket-not-named", "port-added"])
def test_a_half_added_channel_is_repaired(cli: Ignite, fresh: str, state: str) -> None:
    """What a client killed while it added a channel leaves (made here by hand):
    after chardev-add, its socket renamed into place (as an older host did) or
    not yet; or after device_add too, its socket not yet renamed. The next
    client that needs a new channel still gets through."""
    import fcntl
    import json

    from ignitevm.providers.vmm.qemu.jailed import listen
    from ignitevm.providers.vmm.qemu.machine import QemuVMM

    agentbox = fresh
    cli("exec", agentbox, "--timeout", "120", "--", "true")

    uid = json.loads(cli("inspect", "vm", agentbox).stdout)["metadata"]["uid"]
    folder = next(p.parent for p in cli.root.rglob("agent-1.sock") if uid in str(p))
    vmdir = cli.root / "vm" / uid       # (the sockets are in its run/ folder)
    socks = sorted(folder.glob("agent-*.sock"), key=lambda p: int(p.stem.split("-")[1]))
    k = len(socks) + 1
    half = folder / f"agent-{k}.sock"
    (vmdir / "agent-grow.pending").write_text(f"{len(socks)}\n")
    # (as the host adds a channel: its socket made and handed over, then chardev-add)
    made = half if state == "socket-named" else half.with_name(half.name + ".new")
    with QemuVMM().monitor(vmdir) as mon, listen(made) as sock:
        mon.cmd("getfd", fd=sock.fileno(), fdname=f"agent{k}")
        mon.cmd("chardev-add", id=f"agent{k}", backend={"type": "socket", "data": {
            "addr": {"type": "fd", "data": {"str": f"agent{k}"}}, "server": True,
            "wait": False}})
        if state == "port-added":
            mon.cmd("device_add", driver="virtserialport", bus="agentbus.0",
                    id=f"agentport{k}", chardev=f"agent{k}",
                    name=f"org.ignitevm.agent.{k}", nr=k)
    held = []
    try:
        for sock in socks:        # every whole channel busy: the half-made one is next
            fd = os.open(sock.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            held.append(fd)
        res = cli("exec", agentbox, "--timeout", "60", "--", "echo", "through", check=False)
    finally:
        for fd in held:
            os.close(fd)
    assert (res.returncode, res.stdout) == (0, "through\n"), res.stderr
    assert not (vmdir / "agent-grow.pending").exists()
    # Every port QEMU has has its named socket (what a snapshot records is
    # QEMU's count: they must agree), and none is left half-named.
    named = QemuVMM().agent_sockets(vmdir)
    assert QemuVMM().agent_ports(vmdir) == len(named) >= k
    assert not list(folder.glob("agent-*.sock.new"))


def test_cp_errors(cli: Ignite, agentbox: str, tmp_path: Path) -> None:
    res = cli("cp", f"{agentbox}:/no/such/file", str(tmp_path / "x"), check=False)
    assert res.returncode != 0 and "No such file" in res.stderr
    assert not list(tmp_path.iterdir())
    res = cli("cp", "a", "b", check=False)
    assert res.returncode == 1 and "neither" in res.stderr


def test_exec_in_a_stopped_vm(cli: Ignite, testbox: str) -> None:
    cli("create", testbox, "--name", "cold", "--size", "256MB")
    res = cli("exec", "cold", "--", "true", check=False)
    assert res.returncode == 1 and "is not running" in res.stderr
    cli("rm", "cold")


def test_image_without_init_runs_its_entrypoint(cli: Ignite, kernel: str,
                                                 tmp_path_factory: pytest.TempPathFactory
                                                 ) -> None:
    archive = app_image(tmp_path_factory.mktemp("app") / "app.tar")
    cli("run", str(archive), "--name", "app", "--memory", "128MB", "--size", "256MB")
    text = wait_console(cli, "app", "APP-RUNNING")
    assert "APP-RUNNING foo=bar pwd=/tmp pid=" in text
    assert cli("exec", "app", "--", "cat", "/proc/1/comm").stdout.strip() == "ignite-agent"
    res = cli("stop", "app")
    assert "did not power off" not in res.stderr
    assert "app" not in cli("ps").stdout
    cli("rm", "app")


@contextlib.contextmanager
def _loop_volume(tmp_path: Path, marker: str) -> Iterator[str]:
    """A loop device holding an ext4 filesystem with one file, ``marker``."""
    import subprocess

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "marker").write_text(marker)
    img = tmp_path / "vol.img"
    img.write_bytes(b"")
    os.truncate(img, 32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-d", str(tree), str(img)], check=True)
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True,
                         text=True)
    if dev.returncode:
        pytest.skip(f"no loop devices on this host: {dev.stderr.strip()}")
    loop = dev.stdout.strip()
    try:
        yield loop
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


def test_volumes_mount_host_block_devices(cli: Ignite, testbox: str, tmp_path: Path) -> None:
    with _loop_volume(tmp_path, "from-the-host\n") as loop:
        for name, write in (("vol1", True), ("vol2", False)):
            cli("run", testbox, "--name", name, "--size", "256MB", "--volumes", f"{loop}:/data")
            assert cli("exec", name, "--", "cat", "/data/marker").stdout == "from-the-host\n"
            if write:
                cli("exec", name, "--", "sh", "-c", "echo kept > /data/new; sync")
            else:  # data written by the first VM is still there for the next
                assert cli("exec", name, "--", "cat", "/data/new").stdout == "kept\n"
            cli("rm", "-f", name)


def test_a_volume_with_a_long_name_is_mounted(cli: Ignite, testbox: str, tmp_path: Path) -> None:
    """A manifest's volume names are not bound by the 20 bytes of a disk serial."""
    with _loop_volume(tmp_path, "long-name\n") as loop:
        _run_long_named_volume(cli, testbox, tmp_path, loop)


def _run_long_named_volume(cli: Ignite, testbox: str, tmp_path: Path, loop: str) -> None:
    manifest = tmp_path / "vm.yaml"
    manifest.write_text(f"""apiVersion: ignite.weave.works/v1alpha4
kind: VM
metadata:
  name: longvol
spec:
  image:
    oci: {testbox}
  diskSize: 256MB
  storage:
    volumes:
    - name: database-files.primary
      blockDevice:
        path: {loop}
    volumeMounts:
    - name: database-files.primary
      mountPath: /srv/db
""")
    try:
        cli("create", "--config", str(manifest))
        cli("start", "longvol")
        assert cli("exec", "longvol", "--", "cat", "/srv/db/marker").stdout == "long-name\n"
    finally:
        cli("rm", "-f", "longvol", check=False)
