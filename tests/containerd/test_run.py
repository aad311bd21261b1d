"""`ignite create/run --runtime containerd`: a missing image (and `--kernel-image`) is
read from a real, private containerd's store, never pulled from a registry; `--pull`
missing / always / never as for a registry. Every bad case ends in one `error:` line,
exit code 1, no VM, no Image and no lease left in containerd.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Ignite
from tests.containerd.conftest import Images, one_layer
from tests.helpers.containerd import Containerd
from tests.registry.conftest import fails

pytestmark = pytest.mark.containerd


@pytest.fixture(scope="module")
def kernel(containerd: Containerd, images: Images) -> str:
    """docker.io/test/kernel:1 (Ignite's kernel layout) in the default namespace: its digest."""
    from tests.helpers.images import kernel_layers

    archive, digest = images.build("docker.io/test/kernel:1", kernel_layers())
    containerd.load(archive)
    return digest


def _flags(ctrd: Containerd, *more: str) -> list[str]:
    return [
        "--runtime",
        "containerd",
        "--containerd-socket",
        str(ctrd.socket),
        "--kernel-image",
        "test/kernel:1",
        "--network-plugin",
        "none",
        *more,
    ]


def _objects(ig: Ignite, kind: str) -> dict[str, str]:
    """Name -> identity of the images or kernels here."""
    objs = json.loads(ig(kind, "ls", "-o", "json").stdout)
    return {o["metadata"]["name"]: o["status"]["ociSource"]["id"] for o in objs}


def _vms(ig: Ignite) -> list[str]:
    return ig("ps", "-a", "-q").stdout.split()


def _fails(ig: Ignite, ctrd: Containerd, *args: str, namespace: str = "default") -> str:
    """A create that must fail cleanly: no VM, no image, no kernel, no lease."""
    kernels = ig("kernel", "ls", "-q").stdout
    vms = _vms(ig)
    err = fails(ig, "create", *args)
    assert _vms(ig) == vms and ig("kernel", "ls", "-q").stdout == kernels
    assert ctrd.leases(namespace) == []
    return err


def test_create_takes_image_and_kernel_from_containerd(
    ig: Ignite, containerd: Containerd, box: tuple[Path, str], kernel: str
) -> None:
    """No registry is involved (docker.io/test/box cannot be pulled): both come from
    containerd, under the same identities as `image import --runtime containerd`."""
    _, digest = box
    ig("create", "docker.io/test/box:1", *_flags(containerd), "--name", "a")
    assert _objects(ig, "image") == {"test/box:1": digest}
    assert _objects(ig, "kernel") == {"test/kernel:1": kernel}
    (vm,) = json.loads(ig("vm", "ls", "-o", "json").stdout)
    assert vm["spec"]["image"]["oci"] == "test/box:1"
    assert vm["spec"]["kernel"]["oci"] == "test/kernel:1"
    assert vm["status"]["image"]["id"] == digest
    assert containerd.leases() == []
    # Here now: found without --runtime, as a pulled image would be.
    ig("create", "test/box:1", *_flags(containerd)[4:], "--name", "b")
    assert len(_vms(ig)) == 2
    # --pull always reads it again: same content, nothing new.
    ig("create", "test/box:1", *_flags(containerd, "--pull", "always"), "--name", "c")
    assert _objects(ig, "image") == {"test/box:1": digest}
    assert len(_vms(ig)) == 3


def test_pull_never_and_bad_input(
    ig: Ignite, containerd: Containerd, box: tuple[Path, str], kernel: str, tmp_path: Path
) -> None:
    err = _fails(ig, containerd, "docker.io/test/box:1", *_flags(containerd, "--pull", "never"))
    assert "can't find image: no ID/name matches for 'test/box:1'" in err
    err = _fails(ig, containerd, "docker.io/library/alpine:3.19", *_flags(containerd))
    assert (
        "can't find image 'alpine:3.19' here, nor take it from containerd: containerd has"
        " no image alpine:3.19 in namespace default" in err
    )
    assert "ctr -n default images pull docker.io/library/alpine:3.19" in err
    err = _fails(
        ig,
        containerd,
        "docker.io/test/box:1",
        *_flags(containerd, "--containerd-namespace", "empty"),
        namespace="empty",
    )
    assert "in namespace empty" in err and "--containerd-namespace default" in err
    # The image is there, the kernel is not: no VM (the image, whole, stays, as a pulled
    # one does: the next try reads it no more).
    res = ig(
        "create",
        "docker.io/test/box:1",
        *_flags(containerd)[:4],
        "--kernel-image",
        "test/nokernel:1",
        "--network-plugin",
        "none",
        check=False,
    )
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert res.returncode == 1 and len(errors) == 1 and "Traceback" not in res.stderr
    assert "can't find kernel 'test/nokernel:1' here, nor take it from containerd" in errors[0]
    assert _vms(ig) == [] and containerd.leases() == []
    ig("image", "rm", "test/box:1")
    sock = str(tmp_path / "none.sock")
    err = fails(
        ig,
        "create",
        "docker.io/test/box:1",
        "--runtime",
        "containerd",
        "--containerd-socket",
        sock,
        "--kernel-image",
        "test/kernel:1",
    )
    assert f"nor take it from containerd: no containerd socket at {sock}" in err
    assert "is containerd running?" in err
    err = fails(ig, "create", "docker.io/test/box:1", "--runtime", "docker")
    assert "images cannot be read from docker's store" in err
    assert _vms(ig) == [] and ig("kernel", "ls", "-q").stdout == ""


def test_configuration_runtime(
    ig: Ignite, containerd: Containerd, box: tuple[Path, str], kernel: str, tmp_path: Path
) -> None:
    """The Configuration's spec.runtime: containerd (as Ignite) sends `create` there too."""
    _, digest = box
    config = tmp_path / "config.yaml"
    config.write_text(
        "apiVersion: ignite.weave.works/v1alpha4\nkind: Configuration\n"
        f"spec:\n  runtime: containerd\n  containerdSocket: {containerd.socket}\n"
    )
    res = ig(
        "create",
        "--ignite-config",
        str(config),
        "docker.io/test/box:1",
        "--kernel-image",
        "test/kernel:1",
        "--network-plugin",
        "none",
        "--name",
        "cfg",
    )
    assert "ignored" not in res.stderr
    assert _objects(ig, "image") == {"test/box:1": digest}


def test_pull_always_takes_the_new_content(
    ig: Ignite, containerd: Containerd, images: Images, kernel: str
) -> None:
    """A name that containerd now gives other content: --pull always replaces the image,
    unless a VM uses it (then one clear error); missing keeps what is here."""
    name = "docker.io/test/moving:1"
    first, d1 = images.build(name, [one_layer("first")])
    second, d2 = images.build(name + "-b", [one_layer("second")])
    containerd.load(first)
    ig("create", name, *_flags(containerd), "--name", "u")
    assert _objects(ig, "image") == {"test/moving:1": d1}
    containerd.ctr("images", "rm", name)
    containerd.load(second)
    containerd.ctr("images", "tag", name + "-b", name)
    ig("create", name, *_flags(containerd), "--name", "v")  # missing: not read again
    assert _objects(ig, "image") == {"test/moving:1": d1}
    err = _fails(ig, containerd, name, *_flags(containerd, "--pull", "always"), "--name", "w")
    assert "now names other content" in err and "(u, v)" in err
    ig("rm", "u", "v")
    ig("create", name, *_flags(containerd, "--pull", "always"), "--name", "w")
    assert _objects(ig, "image") == {"test/moving:1": d2}
