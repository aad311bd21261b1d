"""Hostile manifest values are refused by the one validation path, whatever the
interface: the Python API, ``ignite create --config``, and ignited's folder."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ignitevm.api import codec
from ignitevm.api.defaults import default_vm, validate_vm
from ignitevm.api.types import VM
from ignitevm.errors import InvalidInput
from tests.conftest import cli_env

INJECTION = ("127.0.0.1:1-:1,guestfwd=tcp:10.0.2.100:9-cmd:touch /tmp/x,"
             "hostfwd=tcp:127.0.0.1")

# (what the case is, a patch over a good VM manifest, a word of the expected message)
HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("bindAddress injects a guestfwd",
     {"spec": {"network": {"ports": [{"bindAddress": INJECTION, "hostPort": 8080,
                                      "vmPort": 80}]}}}, "bindAddress"),
    ("bindAddress with a comma", {"spec": {"network": {"ports": [
        {"bindAddress": "127.0.0.1,restrict=off", "hostPort": 80, "vmPort": 80}]}}},
     "bindAddress"),
    ("bindAddress not an address", {"spec": {"network": {"ports": [
        {"bindAddress": "localhost", "hostPort": 80, "vmPort": 80}]}}}, "bindAddress"),
    ("hostPort 0", {"spec": {"network": {"ports": [{"hostPort": -1, "vmPort": 80}]}}},
     "hostPort"),
    ("vmPort too big", {"spec": {"network": {"ports": [{"hostPort": 80, "vmPort": 70000}]}}},
     "vmPort"),
    ("protocol injects", {"spec": {"network": {"ports": [
        {"hostPort": 80, "vmPort": 80, "protocol": "tcp:0.0.0.0:1-:1,guestfwd=x"}]}}},
     "protocol"),
    ("kernel args with a newline", {"spec": {"kernel": {"cmdLine": "console=ttyS0\ninit=/x"}}},
     "kernel args"),
    ("kernel args with a NUL", {"spec": {"kernel": {"cmdLine": "console=ttyS0\x00x"}}},
     "kernel args"),
    ("kernel args too long", {"spec": {"kernel": {"cmdLine": "a" * 5000}}}, "kernel args"),
    ("kernel args not ASCII", {"spec": {"kernel": {"cmdLine": "console=ttyS0 \u202e"}}},
     "kernel args"),
    ("name with a comma", {"metadata": {"name": "web,x"}}, "invalid VM name"),
    ("name with an escape", {"metadata": {"name": "\x1b[2Jweb"}}, "invalid VM name"),
    ("uid that is a path", {"metadata": {"uid": "../../../../etc"}}, "invalid uid"),
    ("uid with a trailing newline", {"metadata": {"uid": "0123456789abcdef\n"}}, "invalid uid"),
    ("name with a trailing newline", {"metadata": {"name": "web\n"}}, "invalid VM name"),
    ("label name with a trailing newline", {"metadata": {"labels": {"a\n": "b"}}}, "label"),
    ("dns-search with a trailing newline", {"spec": {"network": {"dnsSearch": ["lab\n"]}}},
     "dns-search"),
    ("mac with a trailing newline", {"spec": {"network": {"networks": [
        {"network": "lab", "mac": "02:00:00:00:00:01\n"}]}}}, "mac"),
    ("label value with a terminal escape", {"metadata": {"labels": {"a": "\x1b]0;pwn\x07"}}},
     "label value"),
    ("label key with a space", {"metadata": {"labels": {"a b": "c"}}}, "label key"),
    ("annotation with a newline", {"metadata": {"annotations": {"x": "a\nb"}}},
     "annotation"),
    ("memory too large", {"spec": {"memory": "4096GB"}}, "--memory"),
    ("memory too small", {"spec": {"memory": "1MB"}}, "--memory"),
    ("cpus too many", {"spec": {"cpus": 1000}}, "--cpus"),
    ("disk too small", {"spec": {"diskSize": "4KB"}}, "--size"),
    ("disk too large", {"spec": {"diskSize": "100000GB"}}, "--size"),
    ("copyFiles relative host path", {"spec": {"copyFiles": [
        {"hostPath": "etc/shadow", "vmPath": "/x"}]}}, "absolute"),
    ("copyFiles '..' in the VM path", {"spec": {"copyFiles": [
        {"hostPath": "/etc/hostname", "vmPath": "/a/../../b"}]}}, "'..'"),
    ("copyFiles NUL in the host path", {"spec": {"copyFiles": [
        {"hostPath": "/etc/x\x00y", "vmPath": "/x"}]}}, "control characters"),
    ("volume device relative", {"spec": {"storage": {
        "volumes": [{"name": "v0", "blockDevice": {"path": "dev/sda"}}],
        "volumeMounts": [{"name": "v0", "mountPath": "/mnt"}]}}}, "absolute"),
    ("volume device with a newline", {"spec": {"storage": {
        "volumes": [{"name": "v0", "blockDevice": {"path": "/dev/sda\n"}}]}}}, "control"),
    ("volume mount path with ':'", {"spec": {"storage": {
        "volumes": [{"name": "v0", "blockDevice": {"path": "/dev/vdb"}}],
        "volumeMounts": [{"name": "v0", "mountPath": "/mnt:/x"}]}}}, "':'"),
    ("volume name injects", {"spec": {"storage": {
        "volumes": [{"name": "a,file=/x", "blockDevice": {"path": "/dev/vdb"}}]}}},
     "volume name"),
    ("ssh key path with a newline", {"spec": {"ssh": "/root/.ssh/id.pub\n"}}, "ssh"),
    ("image ref with a comma", {"spec": {"image": {"oci": "base,x"}}}, "image reference"),
    ("kernel ref with a space", {"spec": {"kernel": {"oci": "debian cloud"}}},
     "image reference"),
    ("sandbox ref", {"spec": {"sandbox": {"oci": "Bad Ref"}}}, "image reference"),
]


def _manifest(patch: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "ignite.weave.works/v1alpha4", "kind": "VM",
        "metadata": {"name": "hostile", "uid": "0123456789abcdef"},
        "spec": {"image": {"oci": "base"}}, "status": {"running": True},
    }
    for key, value in patch.items():
        base[key] = {**base.get(key, {}), **value}
    return base


def _write(path: Path, patch: dict[str, Any]) -> Path:
    # JSON is YAML: control characters survive as \u escapes.
    path.write_text(json.dumps(_manifest(patch)))
    return path


IDS = [case[0] for case in HOSTILE]


@pytest.mark.parametrize(("case", "patch", "message"), HOSTILE, ids=IDS)
def test_refused_by_the_api(case: str, patch: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        vm = codec.decode_object(_manifest(patch), "test")
        validate_vm(default_vm(vm))
    assert message in str(info.value) + (info.value.hint or "")


@pytest.mark.parametrize(("case", "patch", "message"), HOSTILE, ids=IDS)
def test_refused_by_create_config(case: str, patch: dict[str, Any], message: str,
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ignitevm.cli.main import main

    manifest = _write(tmp_path / "vm.json", patch)
    root = tmp_path / "root"
    assert main(["create", "--root", str(root), "--config", str(manifest)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err
    assert not list((root / "vm").glob("*")) if (root / "vm").exists() else True


def test_create_config_refusal_is_one_line_from_the_real_cli(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "vm.yaml", HOSTILE[0][1])
    env = cli_env(tmp_path / "root")
    res = subprocess.run([sys.executable, "-m", "ignitevm", "create", "--config", str(manifest)],
                         env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert res.returncode == 1
    assert res.stderr.startswith("error: invalid port bindAddress"), res.stderr
    assert "Traceback" not in res.stderr


def test_refused_from_an_ignited_folder(tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """Every hostile manifest in one folder: each is refused with its own message, the
    daemon's pass goes on, and nothing is made in the store."""
    from ignitevm.daemon.manifests import ManifestReader
    from ignitevm.daemon.reconcile import Reconciler
    from ignitevm.operations.context import Context

    folder = tmp_path / "manifests"
    folder.mkdir()
    expected = {}
    for i, (_, patch, message) in enumerate(HOSTILE):
        patch = json.loads(json.dumps(patch))
        meta = patch.setdefault("metadata", {})
        meta.setdefault("uid", f"{i:016x}")
        if "name" not in meta:
            meta["name"] = f"hostile-{i}"
        _write(folder / f"vm{i}.json", patch)
        expected[meta["uid"]] = message
    ctx = Context(root=tmp_path / "root")
    rec = Reconciler(ctx, f"dir:{folder}")
    desired = ManifestReader(folder).read()
    with caplog.at_level(logging.ERROR, logger="ignitevm"):
        rec.sync(desired)
    said = [r.getMessage() for r in caplog.records]
    for uid, message in expected.items():
        if uid not in desired:  # refused already when read (the uid is not a uid)
            continue
        assert any(uid in line and message in line for line in said), (uid, message, said)
    assert ctx.store.list(VM) == []


def test_yaml_aliases_are_refused(tmp_path: Path) -> None:
    """A few lines of aliases would expand to billions of list items when decoded:
    refused in manifests and in the host Configuration."""
    from ignitevm.cli.config import load_configuration

    bomb = "apiVersion: ignite.weave.works/v1alpha4\nkind: VM\na: &a [x, x, x, x, x, x, x]\n"
    prev = "a"
    for i in range(9):
        bomb += f"l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        prev = f"l{i}"
    with pytest.raises(InvalidInput, match="aliases"):
        codec.load_manifest(bomb, "bomb.yaml")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(bomb.replace("kind: VM", "kind: Configuration"))
    with pytest.raises(InvalidInput, match=r"config file .*:4:\d+: not valid YAML: YAML aliases"):
        load_configuration(str(cfg))


def test_ignited_reads_no_link_out_of_its_folder(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A Git repository can hold a symlink: vm.yaml -> /etc/shadow is not read (its
    content would show in the parse error)."""
    from ignitevm.daemon.manifests import ManifestReader

    secret = tmp_path / "secret.yaml"
    secret.write_text("root:$6$hash:19000:0:99999:7:::\n")
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "vm.yaml").symlink_to(secret)
    (folder / "ok.json").write_text(json.dumps(_manifest({})))
    (folder / "alias.json").symlink_to(folder / "ok.json")  # in-tree: fine (same UID, once)
    with caplog.at_level(logging.WARNING, logger="ignitevm"):
        found = ManifestReader(folder).read()
    assert list(found) == ["0123456789abcdef"]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "outside" in said and "$6$hash" not in said


def _ed25519_line() -> str:
    import base64

    blob = b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + bytes(range(32))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} me@host"


@pytest.mark.parametrize(("text", "ok"), [
    (_ed25519_line(), True),
    (_ed25519_line() + "\n", True),
    (_ed25519_line() + "\n" + _ed25519_line(), False),  # a second key
    ('command="touch /tmp/x" ' + _ed25519_line(), False),  # options
    ("ssh-rsa " + _ed25519_line().split()[1], False),  # blob of another type
    ("ssh-ed25519 not*base64", False),
    ("ssh-ed25519", False),
    ("root:x:0:0:root:/root:/bin/bash", False),
    ("", False),
])
def test_ssh_public_key_is_one_valid_line(tmp_path: Path, text: str, ok: bool) -> None:
    from ignitevm.operations.sshkeys import user_public_key

    key = tmp_path / "id.pub"
    key.write_text(text)
    if ok:
        assert user_public_key(str(key)) == _ed25519_line()
    else:
        with pytest.raises(InvalidInput, match="not one OpenSSH public key line"):
            user_public_key(str(key))


def test_manifest_names_and_uids_cannot_forge_log_lines(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Git allows newlines and escapes in file names; a uid is any string until
    checked: neither reaches ignited's log raw."""
    from ignitevm.daemon.manifests import ManifestReader

    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "x\nERROR fake line\x1b[2J.yaml").write_text("kind: [")
    bad_uid = _manifest({"metadata": {"uid": "0123\n\x1b[31mforged"}})
    (folder / "uid.json").write_text(json.dumps(bad_uid))
    with caplog.at_level(logging.WARNING, logger="ignitevm"):
        assert ManifestReader(folder).read() == {}
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2
    assert all("\n" not in line and "\x1b" not in line for line in said), said
    assert any("invalid uid" in line for line in said)


@pytest.mark.parametrize(("text", "said"), [
    ("[" * 5000, "nested too deeply"),                     # RecursionError in PyYAML
    ("{" * 5000, "nested too deeply"),
    ("- " * 5000, "nested too deeply"),
    ("a: 2001-13-45\n", "month must be in 1..12"),         # a constructor's ValueError
    ("a: " + "1" * 5000 + "\n", "4300 digits"),            # int() of a huge number
])
def test_any_reader_failure_is_one_line(tmp_path: Path, text: str, said: str) -> None:
    """Not only PyYAML's own errors: what its recursion and constructors raise on
    a hostile file is one InvalidInput line, for manifests and the Configuration."""
    from ignitevm.cli.config import load_configuration

    with pytest.raises(InvalidInput, match="not valid YAML or JSON") as info:
        codec.load_manifest(text, "vm.yaml")
    assert said in str(info.value) and "\n" not in str(info.value)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    with pytest.raises(InvalidInput, match=f"config file {cfg}.*: not valid YAML") as info:
        load_configuration(str(cfg))
    assert said in str(info.value) and "\n" not in str(info.value)

