"""`ignite pause VM` / `ignite resume VM` without the command tree (cli/fastvm.py):
the plain case saves what the full path saves and says what it says; every
other case is left to the full path with nothing changed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ignitevm.api import codec
from ignitevm.api.types import VM, ObjectMeta
from ignitevm.cli import fastvm
from ignitevm.providers.vmm.qemu import running
from tests.conftest import REPO


def _store(root: Path, name: str, uid: str, paused: bool = False) -> Path:
    vm = VM(metadata=ObjectMeta(name=name, uid=uid))
    vm.status.running, vm.status.paused = True, paused
    d = root / "vm" / uid
    d.mkdir(parents=True)
    (d / "metadata.json").write_text(codec.to_json(vm) + "\n")
    return d / "metadata.json"


class _QEMU:
    """QEMU's side (no QEMU here: the QMP exchange itself is QemuVMM's code,
    providers/vmm/qemu/running.py, tested in tests/vm/test_pause.py and
    tests/unit/test_jsonlite.py): its pid, and the state it reports."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, state: str, pid: int | None = 1):
        self.sent: list[str] = []
        monkeypatch.setattr(running, "pid", lambda d, check=None: pid)
        for op in ("pause", "resume"):
            monkeypatch.setattr(running, op, lambda d, op=op: self.sent.append(op) or state)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IGNITE_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("IGNITE_DEBUG", raising=False)
    return tmp_path / "root"


@pytest.mark.parametrize("words", [[], ["-q", "web"], ["web", "db"], ["--help"],
                                   ["--root=/r", "web"]])
def test_other_forms_take_the_full_path(root: Path, monkeypatch: pytest.MonkeyPatch,
                                        words: list[str]) -> None:
    _store(root, "web", "0a1")
    qemu = _QEMU(monkeypatch, "running")
    assert fastvm.switch("pause", words) is None and qemu.sent == []


@pytest.mark.parametrize("op,paused,state,pid", [
    ("pause", True, "running", 1),     # stored paused: the full path says so
    ("resume", False, "paused", 1),    # stored running: likewise
    ("pause", False, "running", None),  # not running
    ("pause", False, "paused", 1),     # paused behind the store's back: nothing sent
    ("resume", True, "running", 1),
    ("resume", True, "internal-error", 1),
])
def test_cases_not_plain_change_nothing(root: Path, monkeypatch: pytest.MonkeyPatch, op: str,
                                        paused: bool, state: str, pid: int | None) -> None:
    meta = _store(root, "web", "0a1", paused)
    before = meta.read_bytes()
    _QEMU(monkeypatch, state, pid)
    assert fastvm.switch(op, ["web"]) is None
    assert meta.read_bytes() == before


def test_debug_takes_the_full_path(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _store(root, "web", "0a1")
    qemu = _QEMU(monkeypatch, "running")
    monkeypatch.setenv("IGNITE_DEBUG", "1")
    assert fastvm.switch("pause", ["web"]) is None and qemu.sent == []


def test_plain_case_saves_what_the_store_saves(root: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    meta = _store(root, "wéb", "0a1")
    _store(root, "db", "0b2")
    qemu = _QEMU(monkeypatch, "running")
    assert fastvm.switch("pause", ["wé"]) == 0 and qemu.sent == ["pause"]
    vm = codec.decode_json(meta.read_bytes(), VM)
    assert vm.status.paused
    assert meta.read_text() == codec.to_json(vm) + "\n"  # (as Store.save writes it)
    assert capsys.readouterr().err == "Paused VM with name 'wéb' and ID '0a1'\n"
    qemu = _QEMU(monkeypatch, "paused")
    assert fastvm.switch("resume", ["0a1"]) == 0 and qemu.sent == ["resume"]
    assert not codec.decode_json(meta.read_bytes(), VM).status.paused
    assert capsys.readouterr().err == "Resumed VM with name 'wéb' and ID '0a1'\n"


def test_errors_stay_the_full_paths(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ignitevm", *args], capture_output=True,
                              text=True, cwd=REPO, env={"IGNITE_ROOT": str(tmp_path),
                                                        "PATH": "/usr/bin:/bin"})

    res = run("pause", "nosuch")
    assert (res.returncode, res.stderr) == (1, "error: can't find vm: no ID/name matches "
                                               "for 'nosuch'\n  hint: list VMs with: ignite "
                                               "ps -a\n")
    _store(tmp_path, "web", "0a1")
    res = run("resume", "web")
    assert res.returncode == 1 and res.stderr.startswith("error: VM 'web' is not running")
