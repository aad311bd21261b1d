"""The core lifecycle on real QEMU guests: run, logs, ps, inspect, stop/kill, start, rm."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Ignite
from tests.vm.conftest import _qemu_pids, wait_console


@pytest.fixture(scope="module")
def box(cli: Ignite, testbox: str, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[str]:
    """One running busybox VM shared by the tests of this module."""
    copied = tmp_path_factory.mktemp("copy") / "motd"
    copied.write_text("hello-from-host\n")
    cli("run", testbox, "--name", "box", "--cpus", "2", "--memory", "256MB", "--size", "1GB",
        "--copy-files", f"{copied}:/etc/ignite-test", "-l", "team=a")
    wait_console(cli, "box", "TEST-READY")
    yield "box"
    cli("rm", "-f", "box")


def _uid(cli: Ignite, vm: str) -> str:
    return cli("inspect", "vm", vm, "-t", "{{.ObjectMeta.UID}}").stdout.strip()


def test_run_boots_the_image_init(cli: Ignite, box: str) -> None:
    uid = _uid(cli, box)
    text = cli("logs", box).stdout
    # Our init handed over to the image's init, which saw its per-VM settings:
    # hostname = VM ID (as Ignite), 2 CPUs, the copied file, the grown disk.
    assert "ignitevm-init: starting /sbin/init" in text
    assert f"TEST-READY host={uid} cpus=2" in text
    assert "COPIED=hello-from-host" in text
    disk_kb = int(text.split("DISK=")[1].split()[1])
    assert disk_kb > 900_000  # --size 1GB, while the image file is a few MB


def test_ps_and_inspect_show_the_running_vm(cli: Ignite, box: str) -> None:
    out = cli("ps").stdout.splitlines()
    assert out[0].split()[:3] == ["VM", "ID", "IMAGE"]
    row = next(line for line in out if line.endswith(" box"))
    assert "testbox:latest" in row and "debian-cloud:latest" in row
    assert "256.0 MB" in row and "1024.0 MB" in row and " Up " in row
    obj = json.loads(cli("inspect", "vm", box).stdout)
    assert obj["kind"] == "VM" and obj["apiVersion"] == "ignite.weave.works/v1alpha4"
    assert obj["status"]["running"] is True
    assert obj["spec"]["memory"] == "256MB" and obj["spec"]["diskSize"] == "1GB"
    assert obj["metadata"]["labels"] == {"team": "a"}
    assert obj["metadata"]["uid"] in cli("ps", "-q").stdout.split()
    assert obj["metadata"]["uid"] in cli("ps", "-a", "-q").stdout.split()


def test_vm_survives_the_cli_and_the_image_file_is_shared(cli: Ignite, box: str) -> None:
    # Every CLI call above was its own process, now gone; the VM still runs.
    uid = _uid(cli, box)
    assert _qemu_pids(cli.root)
    vm_dir = cli.root / "vm" / uid
    disk = vm_dir / "disk.qcow2"
    assert disk.stat().st_blocks * 512 < 64 << 20  # an overlay, not a copy


def test_rm_of_a_running_vm_needs_force(cli: Ignite, box: str) -> None:
    res = cli("rm", box, check=False)
    assert res.returncode == 1
    assert "is running" in res.stderr and "Traceback" not in res.stderr
    assert cli("ps", "-q").stdout.strip()


def test_ps_notices_when_qemu_dies_by_itself(cli: Ignite, testbox: str) -> None:
    cli("run", testbox, "--name", "victim", "--memory", "128MB", "--size", "256MB")
    wait_console(cli, "victim", "TEST-READY")
    uid = _uid(cli, "victim")
    pid = int((cli.root / "vm" / uid / "run" / "qemu.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)
    assert "victim" not in cli("ps").stdout
    res = cli("ps", "-a")
    row = next(line for line in res.stdout.splitlines() if line.endswith("victim"))
    assert "*Stopped" in row  # the stored state said running: marked, as Ignite did
    assert "symbol *" in res.stderr
    # ... and it can be started again, then killed, then removed without -f.
    cli("start", "victim")
    wait_console(cli, "victim", "TEST-READY")
    assert "victim" in cli("ps").stdout
    cli("kill", "victim")
    assert "victim" not in cli("ps").stdout
    cli("rm", "victim")
    assert not (cli.root / "vm" / uid).exists()
    assert "victim" not in cli("ps", "-a").stdout


def test_rm_force_cleans_every_file_and_process(cli: Ignite, testbox: str) -> None:
    cli("run", testbox, "--name", "doomed", "--memory", "128MB", "--size", "256MB")
    uid = _uid(cli, "doomed")
    vm_dir = cli.root / "vm" / uid
    assert vm_dir.is_dir()
    cli("rm", "-f", "doomed")
    assert not vm_dir.exists()
    assert not any(str(vm_dir).encode() in Path(f"/proc/{p}/cmdline").read_bytes()
                   for p in _qemu_pids(cli.root))
    assert not list((cli.root / "tmp").iterdir())


def test_create_then_start_and_stop_timeout_kills(cli: Ignite, testbox: str) -> None:
    # The busybox image ignores the ACPI power button, so stop falls back to a kill.
    cli("create", testbox, "--name", "later", "--memory", "128MB", "--size", "256MB")
    row = next(line for line in cli("ps", "-a").stdout.splitlines() if line.endswith("later"))
    assert "Stopped" in row
    cli("start", "later")
    wait_console(cli, "later", "TEST-READY")
    res = cli("stop", "later", "--timeout", "2")
    assert "did not power off" in res.stderr
    assert "later" not in cli("ps").stdout
    cli("rm", "later")


def test_attach_and_detach_keep_the_vm_running(cli: Ignite, box: str) -> None:
    import pty
    import select

    from tests.conftest import cli_env

    uid = _uid(cli, box)
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(cli_env(cli.root))
        os.execv(sys.executable, [sys.executable, "-m", "ignitevm", "attach", box])
    out = b""
    deadline = time.monotonic() + 30
    while uid.encode() not in out and time.monotonic() < deadline:
        if select.select([fd], [], [], 1)[0]:
            out += os.read(fd, 4096)
    os.write(fd, b"\x10\x11")  # Ctrl+P Ctrl+Q
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
        if select.select([fd], [], [], 0.2)[0]:
            try:
                os.read(fd, 4096)
            except OSError:
                pass
    if status is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError(f"attach did not detach: {out!r}")
    assert os.waitstatus_to_exitcode(status) == 0
    assert uid.encode() in out
    assert box in cli("ps").stdout


def test_boot_with_an_ignite_style_kernel_image(cli: Ignite, testbox: str, kernel: str,
                                               tmp_path: Path) -> None:
    """A kernel OCI image (/boot/vmlinux link + /lib/modules), as Ignite shipped them."""
    import io
    import tarfile

    from tests.helpers.images import write_docker_archive

    kdir = next((cli.root / "kernel").iterdir())
    version = cli("inspect", "kernel", kernel, "-t", "{{.Status.Version}}").stdout.strip()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(kdir / "vmlinux", arcname=f"boot/vmlinux-{version}")
        link = tarfile.TarInfo("boot/vmlinux")
        link.type, link.linkname = tarfile.SYMTYPE, f"/boot/vmlinux-{version}"
        tar.addfile(link)
        for ko in (kdir / "modules").glob("*.ko"):
            tar.add(ko, arcname=f"lib/modules/{version}/kernel/{ko.name}")
    archive = write_docker_archive(tmp_path / "kernel.tar", "myorg/kernel:6.1",
                                   [buf.getvalue()])
    cli("kernel", "import", str(archive))
    assert "myorg/kernel:6.1" in cli("kernel", "ls").stdout
    cli("run", testbox, "--name", "kimg", "-k", "myorg/kernel:6.1", "--size", "256MB")
    wait_console(cli, "kimg", "TEST-READY")
    cli("rm", "-f", "kimg")
    cli("rmk", "myorg/kernel:6.1")
