"""Damaged VM objects and errors that are not IgniteErrors: ignited goes on, and
nothing is hidden (ps shows damaged VMs, rm -f by UID removes them and kills
their QEMU).

No VM can boot in the unit layer, so a VM's "QEMU" here is a sleeping Python
process that names the VM's folder on its command line and left its pid in
run/qemu.pid, which is all the liveness check looks at.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ignitevm.api.types import VM, ObjectMeta
from ignitevm.operations.context import Context
from tests.conftest import REPO, Ignite, cli_env
from tests.helpers.daemon import GIVE_UP, read_until
from tests.helpers.fakeqemu import fake_qemu

DAMAGED = "00000000000000da"
GOOD = "0000000000000001"


def _damage(root: Path, uid: str = DAMAGED, how: str = "json") -> Path:
    folder = root / "vm" / uid
    folder.mkdir(parents=True)
    if how == "json":
        (folder / "metadata.json").write_text('{"kind": "VM", "metadata": {"name": ')
    else:  # unreadable: a folder where the file should be (read_bytes: EISDIR)
        (folder / "metadata.json").mkdir()
    return folder


def _good(root: Path, uid: str = GOOD, annotations: dict[str, str] | None = None) -> None:
    ctx = Context(root=root)
    vm = VM(metadata=ObjectMeta(name="good", uid=uid, created="2000-01-01T00:00:00Z",
                                annotations=annotations))
    vm.spec.image.oci = "base:latest"
    with ctx.store.creating(vm):
        pass


@pytest.mark.parametrize("how", ["json", "eisdir"])
def test_store_lists_damaged_objects(tmp_path: Path, how: str) -> None:
    _good(tmp_path)
    folder = _damage(tmp_path, how=how)
    store = Context(root=tmp_path).store
    assert [v.metadata.uid for v in store.list(VM)] == [GOOD]  # listings still work
    [d] = store.damaged(VM)
    assert (d.uid, d.folder) == (DAMAGED, folder) and d.reason


def test_ps_shows_and_rm_f_removes_a_damaged_vm(tmp_path: Path, ignite: Ignite) -> None:
    _good(ignite.root)
    folder = _damage(ignite.root, how="eisdir")
    with fake_qemu(folder) as qemu:
        res = ignite("ps")
        assert DAMAGED in res.stdout and "Damaged, Up" in res.stdout
        assert f"VM {DAMAGED} is damaged" in res.stderr and str(folder) in res.stderr
        assert DAMAGED in ignite("ps", "-aq").stdout.split()
        res = ignite("stop", DAMAGED, check=False)
        assert res.returncode == 1 and f"VM {DAMAGED} is damaged" in res.stderr
        assert f"ignite rm -f {DAMAGED}" in res.stderr
        res = ignite("rm", DAMAGED, check=False)
        assert res.returncode == 1 and "is running" in res.stderr
        ignite("rm", "-f", DAMAGED)
        qemu.wait(timeout=30)  # ended by rm -f (QEMU exits 0 on SIGTERM)
    assert not folder.exists()
    assert DAMAGED not in ignite("ps", "-a").stdout
    assert "good" in ignite("ps", "-a").stdout


def test_reconciler_reports_damaged_and_goes_on(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    from ignitevm.daemon.reconcile import Reconciler

    _damage(tmp_path)
    ctx = Context(root=tmp_path)
    want = VM(metadata=ObjectMeta(name="x", uid=DAMAGED))
    want.spec.image.oci = "base"
    want.status.running = True
    rec = Reconciler(ctx, "dir:/m")
    with caplog.at_level(logging.ERROR, logger="ignitevm"):
        rec.sync({DAMAGED: want})
        said = " | ".join(r.getMessage() for r in caplog.records)
        assert f"VM {DAMAGED} is damaged" in said and f"ignite rm -f {DAMAGED}" in said
        assert "stored object is damaged" in said
        caplog.clear()
        rec.sync({DAMAGED: want})
        assert not caplog.records  # said once, until it changes
    assert (tmp_path / "vm" / DAMAGED).is_dir()  # never removed behind the user's back


def test_one_vm_failing_with_any_error_does_not_stop_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A full disk while starting one VM (OSError, not an IgniteError): logged, the
    next VM is still started, and the first is tried again at the next pass.
    (vms.start is replaced: no QEMU in the unit layer.)"""
    from ignitevm.daemon import reconcile

    source = "dir:/m"
    annotations = {reconcile.MANAGED_BY: source}
    _good(tmp_path, "0000000000000001", annotations)
    ctx = Context(root=tmp_path)
    vm2 = VM(metadata=ObjectMeta(name="two", uid="0000000000000002",
                                 created="2000-01-01T00:00:00Z", annotations=annotations))
    vm2.spec.image.oci = "base:latest"
    with ctx.store.creating(vm2):
        pass
    started: list[str] = []

    def start(_ctx: Context, vm: VM) -> VM:
        started.append(vm.metadata.uid)
        if vm.metadata.uid == "0000000000000001":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/r/vm/1/config.tar")
        return vm

    monkeypatch.setattr(reconcile.vms, "start", start)
    desired = {}
    for vm in ctx.store.list(VM):
        vm.status.running = True
        desired[vm.metadata.uid] = vm
    rec = reconcile.Reconciler(ctx, source)
    with caplog.at_level(logging.ERROR, logger="ignitevm"):
        rec.sync(desired)
    assert started == ["0000000000000001", "0000000000000002"]
    assert any("No space left on device" in r.getMessage() for r in caplog.records)
    rec._wait_until.clear()
    rec._started.clear()
    rec.sync(desired)
    assert started.count("0000000000000001") == 2


def test_a_vm_made_by_hand_is_never_touched(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """A manifest that names the UID of a VM made by hand (or by another source)
    cannot start, stop or remove it."""
    from ignitevm.daemon.reconcile import Reconciler

    _good(tmp_path)  # no managed-by annotation
    ctx = Context(root=tmp_path)
    want = VM(metadata=ObjectMeta(name="good", uid=GOOD))
    want.spec.image.oci = "base"
    want.status.running = True
    with caplog.at_level(logging.ERROR, logger="ignitevm"):
        Reconciler(ctx, "dir:/m").sync({GOOD: want})
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "not made from dir:/m" in said and "left alone" in said


def test_the_loop_survives_a_failing_pass(caplog: pytest.LogCaptureFixture) -> None:
    from ignitevm.daemon.main import _loop

    calls = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        os.kill(os.getpid(), signal.SIGTERM)  # the second pass ends the loop

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with caplog.at_level(logging.ERROR, logger="ignitevm"):
            assert _loop(0.0, step) == 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    assert len(calls) == 2
    assert any("pass failed" in r.getMessage() and "boom" in r.getMessage()
               for r in caplog.records)


def test_ignited_daemon_keeps_running_with_a_damaged_store(tmp_path: Path) -> None:
    """The real daemon, with an unreadable metadata.json (which made every listing
    raise) and a manifest it cannot satisfy: it reports both and keeps going."""
    root, folder = tmp_path / "root", tmp_path / "manifests"
    folder.mkdir()
    _damage(root, how="eisdir")
    (folder / "vm.yaml").write_text(
        "apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nmetadata:\n  name: m\n"
        "  uid: 00000000000000aa\nspec:\n  image:\n    oci: missing-image\n"
        "status:\n  running: true\n")
    env = cli_env(root)
    code = "from ignitevm.daemon.main import main; raise SystemExit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, "daemon",
                             "--manifest-dir", str(folder), "--interval", "0.1"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        read_until(proc, f"VM {DAMAGED} is damaged", "missing-image", lines=lines)
        # a later pass still happens: a new manifest is read and reported
        (folder / "vm2.yaml").write_text(
            (folder / "vm.yaml").read_text().replace("aa", "bb").replace("missing-image",
                                                                         "second-missing"))
        read_until(proc, "second-missing", lines=lines)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait()
    assert "Traceback" not in "".join(lines)


def test_the_loop_ends_on_sigterm_during_a_long_wait() -> None:
    """SIGTERM while the loop waits an hour between passes: it ends at once, through
    the wake-up pipe (the handler touches no lock)."""
    code = ("import sys\nfrom ignitevm.daemon.main import _loop\n"
            "sys.exit(_loop(3600, lambda: print('pass', file=sys.stderr, flush=True)))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(GIVE_UP, proc.kill)  # a failure, never a timing check
    try:
        read_until(proc, "pass")
        proc.send_signal(signal.SIGTERM)
        watchdog.start()
        assert proc.stderr is not None
        proc.stderr.read()
        assert proc.wait() == 0  # not killed by the watchdog
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
