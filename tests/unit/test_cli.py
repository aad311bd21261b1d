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
