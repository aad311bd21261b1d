"""A host reboot, simulated: every QEMU dies at once and what a reboot clears is
gone; afterwards `ps` tells the truth and one `ignited daemon` pass brings back
the VM a manifest says should run, and only that one.

What is simulated, and how (a test cannot reboot the host):
- every QEMU of the store is killed with SIGKILL (as at power loss; QEMUs
  of other stores on the host are left alone);
- the runtime files a reboot clears (the pid file, the start record, QMP,
  console and agent sockets, wherever in the VM's folder they live) are
  removed for the managed VM, and so are its /run/netns entries if it has any;
- the hand-made VM gets the harder case: its pid file is left and names a live
  process that passes every other check (a QEMU whose command line names the
  VM's folder, as a recycled pid after a reboot may), and its start record,
  "<pid> <boot id> <start ticks>", is rewritten to that process with another
  boot id, which is what the record of a previous boot looks like. The store's
  pid check (machine.is_our_qemu) must not take it for the VM's QEMU, and
  starting the VM must not touch it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import Ignite, cli_env
from tests.helpers.daemon import read_until
from tests.vm.conftest import _qemu_pids

IGNITED = [sys.executable, "-c", "import sys; from ignitevm.daemon.main import main; "
           "sys.exit(main())"]
MANAGED_UID = "5eb0075eb0075eb0"
RUNTIME = ("qemu.pid", "qemu.pid.start")


def manifest(image: str) -> str:
    return f"""apiVersion: ignite.weave.works/v1alpha4
kind: VM
metadata:
  name: reboot-managed
  uid: {MANAGED_UID}
spec:
  image:
    oci: {image}
  memory: 192MB
  diskSize: 256MB
status:
  running: true
"""


@contextlib.contextmanager
def ignited(cli: Ignite, folder: Path) -> Iterator[subprocess.Popen[str]]:
    env = cli_env(cli.root)
    proc = subprocess.Popen([*IGNITED, "daemon", "--manifest-dir", str(folder),
                             "--interval", "1s"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_pass_starts(cli: Ignite, folder: Path) -> list[str]:
    """Run ignited until it has started the managed VM; what it said."""
    with ignited(cli, folder) as proc:
        return read_until(proc, "Started VM 'reboot-managed'")


def uid_of(cli: Ignite, name: str) -> str:
    return cli("inspect", "vm", name, "-t", "{{.ObjectMeta.UID}}").stdout.strip()


def status_of(cli: Ignite, name: str) -> str:
    rows = [ln for ln in cli("ps", "-a").stdout.splitlines() if ln.rstrip().endswith(f" {name}")]
    assert len(rows) == 1, rows
    return rows[0]


def power_loss(root: Path) -> None:
    """SIGKILL to every QEMU of the store, waiting until each has gone."""
    from ignitevm.util.proc import kill_and_wait

    for pid in _qemu_pids(root):
        kill_and_wait(pid, timeout=None)
    assert not _qemu_pids(root)


def clear_runtime(folder: Path) -> list[Path]:
    """Remove what a reboot clears from a VM's folder (wherever the files live)."""
    gone = [p for p in folder.rglob("*") if p.name in RUNTIME or p.is_socket()]
    for p in gone:
        p.unlink()
    return gone


def clear_netns(uids: list[str]) -> None:
    netns = Path("/run/netns")
    for entry in (netns.iterdir() if netns.is_dir() else ()):
        if any(uid in entry.name for uid in uids):
            subprocess.run(["ip", "netns", "delete", entry.name], check=False)


def decoy_qemu(folder: Path) -> subprocess.Popen[bytes]:
    """A live QEMU whose command line names ``folder`` (and so would pass a check
    of executable and command line alone): a machine with nothing in it."""
    return subprocess.Popen(["qemu-system-x86_64", "-M", "none", "-display", "none",
                             "-nodefaults", "-S", "-name", f"decoy for {folder}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def start_ticks(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def test_after_a_reboot_ps_is_truthful_and_ignited_restarts_only_its_vm(
        cli: Ignite, testbox: str, tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "managed.yaml").write_text(manifest(testbox))
    decoy = None
    try:
        cli("run", testbox, "--name", "reboot-hand", "--memory", "192MB", "--size", "256MB")
        one_pass_starts(cli, folder)
        for name in ("reboot-hand", "reboot-managed"):
            assert " Up " in status_of(cli, name)
        hand = cli.root / "vm" / uid_of(cli, "reboot-hand")
        managed = cli.root / "vm" / MANAGED_UID

        # --- the reboot ---------------------------------------------------------
        power_loss(cli.root)
        assert clear_runtime(managed)
        clear_netns([MANAGED_UID, hand.name])
        decoy = decoy_qemu(hand)
        pidfile = next(hand.rglob("qemu.pid"))
        record = next(hand.rglob("qemu.pid.start"))
        _pid, _boot, _ticks = record.read_text().split()
        other_boot = str(uuid.uuid4())
        assert other_boot != Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pidfile.write_text(f"{decoy.pid}\n")
        record.write_text(f"{decoy.pid} {other_boot} {start_ticks(decoy.pid)}\n")
        for p in hand.rglob("*"):
            if p.is_socket():
                p.unlink()

        # --- ps tells the truth -------------------------------------------------
        listing = cli("ps", "-a").stdout
        assert " Up " not in listing, listing
        for name in ("reboot-hand", "reboot-managed"):
            assert "Stopped" in status_of(cli, name)
        assert cli("ps", "-q").stdout == ""  # no running VM at all

        # --- one ignited pass: the managed VM runs again, the hand-made one not ---
        said = "".join(one_pass_starts(cli, folder))
        assert "reboot-hand" not in said
        assert " Up " in status_of(cli, "reboot-managed")
        assert "Stopped" in status_of(cli, "reboot-hand")
        assert cli("exec", "reboot-managed", "--timeout", "120", "--", "echo", "back"
                   ).stdout == "back\n"

        # --- and the hand-made one starts by hand, leaving the decoy alone --------
        cli("start", "reboot-hand")
        assert cli("exec", "reboot-hand", "--timeout", "120", "--", "echo", "back"
                   ).stdout == "back\n"
        assert decoy.poll() is None, "starting the VM killed an unrelated process"
        assert pidfile.read_text().strip() != str(decoy.pid)
    finally:
        if decoy is not None:
            decoy.kill()
            decoy.wait()
        existing = set(cli("ps", "-a", "-t", "{{.ObjectMeta.Name}}", check=False).stdout.split())
        doomed = [n for n in ("reboot-hand", "reboot-managed") if n in existing]
        if doomed:
            cli("rm", "-f", *doomed, check=False)
