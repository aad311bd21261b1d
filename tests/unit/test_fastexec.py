"""`ignite exec`'s fast path reads what the full parser reads, finds what the store
finds, and leaves everything else to the full path (cli/fastexec.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ignitevm.api import codec
from ignitevm.api.types import VM, ObjectMeta
from ignitevm.cli import fastexec
from ignitevm.store import lookup
from tests.conftest import REPO


@pytest.mark.parametrize("words", [
    ["web", "--", "true"],
    ["web", "--", "sh", "-c", "echo $X", "--", "-y"],
    ["-e", "A=1", "--env", "B=2", "--env=C=3", "-w", "/tmp", "-u", "nobody", "web", "--", "id"],
    ["--timeout", "5", "web", "--", "true"],
    ["--timeout=2.5", "--root", "/r", "web", "--", "true"],
    ["--root=/r", "web", "--", "-x"],
])
def test_reads_what_the_full_parser_reads(words: list[str]) -> None:
    from ignitevm.cli.guest import exec_command
    from ignitevm.cli.parser import build_parser, normalize

    req = fastexec.parse(words)
    assert req is not None
    argv = normalize(["exec", *words])
    args = build_parser(argv).parse_args(argv)
    assert req.command == exec_command(args)
    assert (req.vm, req.env, req.workdir, req.user, req.timeout, req.root) == \
        (args.vm, args.env, args.workdir or "", args.user or "", args.timeout,
         getattr(args, "root", None))
    assert not (args.tty or args.interactive or args.ssh)


@pytest.mark.parametrize("words", [
    ["web", "true"],                      # no `--`
    ["web", "--"],                        # no command
    ["-i", "web", "--", "sh"],            # -i / -t / --ssh: the full path's
    ["-it", "web", "--", "sh"],
    ["-t", "web", "--", "sh"],
    ["--ssh", "web", "--", "true"],
    ["--help"],
    ["-h", "web", "--", "true"],
    ["--timeout", "x", "web", "--", "true"],   # argparse's error message
    ["--timeout", "-1", "web", "--", "true"],
    ["--time", "5", "web", "--", "true"],     # argparse's abbreviations
    ["-eA=1", "web", "--", "true"],
    ["-w", "/a", "-w", "/b", "web", "--", "true"],
    ["--log-level", "debug", "web", "--", "true"],
    ["-q", "web", "--", "true"],
    ["--", "true"],
    ["web", "ls", "--", "true"],
])
def test_other_forms_take_the_full_path(words: list[str]) -> None:
    assert fastexec.parse(words) is None


def test_no_fast_path_with_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGNITE_DEBUG", "1")
    assert fastexec.parse(["web", "--", "true"]) is None


def _vm(name: str, uid: str, paused: bool = False) -> VM:
    vm = VM(metadata=ObjectMeta(name=name, uid=uid))
    vm.status.paused = paused
    return vm


@pytest.mark.parametrize("vm", [_vm("web", "0123456789abcdef"), _vm("", "ab", True),
                                VM()])
def test_header_is_what_the_codec_reads(vm: VM) -> None:
    raw = (codec.to_json(vm) + "\n").encode()
    decoded = codec.decode_json(raw, VM)
    assert lookup.read_header(raw) == (decoded.metadata.uid, decoded.metadata.name,
                                       decoded.status.paused)


@pytest.mark.parametrize("raw", [
    b"", b"{", b"[]", b'{"metadata": []}', b'{"metadata": {"name": 7}}',
    b'{"metadata": {"uid": null}}', b'{"status": {"paused": "true"}}',
    b'{"status": {"paused": 1}}', b"[" * 100000,
])
def test_header_says_nothing_when_unsure(raw: bytes) -> None:
    assert lookup.read_header(raw) is None


def _store(root: Path, vms: list[VM]) -> None:
    for vm in vms:
        d = root / "vm" / vm.metadata.uid
        d.mkdir(parents=True)
        (d / "metadata.json").write_text(codec.to_json(vm) + "\n")


@pytest.mark.parametrize("query", ["web", "web2", "w", "0a", "0b", "0b1", "zz", ""])
def test_finds_what_the_store_finds(tmp_path: Path, query: str) -> None:
    from ignitevm.errors import IgniteError
    from ignitevm.store.store import Store

    _store(tmp_path, [_vm("web", "0a1"), _vm("web2", "0b1"), _vm("db", "0b2", True)])
    headers = lookup.read_headers(str(tmp_path / "vm"))
    assert headers is not None
    try:
        want: object = Store(tmp_path).resolve(VM, query).metadata.uid
    except IgniteError as exc:
        want = str(exc)
    try:
        got: object = headers[lookup.pick([(h.uid, h.name) for h in headers], query, "vm")].uid
    except IgniteError as exc:
        got = str(exc)
    assert got == want


def test_a_record_it_cannot_read_means_the_full_path(tmp_path: Path) -> None:
    _store(tmp_path, [_vm("web", "0a1")])
    (tmp_path / "vm" / "0b2").mkdir()
    (tmp_path / "vm" / "0b2" / "metadata.json").write_text(json.dumps(
        {"metadata": {"name": "db", "uid": "0b2"}, "status": {"paused": "yes"}}))
    assert lookup.read_headers(str(tmp_path / "vm")) is None
    (tmp_path / "vm" / "0b2" / "metadata.json").unlink()  # unreadable: left out, as the store
    assert [h.name for h in lookup.read_headers(str(tmp_path / "vm")) or []] == ["web"]


def test_errors_and_help_stay_the_full_paths(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ignitevm", *args], capture_output=True,
                              text=True, cwd=REPO, env={"IGNITE_ROOT": str(tmp_path),
                                                        "PATH": "/usr/bin:/bin"})

    res = run("exec", "nosuch", "--", "true")
    assert (res.returncode, res.stderr) == (1, "error: can't find vm: no ID/name matches "
                                               "for 'nosuch'\n  hint: list VMs with: ignite "
                                               "ps -a\n")
    _store(tmp_path, [_vm("web", "0a1")])
    res = run("exec", "web", "--", "true")
    assert res.returncode == 1 and res.stderr.startswith("error: VM 'web' is not running")
    res = run("exec", "--help")
    assert res.returncode == 0 and "--timeout" in res.stdout


def test_an_unreadable_folder_means_the_full_path(tmp_path: Path) -> None:
    (tmp_path / "vm").write_text("not a folder")
    assert lookup.read_headers(str(tmp_path / "vm")) is None
    assert lookup.read_headers(str(tmp_path / "none")) == []


def test_light_imports(tmp_path: Path) -> None:
    """What exec's and pause/resume's fast paths load (their lazy imports too, the
    store read, a QMP message written and read) is built-in modules and the
    project's own light ones: not the command tree, msgspec, logging, nor typing,
    re, json, enum, pathlib, socket, selectors, signal, contextlib or collections
    (the interpreter's own start-up loads none of them either)."""
    _store(tmp_path, [_vm("web", "0a1"), _vm("db", "0b2", True)])
    code = (
        "import sys\nbefore = set(sys.modules)\n"
        "from ignitevm.cli import fastexec, fastvm, main\n"
        "from ignitevm.agent import client, protocol, session\n"
        "from ignitevm.providers.vmm.qemu import qmp, running\n"
        "from ignitevm.store import layout, lookup\n"
        "from ignitevm.util import files, jsonlite\n"
        f"found = fastvm.find({str(tmp_path)!r}, 'web')\n"
        "assert found is not None and found[0].name == 'web'\n"
        "assert fastvm.qemu_pid(found[1]) is None\n"
        "assert fastexec.run(['web', '--', 'true']) is None\n"
        "assert running.agent_sockets(found[1]) == []\n"
        "assert client.lock_free([]) is None\n"
        "qmp._message('query-status', {})\n"
        "jsonlite.dumps(jsonlite.loads(b'{\"return\": {\"status\": \"running\"}}'))\n"
        "heavy = {'argparse', 'msgspec', 'logging', 'typing', 're', 'json', 'enum',\n"
        "         'pathlib', 'socket', 'selectors', 'signal', 'contextlib', 'collections',\n"
        "         'ignitevm.providers.vmm.base', 'ignitevm.providers.vmm.qemu.machine',\n"
        "         'ignitevm.providers.network.base', 'ignitevm.operations.context'}\n"
        "print(sorted(heavy & (set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO, env={"IGNITE_ROOT": str(tmp_path),
                                                    "PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == "[]"


def test_constants_held_equal() -> None:
    """running.py's and lookup's copies of what heavier modules define."""
    from ignitevm.providers.vmm import consolelog
    from ignitevm.providers.vmm.qemu import args, running
    from ignitevm.store import layout

    assert running.LOG_DEFAULT_MAX == consolelog.DEFAULT_MAX
    assert (args.CONSOLE_LOG, args.PIDSTART, args.QMP) == \
        (running.CONSOLE_LOG, running.PIDSTART, running.QMP)
    assert lookup.METADATA == layout.METADATA
    assert layout.default_root() == Path(layout.root_text())


@pytest.mark.parametrize("command,arguments", [
    ("query-status", {}), ("qmp_capabilities", {}), ("cont", {}), ("x-é\"", {}),
    ("migrate", {"uri": "exec:cat > /tmp/é"}), ("qom-list", {"path": "/machine"}),
])
def test_qmp_messages_are_json_dumps(command: str, arguments: dict[str, object]) -> None:
    from ignitevm.providers.vmm.qemu import qmp

    msg: dict[str, object] = {"execute": command}
    if arguments:
        msg["arguments"] = arguments
    assert qmp._message(command, arguments) == json.dumps(msg)


def test_frames_and_headers_are_named_tuples() -> None:
    import copy
    import pickle

    from ignitevm.agent import protocol as p

    f = p.Frame(p.EXEC, 7, b"x")
    assert (f.type, f.session, f.payload, f.flags) == (p.EXEC, 7, b"x", 0) == f
    assert pickle.loads(pickle.dumps(f)) == copy.copy(f) == f
    assert type(pickle.loads(pickle.dumps(f))) is p.Frame
    assert repr(f) == "Frame(type=3, session=7, payload=b'x', flags=0)"
    h = lookup.Header("0a1", "web")
    assert (h.uid, h.name, h.paused) == ("0a1", "web", False) == h
    assert h != lookup.Header("0a1", "web", True)
    assert pickle.loads(pickle.dumps(h)) == h
