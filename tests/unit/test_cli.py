"""The CLI surface: help, errors without tracebacks, templates and filters."""

from __future__ import annotations

import pytest

from ignitevm.api.types import VM, ObjectMeta, Size
from ignitevm.cli.templates import apply_filter, render
from ignitevm.errors import InvalidInput
from tests.conftest import Ignite


def test_help_and_version(ignite: Ignite) -> None:
    out = ignite("--help").stdout
    for cmd in ("run", "ps", "logs", "attach", "stop", "rm", "image", "kernel", "inspect"):
        assert cmd in out
    assert ignite("version", "-o", "short").stdout.strip().startswith("v")


def test_empty_store_lists(ignite: Ignite) -> None:
    assert ignite("ps", "-a").stdout.split()[:2] == ["VM", "ID"]
    assert ignite("image", "ls").stdout.split()[:3] == ["IMAGE", "ID", "NAME"]
    assert ignite("kernels").stdout.split()[:2] == ["KERNEL", "ID"]
    assert ignite("ps", "-q").stdout == ""


@pytest.mark.parametrize(("args", "message"), [
    (["inspect", "pod", "x"], "unrecognized kind"),
    (["rm"], "no VM given"),
    (["image", "import", "/nonexistent.tar"], "unknown image"),
    (["kernel", "import", "/nonexistent"], "unknown kernel"),
    (["version", "-o", "xml"], "invalid output format"),
    (["image", "inspect", "-o", "xml", "x"], "invalid value 'xml' for --output"),
    (["image", "ls", "-o", "xml"], "invalid value 'xml' for --output"),
    (["imagee", "ls"], "unknown command 'imagee' for 'ignite'"),
])
def test_errors_are_one_line(ignite: Ignite, args: list[str], message: str) -> None:
    res = ignite(*args, check=False)
    assert res.returncode == 1
    assert res.stderr.startswith("error: ") and message in res.stderr
    assert "Traceback" not in res.stderr


def test_unexpected_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A bug (any exception that is not an IgniteError) is one line and exit 1 too; its
    traceback only in debug mode."""
    from ignitevm.cli.main import _guarded

    def bug() -> int:
        raise ValueError("Port out of range\x1b[2J")

    assert _guarded(bug, debug=False) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "error: unexpected ValueError: Port out of range\\x1b[2J"
    assert len(lines) == 2 and "--debug-trace" in lines[1] and "Traceback" not in lines[1]
    with pytest.raises(ValueError):
        _guarded(bug, debug=True)


def _vm() -> VM:
    vm = VM(metadata=ObjectMeta(name="web", uid="0123456789abcdef", labels={"a": "b"}))
    vm.spec.cpus = 2
    vm.spec.memory = Size(512 << 20)
    vm.spec.image.oci = "base:latest"
    return vm


def test_templates_render_like_go() -> None:
    vm = _vm()
    assert render("{{.Spec.Memory}} {{.Spec.Image.OCI}}", vm) == "512.0 MB base:latest"
    assert render("{{.ObjectMeta.Labels}} {{.Status.Running}}", vm) == "map[a:b] false"
    assert render("{{.Spec.SSH}}", vm) == "<nil>"
    with pytest.raises(InvalidInput, match="can't evaluate field"):
        render("{{.Spec.Nope}}", vm)


def test_filters() -> None:
    vm = _vm()
    assert apply_filter([vm], "{{.ObjectMeta.Name}}=~we,{{.Spec.CPUs}}=2") == [vm]
    assert apply_filter([vm], "{{.ObjectMeta.Name}}!=web") == []
    with pytest.raises(InvalidInput, match="failed to extract"):
        apply_filter([vm], "name=web")


def _vm_args(*argv: str):  # type: ignore[no-untyped-def]
    from ignitevm.cli.parser import build_parser

    return build_parser().parse_args(["create", *argv])


def test_precedence_defaults_config_manifest_flags(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ignitevm.cli.vmspec import vm_from_args

    cfg = tmp_path / "config.yaml"
    cfg.write_text("apiVersion: ignite.weave.works/v1alpha4\nkind: Configuration\n"
                   "spec:\n  idPrefix: team\n  vmDefaults:\n    cpus: 2\n    memory: 1GB\n"
                   "    image:\n      oci: fromconfig\n")
    manifest = tmp_path / "vm.yaml"
    manifest.write_text("apiVersion: ignite.weave.works/v1alpha3\nkind: VM\nmetadata:\n"
                        "  name: fromfile\nspec:\n  memory: 2GB\n")
    vm = vm_from_args(_vm_args("--ignite-config", str(cfg), "--config", str(manifest),
                               "--cpus", "4", "-l", "a=b"))
    assert vm.spec.cpus == 4                      # flag beats everything
    assert vm.spec.memory == Size(2 << 30)        # manifest beats vmDefaults
    assert vm.spec.image.oci == "fromconfig"      # vmDefaults beat built-in defaults
    assert vm.metadata.name == "fromfile"
    assert vm.metadata.labels == {"a": "b"}
    assert vm.status.id_prefix == "team"


@pytest.mark.parametrize(("argv", "message"), [
    (["img", "--label", "nokey"], "invalid label value"),
    (["img", "--copy-files", "rel:/x"], "must be absolute"),
    (["img", "--require-name"], "must set VM name"),
    (["img", "--runtime", "docker"], "not available here"),
    (["img", "-p", "80"], "invalid port mapping"),
])
def test_flag_errors(argv: list[str], message: str) -> None:
    from ignitevm.cli.vmspec import vm_from_args

    with pytest.raises(InvalidInput, match=message):
        vm_from_args(_vm_args(*argv))


@pytest.mark.parametrize(("args", "message", "hint"), [
    (["run", "--pull", "sometimes", "x"], "invalid value 'sometimes' for --pull",
     "use missing, always or never"),
    (["run", "--pull=sometimes", "x"], "invalid value 'sometimes' for --pull",
     "use missing, always or never"),
    (["ps", "-o", "xml"], "invalid value 'xml' for --output", "use table, wide, json or yaml"),
    (["--accel", "foo", "ps"], "invalid value 'foo' for --accel", "use auto, kvm or tcg"),
    (["ps", "--accel", "foo"], "invalid value 'foo' for --accel", "use auto, kvm or tcg"),
    (["--sandbox", "foo", "ps"], "invalid value 'foo' for --sandbox", "use jail or none"),
    (["ps", "--log-level", "foo"], "invalid value 'foo' for --log-level", "use panic, "),
    (["run", "--cpus", "two", "x"], "invalid value 'two' for --cpus", "use a whole number"),
    (["image", "pull", "--runtime", "containerd", "x"],
     "unknown flag '--runtime' for 'ignite image pull'", "see: ignite image pull --help"),
    (["ps", "--outptu", "json"], "unknown flag '--outptu' for 'ignite ps'",
     "did you mean '--output'?"),
    (["image", "lss"], "unknown command 'lss' for 'ignite image'", "did you mean 'ls'?"),
    (["ps", "extra"], "unexpected argument 'extra' for 'ignite ps'", "see: ignite ps --help"),
    (["network", "create", "lab", "--subnet"], "--subnet needs a value", "see: "),
    (["--bogus", "ps"], "unknown flag '--bogus' for 'ignite'", "see: ignite --help"),
    (["ps", "--bogus"], "unknown flag '--bogus' for 'ignite ps'", "see: ignite ps --help"),
    (["run", "--pull", "a\x1b[2Jb", "x"], "invalid value 'a\\x1b[2Jb' for --pull",
     "use missing, always or never"),
    (["run", "--pull", "it's", "x"], 'invalid value "it\'s" for --pull',
     "use missing, always or never"),
    (["run", "--cpus", "it's\u202e", "x"], 'invalid value "it\'s\\u202e" for --cpus',
     "use a whole number"),
    (["ps", "x\u202ey"], "unexpected argument 'x\\u202ey' for 'ignite ps'", "see: "),
])
def test_command_line_errors_name_the_flag_and_command(ignite: Ignite, args: list[str],
                                                       message: str, hint: str) -> None:
    res = ignite(*args, check=False)
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert len(lines) == 2 and lines[0] == f"error: {message}", res.stderr
    assert lines[1].startswith(f"  hint: {hint}"), res.stderr


def test_an_unknown_network_plugin_lists_every_plugin() -> None:
    from ignitevm.cli.vmspec import vm_from_args
    from ignitevm.providers.network import PLUGINS

    with pytest.raises(InvalidInput, match="unknown network plugin 'foo'") as e:
        vm_from_args(_vm_args("img", "--network-plugin", "foo"))
    assert e.value.hint and all(p in e.value.hint for p in PLUGINS), e.value.hint


def test_empty_ignite_config_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ignitevm.cli.vmspec import vm_from_args

    cfg = tmp_path / "empty.yaml"
    cfg.write_text("")
    with pytest.raises(InvalidInput, match="Kind and APIVersion must be set"):
        vm_from_args(_vm_args("img", "--ignite-config", str(cfg)))


def test_completion_scripts(ignite: Ignite) -> None:
    bash = ignite("completion", "bash").stdout
    assert "complete -F _ignite ignite" in bash and '"image") words=' in bash
    assert "complete -c ignite" in ignite("completion", "fish").stdout
    res = ignite("pss", check=False)
    assert res.returncode == 1 and "did you mean 'ps'" in res.stderr


def test_spec_ssh_renders_as_ignites_struct() -> None:
    vm = _vm()
    vm.spec.ssh = True
    assert render("{{.Spec.SSH}}", vm) == "{true }"
    vm.spec.ssh = "/root/.ssh/id.pub"
    assert render("{{.Spec.SSH}}", vm) == "{false /root/.ssh/id.pub}"


@pytest.mark.parametrize(("argv", "want"), [
    # a command's flags before the command's name, as cobra took them
    (["--runtime=qemu", "--network-plugin", "user", "run", "img"],
     ["run", "--runtime=qemu", "--network-plugin", "user", "img"]),
    (["--root", "/r", "-q", "vm", "create", "img"], ["--root", "/r", "-q", "vm", "create", "img"]),
    (["--runtime", "qemu", "vm", "start", "x"], ["vm", "start", "--runtime", "qemu", "x"]),
    # bare --ssh takes no value: the next word stays the image
    (["run", "--name=n", "--ssh", "img"], ["run", "--name=n", "--ssh=true", "img"]),
    (["run", "--ssh=/k.pub", "img"], ["run", "--ssh=/k.pub", "img"]),
    (["exec", "vm", "--", "x", "--ssh"],
     ["exec", "--exec-dashdash", "--exec-argv=:x", "--exec-argv=:--ssh", "vm"]),
    (["exec", "--ssh", "vm", "ls"], ["exec", "--ssh", "vm", "ls"]),
])
def test_command_line_read_as_ignite_did(argv: list[str], want: list[str]) -> None:
    from ignitevm.cli.parser import normalize

    assert normalize(argv) == want


@pytest.mark.parametrize(("argv", "vm", "command", "interactive"), [
    (["-i", "web", "--", "/bin/busybox", "wc", "-l"], "web", ["/bin/busybox", "wc", "-l"], True),
    (["-i", "web", "/bin/busybox", "wc", "-l"], "web", ["/bin/busybox", "wc", "-l"], True),
    (["-i", "web", "--", "busybox", "--", "wc"], "web", ["busybox", "--", "wc"], True),
    (["web", "--", "sh", "-c", "x", "--", "-y"], "web", ["sh", "-c", "x", "--", "-y"], False),
    (["web", "-t", "--", "sh"], "web", ["sh"], False),
    (["-it", "web", "--", "sh", "-i"], "web", ["sh", "-i"], True),
    (["web", "ls", "-l", "--", "x"], "web", ["ls", "-l", "--", "x"], False),
])
def test_exec_takes_the_command_verbatim(argv: list[str], vm: str, command: list[str],
                                         interactive: bool) -> None:
    from ignitevm.cli.guest import exec_command
    from ignitevm.cli.parser import build_parser, normalize

    words = normalize(["exec", *argv])
    args = build_parser(words).parse_args(words)
    assert exec_command(args) == command
    assert (args.vm, args.interactive) == (vm, interactive)


def test_command_words_match_the_tree() -> None:
    from ignitevm.cli.completion import tree
    from ignitevm.cli.parser import COMMANDS, GROUPS

    paths = [p.split() for p in tree() if p]
    assert {p[0] for p in paths} == COMMANDS
    for group in ("image", "kernel", "vm"):
        assert {p[1] for p in paths if len(p) == 2 and p[0] == group} == GROUPS[group]


def test_version_looks_like_ignites(ignite: Ignite) -> None:
    out = ignite("version").stdout.splitlines()
    assert out[0].startswith('Ignite version: version.Info{Major:"0", Minor:')
    assert 'KernelImage:version.Image{Name:"debian-cloud", Tag:"latest", Delimeter:":"}' in out[0]
    assert out[1].startswith("QEMU version: ")
    import json

    info = json.loads(ignite("version", "-o", "json").stdout)
    assert set(info["igniteVersion"]) >= {"major", "minor", "gitVersion", "platform",
                                          "sandboxImage", "kernelImage"}


def test_ignited_commands(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    def ignited(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "import sys; from ignitevm.daemon.main "
                               "import main; sys.exit(main())", *args], capture_output=True,
                              text=True,
                              env={"IGNITE_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"})

    assert ignited("version", "-o", "short").stdout.startswith("v")
    assert "complete -F _ignited ignited" in ignited("completion").stdout
    res = ignited("gitops", "ftp://example/x")
    assert res.returncode == 1 and "unsupported endpoint scheme 'ftp'" in res.stderr
    res = ignited("gitops", f"file://{tmp_path}/none")
    assert res.returncode == 1 and "error: git failed" in res.stderr
    assert "Traceback" not in res.stderr
    res = ignited("daemon", "--interval", "1x")
    assert res.returncode == 1 and "invalid duration" in res.stderr


def test_accel_from_flag_env_or_configuration(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import argparse

    from ignitevm.cli.common import starting_context

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("apiVersion: ignite.weave.works/v1alpha4\nkind: Configuration\n"
                   "spec:\n  accel: tcg\n")

    def ctx(**kw: object) -> str | None:
        ns = argparse.Namespace(root=str(tmp_path), accel=None, ignite_config=str(cfg))
        vars(ns).update(kw)
        return starting_context(ns).accel

    monkeypatch.delenv("IGNITE_ACCEL", raising=False)
    assert ctx() == "tcg"
    assert ctx(accel="kvm") == "kvm"
    monkeypatch.setenv("IGNITE_ACCEL", "auto")
    assert ctx() == "auto"
    monkeypatch.setenv("IGNITE_ACCEL", "hvf")
    with pytest.raises(InvalidInput, match="invalid accelerator 'hvf'"):
        ctx()


@pytest.mark.parametrize(("n", "text"), [(0, "0B"), (999, "999B"), (1000, "1kB"),
                                         (1_711_000_000, "1.711GB"), (4096, "4.096kB")])
def test_prune_sizes_read_as_dockers(n: int, text: str) -> None:
    from ignitevm.cli.image import _docker_size

    assert _docker_size(n) == text


@pytest.mark.parametrize(("text", "where", "problem"), [
    (b"not: [yaml\n", ":2:1", "expected ',' or ']', but got '<stream end>' "
     "(while parsing a flow sequence at 1:6)"),
    (b"a: *x\n", ":1:4", "alias"),  # (manifests take none; a Configuration has no x)
    (b"kind: VM\nspec:\n  cpus: 1\n bad: x\n", ":4:2", ""),
    (b"kind: VM\nname: \"a\x1bb\"\n", ":2:9", "unacceptable character #x001b"),
    (b"\xff\xfekind: VM\n", "", "is not UTF-8 text (byte 1)"),
])
def test_a_broken_manifest_is_one_line(ignite: Ignite, tmp_path, text: bytes,  # type: ignore[no-untyped-def]
                                       where: str, problem: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(text)
    for args in (["create", "--config", str(bad)], ["rm", "--config", str(bad)],
                 ["create", "img", "--ignite-config", str(bad)]):
        res = ignite(*args, check=False)
        assert res.returncode == 1, res
        errors = [line for line in res.stderr.splitlines() if not line.startswith("  hint: ")]
        assert len(errors) == 1 and errors[0].startswith("error: "), res.stderr
        assert f"{bad}{where}" in errors[0] and problem in errors[0], res.stderr
    assert not (ignite.root / "vm").exists() or not any((ignite.root / "vm").iterdir())


def test_an_error_line_escapes_what_it_quotes(capsys: pytest.CaptureFixture[str]) -> None:
    """An error's brief and hint may quote a registry, an image or a guest: the line
    shows their control characters as escapes, never raw to the terminal."""
    from ignitevm.cli.main import _guarded
    from ignitevm.errors import IgniteError

    def fail() -> int:
        raise IgniteError("registry said \x1b]0;owned\x07 \x9b2J", hint="try \x1b[31magain\n")

    assert _guarded(fail, debug=False) == 1
    err = capsys.readouterr().err
    assert err == ("error: registry said \\x1b]0;owned\\x07 \\x9b2J\n"
                   "  hint: try \\x1b[31magain\\n\n")


@pytest.mark.parametrize(("args", "message", "hint"), [
    (["kernel", "import", "out/bzImage"],
     "unknown kernel 'out/bzImage': no such file, and not a valid image reference "
     "(repository names must be lowercase)", "check the path of the bzImage/vmlinux file"),
    (["image", "import", "build/Rootfs.img"],
     "unknown image 'build/Rootfs.img': no such file, and not a valid image reference "
     "(repository names must be lowercase)", "check the path of the archive or folder"),
    (["kernel", "import", "out/vmlinux.bin@v1"],
     "unknown kernel 'out/vmlinux.bin@v1': no such file, and not a valid image reference "
     "(bad digest 'v1')", "check the path"),
    (["kernel", "import", "localhost:99999/k:1"],
     "invalid image reference 'localhost:99999/k:1': port 99999 of registry host "
     "'localhost:99999' is out of range (1-65535)", "use a name like"),
])
def test_a_missing_file_is_not_only_a_bad_reference(ignite: Ignite, args: list[str],
                                                    message: str, hint: str) -> None:
    """A path that is no file is not read as a reference only: the line says both
    (and no lowercase name to pull from Docker Hub); a real reference's own fault
    stays as it is."""
    res = ignite(*args, check=False)
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert len(lines) == 2 and lines[0] == f"error: {message}", res.stderr
    assert lines[1].startswith(f"  hint: {hint}") and "bzimage" not in lines[1], res.stderr


@pytest.mark.parametrize(("exc", "line", "hint"), [
    (OSError(28, "No space left on device", "/var/lib/ignite/image/x"),
     "error: No space left on device: /var/lib/ignite/image/x", "free space there"),
    (PermissionError(13, "Permission denied", b"/var/lib/ignite\x1b[2J"),
     "error: Permission denied: /var/lib/ignite\\x1b[2J", "check its permissions"),
    (OSError(18, "Invalid cross-device link", "/a", None, "/b"),
     "error: Invalid cross-device link: /a -> /b", "run again with --debug-trace"),
])
def test_the_host_refusing_is_not_a_bug(capsys: pytest.CaptureFixture[str], exc: OSError,
                                        line: str, hint: str) -> None:
    """An OSError the host raises (a full disk, permissions on the state root) is said
    as such, with a hint, and not called a bug in ignite."""
    from ignitevm.cli.main import _guarded

    def fail() -> int:
        raise exc

    assert _guarded(fail, debug=False) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == line and lines[1].startswith(f"  hint: {hint}"), lines
    assert "a bug in ignite" not in "".join(lines)
    with pytest.raises(OSError):
        _guarded(fail, debug=True)
