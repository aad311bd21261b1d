"""The project's base image (Debian + systemd + openssh) built, booted and stopped for real."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Ignite
from tests.vm.conftest import wait_console


@pytest.fixture(scope="module")
def base(cli: Ignite, kernel: str) -> str:
    cli("image", "build", "base", timeout=900)
    return "base:latest"


@pytest.fixture(scope="module")
def sysvm(cli: Ignite, base: str) -> Iterator[str]:
    cli("run", base, "--name", "sys", "--cpus", "2", "--memory", "512MB", "--ssh")
    wait_console(cli, "sys", "Multi-User System", timeout=240)
    yield "sys"
    cli("rm", "-f", "sys")


def test_build_is_listed_and_reimport_is_free(cli: Ignite, base: str) -> None:
    rows = cli("image", "ls").stdout
    assert "base:latest" in rows
    archive = cli.root / "cache" / "build" / "base.oci.tar"
    res = cli("image", "import", str(archive))
    assert "already imported" in res.stderr


def test_systemd_is_up_and_the_agent_serves(cli: Ignite, sysvm: str) -> None:
    state = cli("exec", sysvm, "--", "systemctl", "is-system-running", "--wait",
                check=False).stdout.strip()
    assert state in ("running", "degraded"), state
    uid = cli("inspect", "vm", sysvm, "-t", "{{.ObjectMeta.UID}}").stdout.strip()
    assert cli("exec", sysvm, "--", "hostname").stdout.strip() == uid


def test_ssh_with_generated_key_and_pinned_host_key(cli: Ignite, sysvm: str) -> None:
    res = cli("exec", "--ssh", sysvm, "--", "sh", "-c", "echo $USER; exit 4", check=False)
    assert (res.returncode, res.stdout.strip()) == (4, "root")
    uid = cli("inspect", "vm", sysvm, "-t", "{{.ObjectMeta.UID}}").stdout.strip()
    vm_dir = cli.root / "vm" / uid
    known = (vm_dir / "known_hosts").read_text()
    assert known.split()[1:] == (vm_dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    # The guest serves exactly the host key made for this VM.
    guest_key = cli("exec", sysvm, "--", "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout
    assert guest_key.split()[:2] == known.split()[1:]
    assert "10.0.2.15" in cli("ps").stdout


def test_stop_is_graceful(cli: Ignite, sysvm: str) -> None:
    uid = cli("inspect", "vm", sysvm, "-t", "{{.ObjectMeta.UID}}").stdout.strip()
    res = cli("stop", sysvm, "--timeout", "60")
    assert "did not power off" not in res.stderr
    log = (cli.root / "vm" / uid / "console.log").read_text(errors="replace")
    # The guest shut down on its own (systemd ran its shutdown), not killed.
    assert "Power-Off" in log or "Powering off" in log, log[-2000:]
    assert "reboot: Power down" in log
    assert sysvm not in cli("ps").stdout


def test_ssh_over_cni_uses_the_vms_address(cli: Ignite, base: str) -> None:
    """`exec --ssh` and `ssh` reach sshd on the VM's own address on the bridge
    (a network of the test's own), with the host key pinned for that address."""
    from tests.helpers.cninet import remove_network, require_cni, write_default

    require_cni()
    name, bridge, _subnet = write_default(cli.root, tag=29)
    try:
        cli("run", base, "--name", "sshcni", "--network-plugin", "cni", "--cpus", "2",
            "--memory", "512MB", "--ssh")
        wait_console(cli, "sshcni", "Multi-User System", timeout=240)
        ip = cli("inspect", "vm", "sshcni", "-t", "{{.Status.Network.IPAddresses}}").stdout
        res = cli("exec", "--ssh", "sshcni", "--", "sh", "-c", "echo $SSH_CONNECTION",
                  check=False)
        assert res.returncode == 0, res.stderr
        server = res.stdout.split()[2]  # client ip, client port, server ip, server port
        assert server in ip and res.stdout.split()[3] == "22"
        uid = cli("inspect", "vm", "sshcni", "-t", "{{.ObjectMeta.UID}}").stdout.strip()
        assert (cli.root / "vm" / uid / "known_hosts").read_text().startswith(server + " ")
    finally:
        cli("rm", "-f", "sshcni", check=False)
        (cli.root / "cni" / "default.conflist").unlink(missing_ok=True)
        remove_network(name, bridge)


def _presented_host_key(port: int) -> list[str]:
    """The ed25519 host key the sshd behind ``port`` presents (ssh-keyscan)."""
    import shutil
    import subprocess

    if shutil.which("ssh-keyscan") is None:
        pytest.skip("ssh-keyscan is not installed")
    out = subprocess.run(["ssh-keyscan", "-p", str(port), "-t", "ed25519", "-T", "30",
                          "127.0.0.1"], capture_output=True, text=True, timeout=120).stdout
    lines = [ln.split()[1:3] for ln in out.splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 1, out
    return lines[0]


def test_clones_of_an_ssh_vm_have_their_own_ssh_identity(cli: Ignite, base: str) -> None:
    """A clone of a VM run with --ssh answers `exec --ssh` with the host key made
    for it (the one pinned in its known_hosts), not its snapshot's, and takes
    its own client key; two clones of one snapshot have different host keys."""
    names = ("sshsrc", "sshclone-a", "sshclone-b")
    try:
        cli("run", base, "--name", "sshsrc", "--memory", "256MB", "--ssh")
        wait_console(cli, "sshsrc", "Multi-User System", timeout=240)
        assert cli("exec", "--ssh", "sshsrc", "--", "true", timeout=240).returncode == 0
        cli("snapshot", "create", "sshsrc", "ssh-snap")
        seen = {}
        for vm in names:
            if vm != "sshsrc":
                cli("run", "--from-snapshot", "ssh-snap", "--name", vm)
            res = cli("exec", "--ssh", vm, "--", "cat", "/etc/ssh/ssh_host_ed25519_key.pub",
                      check=False, timeout=240)
            assert res.returncode == 0, res.stderr
            uid = cli("inspect", "vm", vm, "-t", "{{.ObjectMeta.UID}}").stdout.strip()
            vm_dir = cli.root / "vm" / uid
            made = (vm_dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
            pinned = (vm_dir / "known_hosts").read_text().split()[1:3]
            port = int((vm_dir / "ssh-port").read_text())
            assert res.stdout.split()[:2] == made == pinned == _presented_host_key(port)
            seen[vm] = made[1]
        assert len(set(seen.values())) == 3, seen
    finally:
        cli("rm", "-f", *names, check=False)
        cli("snapshot", "rm", "-f", "ssh-snap", check=False)
