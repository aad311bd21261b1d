"""pause/resume on a real QEMU guest (QMP stop/cont), shared by the tests of
this module: what ps, inspect, exec and stop do with a paused VM."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Ignite


@pytest.fixture(scope="module")
def pbox(cli: Ignite, testbox: str) -> Iterator[str]:
    cli("run", testbox, "--name", "pbox", "--memory", "256MB", "--size", "256MB")
    assert cli("exec", "pbox", "--", "true").returncode == 0  # (waits for the agent)
    yield "pbox"
    cli("rm", "-f", "pbox", check=False)


def _vmdir(cli: Ignite, vm: str) -> Path:
    uid = cli("inspect", "vm", vm, "-t", "{{.ObjectMeta.UID}}").stdout.strip()
    return cli.root / "vm" / uid


def _qemu_state(cli: Ignite, vm: str) -> str:
    from ignitevm.providers.vmm.qemu.machine import QemuVMM

    return QemuVMM().run_state(_vmdir(cli, vm))


def _row(cli: Ignite, vm: str) -> str:
    return next(ln for ln in cli("ps").stdout.splitlines() if ln.endswith(f" {vm}"))


def test_pause_shows_paused_refuses_exec_and_resume_runs_again(cli: Ignite, pbox: str) -> None:
    cli("pause", pbox)
    assert _qemu_state(cli, pbox) == "paused"
    assert "(Paused)" in _row(cli, pbox)
    listed = json.loads(cli("ps", "-o", "json").stdout)
    assert [vm["status"]["paused"] for vm in listed if vm["metadata"]["name"] == pbox] == [True]
    status = json.loads(cli("inspect", "vm", pbox).stdout)["status"]
    assert status["running"] is True and status["paused"] is True

    res = cli("exec", pbox, "--", "true", check=False)
    assert res.returncode == 1
    assert "is paused" in res.stderr and "ignite resume pbox" in res.stderr
    assert "Traceback" not in res.stderr
    res = cli("pause", pbox, check=False)
    assert res.returncode == 1 and "already paused" in res.stderr

    cli("resume", pbox)
    assert _qemu_state(cli, pbox) == "running"
    assert "(Paused)" not in _row(cli, pbox)
    assert json.loads(cli("inspect", "vm", pbox).stdout)["status"]["paused"] is False
    assert cli("exec", pbox, "--", "true").returncode == 0
    res = cli("resume", pbox, check=False)
    assert res.returncode == 1 and "not paused" in res.stderr


def test_exec_names_a_pause_made_behind_the_store(cli: Ignite, pbox: str) -> None:
    """Paused through QMP directly (the stored state says running): exec still
    says why it cannot reach the agent, after its wait."""
    from ignitevm.providers.vmm.qemu.machine import QemuVMM

    vmdir = _vmdir(cli, pbox)
    QemuVMM().qmp(vmdir, "stop")
    try:
        res = cli("exec", "--timeout", "2", pbox, "--", "true", check=False)
        assert res.returncode == 1 and "is paused" in res.stderr, res.stderr
    finally:
        QemuVMM().qmp(vmdir, "cont")
    assert cli("exec", pbox, "--", "true").returncode == 0


def test_exec_pause_and_resume_answer_on_built_in_modules(cli: Ignite, pbox: str) -> None:
    """Through the installed script's source (bin/ignite) on a real VM: exec's and
    pause/resume's fast paths answer (their modules loaded, the VM paused and
    running again) without re, json, enum, pathlib, socket, typing, contextlib,
    collections or the command tree (the interpreter's own imports aside)."""
    import subprocess
    import sys

    from tests.conftest import REPO, cli_env

    def loaded(*words: str) -> set[str]:
        proc = subprocess.run([sys.executable, "-X", "importtime", *words],
                              env={**cli_env(cli.root), **cli.env},
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
        return {line.rpartition("|")[2].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")} - own

    own: set[str] = set()
    own = loaded("-c", "pass")  # (the interpreter's own start-up: its site hooks)
    ignite = str(REPO / "bin" / "ignite")

    heavy = {"re", "json", "enum", "pathlib", "socket", "selectors", "signal", "typing",
             "contextlib", "collections", "argparse", "msgspec", "ignitevm.cli.parser",
             "ignitevm.providers.vmm.qemu.machine"}
    mods = loaded(ignite, "exec", pbox, "--", "true")
    assert "ignitevm.agent.session" in mods and not mods & heavy, mods & heavy
    mods = loaded(ignite, "pause", pbox)
    assert "ignitevm.providers.vmm.qemu.qmp" in mods and not mods & heavy, mods & heavy
    assert _qemu_state(cli, pbox) == "paused"
    assert json.loads(cli("inspect", "vm", pbox).stdout)["status"]["paused"] is True
    mods = loaded(ignite, "resume", pbox)
    assert "ignitevm.providers.vmm.qemu.qmp" in mods and not mods & heavy, mods & heavy
    assert _qemu_state(cli, pbox) == "running"
    assert json.loads(cli("inspect", "vm", pbox).stdout)["status"]["paused"] is False
    assert cli("exec", pbox, "--", "true").returncode == 0


def test_pause_and_resume_of_a_vm_that_does_not_run(cli: Ignite, testbox: str) -> None:
    cli("create", testbox, "--name", "pcold", "--memory", "128MB", "--size", "256MB")
    try:
        for command in ("pause", "resume"):
            res = cli(command, "pcold", check=False)
            assert res.returncode == 1, command
            assert "is not running" in res.stderr and "ignite start pcold" in res.stderr
            assert "Traceback" not in res.stderr
    finally:
        cli("rm", "pcold")


def test_stop_of_a_paused_vm_powers_it_off(cli: Ignite, pbox: str) -> None:
    cli("pause", pbox)
    res = cli("stop", pbox)
    assert "killing it" not in res.stderr, res.stderr  # resumed, then powered off
    assert pbox not in cli("ps").stdout
    status = json.loads(cli("inspect", "vm", pbox).stdout)["status"]
    assert status["running"] is False and status["paused"] is False


def test_rm_force_of_a_paused_vm(cli: Ignite, pbox: str) -> None:
    from tests.vm.conftest import _qemu_pids

    vmdir = _vmdir(cli, pbox)
    cli("start", pbox)
    cli("pause", pbox)
    res = cli("rm", pbox, check=False)
    assert res.returncode == 1 and "is running" in res.stderr
    cli("rm", "-f", pbox)
    assert not vmdir.exists()
    left = []
    for pid in _qemu_pids(cli.root):
        try:
            if vmdir.name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                left.append(pid)
        except OSError:  # (gone meanwhile)
            pass
    assert not left, f"QEMU of the removed VM still runs: {left}"

