"""`ignite image import --runtime containerd` against a real, private containerd.

The image comes out the same as when its archive is imported directly (same
identity, same root file system); every bad case ends in one `error:` line,
exit code 1, no Image, and no lease left in containerd.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Ignite, Result
from tests.containerd.conftest import Images, one_layer
from tests.helpers.containerd import Containerd
from tests.registry.conftest import fails

pytestmark = pytest.mark.containerd


def _import(ig: Ignite, ctrd: Containerd, *args: str, check: bool = True) -> Result:
    return ig("image", "import", "--runtime", "containerd", "--containerd-socket",
              str(ctrd.socket), *args, check=check)


def _fails(ig: Ignite, ctrd: Containerd, *args: str, namespace: str = "default") -> str:
    err = fails(ig, "image", "import", "--runtime", "containerd", "--containerd-socket",
                str(ctrd.socket), *args)
    assert ctrd.leases(namespace) == []  # released on the way out
    return err


def _images(ig: Ignite) -> dict[str, str]:
    """Image name -> identity."""
    objs = json.loads(ig("image", "ls", "-o", "json").stdout)
    return {o["metadata"]["name"]: o["status"]["ociSource"]["id"] for o in objs}


def _tree(ext4: Path, out: Path) -> dict[str, tuple[object, ...]]:
    """What an image's file system holds: per path its type, mode, owner and content."""
    out.mkdir()
    subprocess.run(["debugfs", "-R", f"rdump / {out}", str(ext4)], check=True,
                   capture_output=True)
    tree: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(out):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            body: object = None
            if stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                body = p.read_bytes()
            tree[str(p.relative_to(out))] = (st.st_mode, st.st_uid, st.st_gid, body)
    return tree


def _ext4(ig: Ignite) -> Path:
    (found,) = ig.root.rglob("image.ext4")
    return found


def test_same_image_as_the_archive(ig: Ignite, containerd: Containerd, box: tuple[Path, str],
                                   tmp_path: Path) -> None:
    archive, digest = box
    res = _import(ig, containerd, "docker.io/test/box:1")
    assert "Imported OCI image 'test/box:1'" in res.stderr
    assert _images(ig) == {"test/box:1": digest}  # the manifest digest, as for the archive
    assert containerd.leases() == []
    direct = Ignite(tmp_path / "direct")
    direct("image", "import", str(archive))
    assert list(_images(direct).values()) == [digest]
    tree = _tree(_ext4(ig), tmp_path / "a")
    assert tree == _tree(_ext4(direct), tmp_path / "b")
    assert "bin/busybox" in tree and "sbin/init" in tree and "etc/junk" not in tree
    # The archive imported beside it is the same image: its file is shared, not rebuilt.
    ig("image", "import", str(archive), "--name", "fromarchive")
    assert _images(ig) == {"test/box:1": digest, "fromarchive:latest": digest}
    # A second import from containerd finds it there.
    again = _import(ig, containerd, "docker.io/test/box:1")
    assert "already imported" in again.stderr


def test_short_name_and_configuration(ig: Ignite, containerd: Containerd,
                                      box: tuple[Path, str], tmp_path: Path) -> None:
    """The Configuration's spec.runtime (as Ignite) and our socket/namespace fields (the
    socket as an address, as ctr takes it too); a short name is looked up in its full
    form, as containerd names what it pulls."""
    _, digest = box
    containerd.load(box[0], "elsewhere")
    config = tmp_path / "config.yaml"
    config.write_text("apiVersion: ignite.weave.works/v1alpha4\nkind: Configuration\n"
                      f"spec:\n  runtime: containerd\n  containerdSocket: unix://{containerd.socket}\n"
                      "  containerdNamespace: elsewhere\n")
    ig("image", "import", "--ignite-config", str(config), "test/box:1", "--name", "mine")
    assert _images(ig) == {"mine:latest": digest}
    assert containerd.leases("elsewhere") == []
    # The flag wins over the Configuration (the image is not in "nothing-here").
    err = fails(ig, "image", "import", "--ignite-config", str(config),
                "--containerd-namespace", "nothing-here", "test/box:1")
    assert "no image test/box:1 in namespace nothing-here" in err


def test_image_not_in_namespace(ig: Ignite, containerd: Containerd,
                                box: tuple[Path, str]) -> None:
    err = _fails(ig, containerd, "docker.io/library/alpine:3.19")
    assert "containerd has no image docker.io/library/alpine:3.19 in namespace default " \
        "(it has: docker.io/test/box:1" in err
    assert "ctr -n default images pull docker.io/library/alpine:3.19" in err
    err = _fails(ig, containerd, "docker.io/test/box:1", "--containerd-namespace", "empty",
                 namespace="empty")
    assert "(it has: none)" in err and "it is in namespace default" in err
    assert "--containerd-namespace default" in err


def test_no_socket(ig: Ignite, tmp_path: Path) -> None:
    err = fails(ig, "image", "import", "--runtime", "containerd", "--containerd-socket",
                str(tmp_path / "none.sock"), "docker.io/test/box:1")
    assert f"no containerd socket at {tmp_path / 'none.sock'}" in err
    assert "is containerd running?" in err


def test_nothing_listening(ig: Ignite) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as d, socket.socket(socket.AF_UNIX) as s:
        s.bind(f"{d}/dead.sock")  # bound, never listening: connections are refused
        err = fails(ig, "image", "import", "--runtime", "containerd", "--containerd-socket",
                    f"{d}/dead.sock", "docker.io/test/box:1")
    assert "containerd is not listening" in err and "connection refused" in err


def test_permission_denied(containerd: Containerd, box: tuple[Path, str]) -> None:
    """An unprivileged user cannot reach root's socket (the CLI runs as nobody)."""
    import shutil
    import sys
    import tempfile

    from tests.conftest import REPO

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is not installed")
    mode = containerd.dir.stat().st_mode
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        os.chmod(d, 0o777)
        env = {"PATH": os.environ["PATH"], "IGNITE_ROOT": f"{d}/root", "HOME": d,
               "PYTHONPATH": str(REPO)}
        # Its folder closed to others (0700), then open with the socket itself root's (0660).
        for folder_mode, words in ((0o700, "permission denied reaching containerd's socket"),
                                   (0o755, "permission denied on containerd's socket")):
            containerd.dir.chmod(folder_mode)
            try:
                res = subprocess.run(
                    [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                     sys.executable, "-m", "ignitevm", "image", "import", "--runtime",
                     "containerd", "--containerd-socket", str(containerd.socket),
                     "docker.io/test/box:1"],
                    env=env, capture_output=True, text=True, timeout=300, cwd=d)
            finally:
                containerd.dir.chmod(stat.S_IMODE(mode))
            assert res.returncode == 1, res
            errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
            assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
            assert words in errors[0], res.stderr
            assert "run as root" in res.stderr


def test_wrong_platform(ig: Ignite, containerd: Containerd, images: Images) -> None:
    arch = "arm64" if os.uname().machine == "x86_64" else "amd64"
    archive, _ = images.build("docker.io/test/foreign:1", [one_layer("foreign")], arch=arch)
    containerd.load(archive, "default", "--all-platforms")
    err = _fails(ig, containerd, "docker.io/test/foreign:1")
    assert f"has no linux/{'amd64' if arch == 'arm64' else 'arm64'} image " \
        f"(it has: linux/{arch})" in err
    # Asked for, the other platform's content is not in containerd (imported for this host).
    archive, _ = images.build("docker.io/test/multi:1", [one_layer("multi")], other_arch=True)
    containerd.load(archive)
    err = _fails(ig, containerd, "docker.io/test/multi:1", "--platform", f"linux/{arch}")
    assert "containerd lacks sha256:" in err
    assert f"ctr -n default content fetch --platform linux/{arch} docker.io/test/multi:1" in err


def test_missing_content(ig: Ignite, containerd: Containerd, images: Images) -> None:
    """A blob containerd no longer has (garbage-collected, or never fetched)."""
    archive, manifest = images.build("docker.io/test/gone:1", [one_layer("gone")])
    containerd.load(archive)
    layer = _manifest(containerd, manifest)["layers"][0]["digest"]
    containerd.ctr("content", "rm", layer)
    err = _fails(ig, containerd, "docker.io/test/gone:1")
    assert f"containerd lacks {layer} of docker.io/test/gone:1 (namespace default)" in err
    assert "ctr -n default content fetch docker.io/test/gone:1" in err


def _manifest(containerd: Containerd, digest: str) -> dict:  # type: ignore[type-arg]
    return json.loads((containerd.content_dir / digest[7:]).read_bytes())


@pytest.mark.parametrize("damage", ["altered", "truncated"])
def test_damaged_content(ig: Ignite, containerd: Containerd, images: Images,
                         damage: str) -> None:
    """containerd's content is as untrusted as any image: a layer whose bytes were changed
    in its store, or cut short, is refused while it streams. (An uncompressed layer: only
    its digest tells the altered one. A grown blob cannot be had: containerd sends no more
    than the size it recorded; tests/unit/test_containerd_wire.py covers that check.)"""
    name = f"docker.io/test/{damage}:1"
    archive, manifest = images.build(name, [one_layer(damage)], compression=None)
    containerd.load(archive)
    layer = _manifest(containerd, manifest)["layers"][0]["digest"]
    blob = containerd.content_dir / layer[7:]
    data = blob.read_bytes()
    blob.chmod(0o644)
    if damage == "altered":
        blob.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        blob.write_bytes(data[:-10])
    err = _fails(ig, containerd, name)
    if damage == "altered":
        assert f"layer {layer} of containerd image {name} (namespace default) does not " \
            "match its digest" in err
    else:
        assert f"{layer} of {name} from containerd is truncated ({len(data) - 10} of " \
            f"{len(data)} bytes)" in err


def test_lease_keeps_content_from_gc(containerd: Containerd, images: Images) -> None:
    """While the import's lease holds a blob, removing its image does not free it."""
    from ignitevm.images.containerd.client import Client

    archive, manifest = images.build("docker.io/test/leased:1", [one_layer("leased")])
    containerd.load(archive)
    with Client(str(containerd.socket), "default") as client:
        with client.lease() as lease:
            assert lease in containerd.leases()
            # (it expires if the process holding it dies)
            assert "containerd.io/gc.expire=" in containerd.ctr("leases", "ls")
            client.hold(lease, manifest)
            containerd.ctr("images", "rm", "--sync", "docker.io/test/leased:1")
            assert manifest in containerd.ctr("content", "ls", "-q").split()
            assert client.content_size(manifest) is not None
        assert lease not in containerd.leases()


def test_kernel_from_containerd(ig: Ignite, containerd: Containerd, images: Images) -> None:
    """Kernel images (Ignite's layout) come from containerd the same way."""
    from tests.helpers.images import KERNEL_VERSION, kernel_layers

    archive, digest = images.build("docker.io/test/kernel:1", kernel_layers())
    containerd.load(archive)
    ig("kernel", "import", "--runtime", "containerd", "--containerd-socket",
       str(containerd.socket), "test/kernel:1")
    (kernel,) = json.loads(ig("kernel", "ls", "-o", "json").stdout)
    assert kernel["metadata"]["name"] == "test/kernel:1"
    assert kernel["status"]["version"] == KERNEL_VERSION
    assert kernel["status"]["ociSource"]["id"] == digest
    assert containerd.leases() == []
    err = fails(ig, "kernel", "import", "--runtime", "containerd", "--containerd-socket",
                str(containerd.socket), "test/nokernel:1")
    assert "containerd has no image test/nokernel:1 in namespace default" in err


def test_a_file_is_a_file(ig: Ignite, images: Images, tmp_path: Path) -> None:
    """With --runtime containerd a path is still imported as an archive (no containerd
    needed): the runtime only says where names are looked up."""
    archive, digest = images.build("docker.io/test/file:1", [one_layer("file")])
    ig("image", "import", "--runtime", "containerd", "--containerd-socket",
       str(tmp_path / "none.sock"), str(archive), "--name", "file")
    assert _images(ig) == {"file:latest": digest}


def test_docker_archive_loaded(ig: Ignite, containerd: Containerd, tmp_path: Path) -> None:
    """An image `ctr images import` made from a docker-save archive (Docker media types,
    a manifest containerd wrote): the same root file system as the archive imported
    directly, under containerd's manifest digest (the archive carries none)."""
    from tests.helpers.images import busybox_image

    archive = busybox_image(tmp_path / "docker.tar", "docker.io/test/dockerbox:1")
    containerd.load(archive)
    (line,) = [x for x in containerd.ctr("images", "ls").splitlines()
               if x.startswith("docker.io/test/dockerbox:1 ")]
    _, media, digest = line.split()[:3]
    assert media.startswith("application/vnd.docker.")
    _import(ig, containerd, "docker.io/test/dockerbox:1")
    assert _images(ig) == {"test/dockerbox:1": digest}
    direct = Ignite(tmp_path / "direct")
    direct("image", "import", str(archive))
    assert _tree(_ext4(ig), tmp_path / "a") == _tree(_ext4(direct), tmp_path / "b")
