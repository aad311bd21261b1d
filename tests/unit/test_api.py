"""Sizes, references, defaults, validation and the v1alpha4 JSON shape."""

from __future__ import annotations

import json

import pytest

from ignitevm.api import codec, refs
from ignitevm.api.defaults import default_vm, validate_vm
from ignitevm.api.types import VM, Size
from ignitevm.errors import InvalidInput
from ignitevm.util.sizes import format_size, human_size, parse_size


@pytest.mark.parametrize(("text", "n"), [
    ("512MB", 512 << 20), ("4gb", 4 << 30), ("2048MB", 2 << 30), ("1024", 1024),
    ("1k", 1024), ("3 GB", 3 << 30), ("1megabyte", 1 << 20), ("0", 0),
])
def test_parse_size(text: str, n: int) -> None:
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["12XB", "1.5GB", "1Gb", "1Mb", "-1MB", "GB", "", "1 G B"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_size(text)


def test_size_forms() -> None:
    assert format_size(512 << 20) == "512MB"
    assert format_size(1500 << 20) == "1500MB"
    assert format_size(4 << 30) == "4GB"
    assert format_size(0) == "0B"
    assert human_size(1 << 30) == "1024.0 MB"
    assert human_size(2 << 30) == "2.0 GB"
    assert human_size(512 << 20) == "512.0 MB"
    assert human_size(0) == "0 B"


@pytest.mark.parametrize(("ref", "want"), [
    ("base", "base:latest"),
    ("ubuntu:22.04", "ubuntu:22.04"),
    ("docker.io/library/ubuntu", "ubuntu:latest"),
    ("weaveworks/ignite-ubuntu", "weaveworks/ignite-ubuntu:latest"),
    ("localhost:5000/team/app:1", "localhost:5000/team/app:1"),
])
def test_normalize(ref: str, want: str) -> None:
    assert refs.normalize(ref) == want


@pytest.mark.parametrize("ref", ["", "Bad", "a/b@sha256:" + "a" * 6, "x:"])
def test_normalize_refuses(ref: str) -> None:
    with pytest.raises(InvalidInput):
        refs.normalize(ref)


def test_defaults_match_ignite() -> None:
    vm = VM()
    vm.spec.image.oci = "base"
    default_vm(vm)
    validate_vm(vm)
    assert vm.spec.cpus == 1
    assert vm.spec.memory == Size(512 << 20)
    assert vm.spec.disk_size == Size(4 << 30)
    assert vm.spec.image.oci == "base:latest"
    assert vm.spec.kernel.cmd_line.startswith("console=ttyS0")
    assert vm.status.id_prefix == "ignite"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("cpus", 0, "--cpus"), ("cpus", 1000, "--cpus"),
    ("memory", Size(1 << 20), "--memory"),
])
def test_validation(field: str, value: object, message: str) -> None:
    vm = VM()
    vm.spec.image.oci = "base"
    default_vm(vm)
    setattr(vm.spec, field, value)
    with pytest.raises(InvalidInput, match=message):
        validate_vm(vm)


def test_json_round_trip_and_shape() -> None:
    text = """
apiVersion: ignite.weave.works/v1alpha4
kind: VM
metadata:
  name: my-vm
  uid: 0123456789abcdef
spec:
  image:
    oci: weaveworks/ignite-ubuntu
  cpus: 2
  memory: 1500MB
  diskSize: 10GB
  ssh: true
  copyFiles:
  - hostPath: /a
    vmPath: /b
"""
    vm = codec.decode_object(codec.load_manifest(text, "vm.yaml"), "vm.yaml")
    assert isinstance(vm, VM)
    assert vm.spec.memory == Size(1500 << 20)
    assert vm.spec.ssh is True
    out = json.loads(codec.to_json(vm))
    assert out["spec"]["memory"] == "1500MB" and out["spec"]["diskSize"] == "10GB"
    assert out["spec"]["copyFiles"] == [{"hostPath": "/a", "vmPath": "/b"}]
    assert list(out)[:2] == ["kind", "apiVersion"]
    again = codec.decode_json(codec.to_json(vm).encode(), VM)
    assert again == vm


def test_manifest_versions() -> None:
    old = "apiVersion: ignite.weave.works/v1alpha2\nkind: VM\nstatus:\n  ipAddresses: [1.2.3.4]\n"
    data = codec.load_manifest(old, "f")
    assert data["status"]["network"]["ipAddresses"] == ["1.2.3.4"]
    with pytest.raises(InvalidInput, match="no longer supported"):
        codec.load_manifest("apiVersion: ignite.weave.works/v1alpha1\nkind: VM\n", "f")
    with pytest.raises(InvalidInput, match="kind and apiVersion"):
        codec.load_manifest("", "f")
    with pytest.raises(InvalidInput, match="unknown kind"):
        codec.decode_object({"apiVersion": "ignite.weave.works/v1alpha4", "kind": "kernel"}, "f")
