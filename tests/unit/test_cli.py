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
])
def test_errors_are_one_line(ignite: Ignite, args: list[str], message: str) -> None:
    res = ignite(*args, check=False)
    assert res.returncode == 1
    assert res.stderr.startswith("error: ") and message in res.stderr
    assert "Traceback" not in res.stderr


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
