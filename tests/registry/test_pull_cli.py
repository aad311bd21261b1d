"""`ignite image pull` and friends against real docker-registry processes on loopback.

Every bad input ends in one `error:` line, exit code 1, and no Image left behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import Ignite
from tests.helpers.registry import Registry
from tests.registry.conftest import fails

pytestmark = pytest.mark.registry


def test_pull_then_up_to_date(ig: Ignite, plain_registry: Registry) -> None:
    ref = f"{plain_registry.host}/test/busybox:1"
    res = ig("image", "pull", ref)
    assert res.stdout.strip() == ref
    assert "Downloaded newer image" in res.stderr and "Digest: sha256:" in res.stderr
    again = ig("image", "pull", ref)
    assert "Image is up to date" in again.stderr
    assert ig("image", "ls", "-q").stdout.strip().count("\n") == 0
    assert ig("image", "pull", "-q", ref).stdout.strip() == ig("image", "ls", "-q").stdout.strip()


def _debugfs(image: Path, request: str) -> str:
    import subprocess

    res = subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True,
                         text=True, check=True)
    return res.stdout


def test_unpacked_tree(ig: Ignite, plain_registry: Registry) -> None:
    """The pulled layers as the root file system has them: a whiteout removes, an opaque
    whiteout hides what the lower layer put in its folder, a hard link stays one."""
    import re

    from tests.helpers.images import HARD_LINKS, LOWER_ONLY, UPPER_FILE, WHITED_OUT

    uid = ig("image", "pull", "-q", f"{plain_registry.host}/test/busybox:1").stdout.strip()
    ext4 = ig.root / "image" / uid / "image.ext4"
    listing = _debugfs(ext4, "ls -p /srv/old").split()
    names = {entry.split("/")[5] for entry in listing if entry.count("/") >= 6}
    assert names == {".", "..", UPPER_FILE.rsplit("/", 1)[1]}, listing
    assert not {n.rsplit("/", 1)[1] for n in LOWER_ONLY} & names
    assert WHITED_OUT.rsplit("/", 1)[1] not in _debugfs(ext4, "ls -p /etc")
    stats = [_debugfs(ext4, f"stat /{name}") for name in HARD_LINKS]
    inodes = [re.search(r"Inode: (\d+)", st) for st in stats]
    assert all(inodes) and inodes[0].group(1) == inodes[1].group(1)  # type: ignore[union-attr]
    assert "Links: 2" in stats[0]
    assert _debugfs(ext4, f"cat /{HARD_LINKS[1]}") == "one file, two names\n"


def test_pull_by_digest(ig: Ignite, plain_registry: Registry,
                        test_layout: dict[str, str]) -> None:
    """repo@sha256:<digest> pulls that manifest; repo:tag@<digest> too (the digest wins
    over the tag), named as given."""
    host = plain_registry.host
    plain_registry.push(test_layout["busybox"], "test/digests:1")
    plain_registry.push(test_layout["zstd"], "test/digests:2")
    digests = {}
    for tag in ("1", "2"):
        ig("image", "pull", f"{host}/test/digests:{tag}")
        [doc] = json.loads(ig("image", "inspect", "-o", "json",
                              f"{host}/test/digests:{tag}").stdout)
        digests[tag] = doc["digest"]
    assert digests["1"] != digests["2"]
    by_digest = f"{host}/test/digests@{digests['1']}"
    res = ig("image", "pull", by_digest)
    assert res.stdout.strip() == by_digest and f"Digest: {digests['1']}" in res.stderr
    both = f"{host}/test/digests:1@{digests['2']}"
    res = ig("image", "pull", both)
    assert res.stdout.strip() == both and f"Digest: {digests['2']}" in res.stderr
    shown = {d["metadata"]["name"]: d["status"]["ociSource"]["id"] for d in json.loads(
        ig("image", "inspect", "-o", "json", by_digest, both).stdout)}
    assert shown == {by_digest: f"oci://{host}/test/digests@{digests['1']}",
                     both: f"oci://{host}/test/digests@{digests['2']}"}
    # (the same content as the tags' images: their files are shared, not built again)
    assert len(set(ig("image", "ls", "-q").stdout.split())) == 4
    wrong = "sha256:" + "0" * 64
    assert "has no manifest" in fails(ig, "image", "pull", f"{host}/test/digests@{wrong}")


def test_multi_arch(ig: Ignite, plain_registry: Registry) -> None:
    ig("image", "pull", f"{plain_registry.host}/test/multi:1")
    inspect = json.loads(ig("inspect", "image", f"{plain_registry.host}/test/multi:1").stdout)
    amd = inspect["status"]["ociSource"]["id"]
    ig("image", "pull", "--platform", "linux/arm64", "--name", "multi-arm",
       f"{plain_registry.host}/test/multi:1")
    arm = json.loads(ig("inspect", "image", "multi-arm").stdout)["status"]["ociSource"]["id"]
    assert amd != arm and amd.startswith("oci://") and arm.startswith("oci://")


def test_image_inspect(ig: Ignite, plain_registry: Registry) -> None:
    """`image inspect` shows what a Docker user looks for: digest, platform, run config."""
    import yaml

    host = plain_registry.host
    ref = f"{host}/test/busybox:1"
    pulled = ig("image", "pull", ref)
    [doc] = json.loads(ig("image", "inspect", "-o", "json", ref).stdout)
    digest = doc["digest"]
    assert f"Digest: {digest}" in pulled.stderr
    assert doc["status"]["ociSource"]["id"] == f"oci://{host}/test/busybox@{digest}"
    assert doc["repoDigests"] == [f"{host}/test/busybox@{digest}"]
    assert doc["platform"] == doc["status"]["platform"] == "linux/amd64"
    assert doc["metadata"]["name"] == ref and doc["kind"] == "Image"
    assert doc["config"] == {"Entrypoint": None, "Cmd": ["/sbin/init"], "Env": ["PATH=/bin"],
                             "ExposedPorts": {"80/tcp": {}},
                             "Labels": {"org.example.role": "test"}, "WorkingDir": "",
                             "User": ""}
    # (`ignite inspect image` prints the object alone, as Ignite's did)
    assert json.loads(ig("inspect", "image", ref).stdout)["status"]["platform"] == "linux/amd64"

    multi = f"{host}/test/multi:1"
    ig("image", "pull", "--platform", "linux/arm64", "--name", "multi-arm", multi)
    shown = ig("image", "inspect", "multi-arm").stdout
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].strip()
              for line in shown.splitlines() if line[:1].strip()}
    assert fields["Platform"] == "linux/arm64" and fields["Cmd"] == '["/bin/sh"]'
    assert fields["Entrypoint"] == "<none>" and fields["Labels"] == "<none>"
    assert fields["Digest"].startswith("sha256:") and fields["Name"] == "multi-arm:latest"
    both = yaml.safe_load(ig("image", "inspect", "-o", "yaml", "multi-arm", ref).stdout)
    assert [d["platform"] for d in both] == ["linux/arm64", "linux/amd64"]
    assert both[0]["digest"] != both[1]["digest"]

    kernel = f"{host}/test/kernel:1"
    ig("kernel", "import", kernel)
    [k] = json.loads(ig("kernel", "inspect", "-o", "json", kernel).stdout)
    assert k["kind"] == "Kernel" and k["platform"] == "linux/amd64"
    assert k["status"]["ociSource"]["id"] == f"oci://{host}/test/kernel@{k['digest']}"
    assert "Version:" in ig("kernel", "inspect", kernel).stdout
    assert "can't find image" in fails(ig, "image", "inspect", ref, "nosuch")


def test_no_platform(ig: Ignite, plain_registry: Registry) -> None:
    from ignitevm.images.registry.manifests import host_platform

    if host_platform() != "linux/amd64":
        pytest.skip("the test images' indexes are made for an amd64 host")
    err = fails(ig, "image", "pull", f"{plain_registry.host}/test/armonly:1")
    assert "has no image for linux/amd64 (it has: linux/arm64)" in err
    err = fails(ig, "image", "pull", "--platform", "linux/s390x",
                f"{plain_registry.host}/test/multi:1")
    assert "(it has: linux/amd64, linux/arm64)" in err
    assert "invalid platform" in fails(ig, "image", "pull", "--platform", "amd64",
                                       f"{plain_registry.host}/test/multi:1")


def test_zstd_layers(ig: Ignite, plain_registry: Registry) -> None:
    ig("image", "pull", f"{plain_registry.host}/test/zstd:1")


def test_unknown_tag_and_repository(ig: Ignite, plain_registry: Registry) -> None:
    assert "has no tag 2 in test/busybox" in fails(
        ig, "image", "pull", f"{plain_registry.host}/test/busybox:2")
    assert "has no repository test/nothing" in fails(
        ig, "image", "pull", f"{plain_registry.host}/test/nothing:1")


def test_unreachable(ig: Ignite, tmp_path: Path) -> None:
    from tests.helpers.registry import free_port

    assert "connection refused" in fails(ig, "image", "pull", f"127.0.0.1:{free_port()}/x:1")
    assert "unknown registry host" in fails(ig, "image", "pull", "registry.invalid/x:1")


@pytest.mark.parametrize("ref", ["Bad/Name:x", "x:", "app@sha256:12", "a//b",
                                 "localhost:99999/x", "127.0.0.1:0/x:1"])
def test_malformed(ig: Ignite, ref: str) -> None:
    assert "invalid image reference" in fails(ig, "image", "pull", ref)


@pytest.mark.parametrize("args", [
    ["image", "import", "localhost:99999/x"],
    ["kernel", "import", "localhost:99999/k:1"],
    ["create", "localhost:99999/x:1"],
    ["run", "localhost:99999/x:1"],
    ["create", "--kernel-image", "localhost:99999/k:1", "localhost:5000/x:1", "--pull", "never"],
])
def test_port_out_of_range(ig: Ignite, args: list[str]) -> None:
    """Everywhere a reference is taken: one line, not a traceback from the HTTP layer."""
    err = fails(ig, *args)
    assert "port 99999 of registry host 'localhost:99999' is out of range (1-65535)" in err


def test_lowercase_hint(ig: Ignite) -> None:
    err = fails(ig, "create", "--kernel-image", "localhost:5000/K:1", "127.0.0.1:1/x:1")
    assert "repository names must be lowercase" in err and "use 'localhost:5000/k:1'" in err
    assert "use 'alpine:3'" in fails(ig, "image", "pull", "Alpine:3")


def test_kernel_import_from_registry(ig: Ignite, plain_registry: Registry) -> None:
    ref = f"{plain_registry.host}/test/kernel:1"
    ig("kernel", "import", ref)
    listing = ig("kernel", "ls").stdout
    assert ref in listing and "5.10.51" in listing
    inspect = json.loads(ig("inspect", "kernel", ref).stdout)
    assert inspect["status"]["ociSource"]["id"].startswith(f"oci://{plain_registry.host}/")
    err = fails(ig, "kernel", "import", f"{plain_registry.host}/test/busybox:1")
    assert "kernel" in err


def test_create_pulls_missing(ig: Ignite, plain_registry: Registry) -> None:
    """`create` pulls the image and the kernel it names; --pull never refuses to."""
    image, kernel = (f"{plain_registry.host}/test/busybox:1",
                     f"{plain_registry.host}/test/kernel:1")
    res = ig("create", image, "--kernel-image", kernel, "--pull", "never", "--name", "a",
             check=False)
    assert res.returncode == 1 and "can't find image" in res.stderr
    ig("create", image, "--kernel-image", kernel, "--name", "vm1")
    assert ig("image", "ls", "-q").stdout.count("\n") == 1
    ig("create", image, "--kernel-image", kernel, "--name", "vm2", "--pull", "always")
    assert ig("image", "ls", "-q").stdout.count("\n") == 1  # same digest: nothing new


def test_mirrors_first_then_upstream(ig: Ignite, plain_registry: Registry, tmp_path: Path) -> None:
    """registries.conf v2: a dead mirror is skipped, a live one serves; blocked refuses."""
    from tests.helpers.registry import free_port

    conf = tmp_path / "registries.conf"
    conf.write_text(f"""
[[registry]]
prefix = "upstream.invalid/test"
location = "upstream.invalid/test"
[[registry.mirror]]
location = "127.0.0.1:{free_port()}/test"
[[registry.mirror]]
location = "{plain_registry.host}/test"

[[registry]]
location = "blocked.invalid"
blocked = true
""")
    mig = Ignite(ig.root, env=dict(ig.env, CONTAINERS_REGISTRIES_CONF=str(conf)))
    res = mig("image", "pull", "upstream.invalid/test/busybox:1")
    assert "trying the next place" in res.stderr
    inspect = json.loads(mig("inspect", "image", "upstream.invalid/test/busybox:1").stdout)
    assert inspect["status"]["ociSource"]["id"].startswith("oci://upstream.invalid/test/busybox@")
    assert "blocked" in fails(mig, "image", "pull", "blocked.invalid/x:1")
    # the mirrors are all tried, then upstream, whose error is the one shown
    assert "unknown registry host upstream.invalid" in fails(
        mig, "image", "pull", "upstream.invalid/test/nothing:1")


def test_image_that_cannot_run(ig: Ignite, plain_registry: Registry) -> None:
    err = fails(ig, "image", "pull", f"{plain_registry.host}/test/noinit:1")
    assert "no /sbin/init and no Entrypoint or Cmd" in err


def test_progress_on_a_terminal(ig: Ignite, plain_registry: Registry) -> None:
    """On a terminal: bars (per layer and a total) that vanish, then docker pull's lines;
    stdout keeps only the reference."""
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    env = {**os.environ, **ig.env, "IGNITE_ROOT": str(ig.root), "COLUMNS": "100"}
    ref = f"{plain_registry.host}/test/busybox:1"
    proc = subprocess.Popen([sys.executable, "-m", "ignitevm", "image", "pull", ref],
                            stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL,
                            env=env)
    os.close(follower)
    shown = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal's other end closed
            break
        if not data:
            break
        shown += data
    os.close(leader)
    assert proc.wait() == 0
    assert proc.stdout is not None and proc.stdout.read().decode().strip() == ref
    text = shown.decode(errors="replace")
    assert "total" in text and "Download complete" in text and "Status: Downloaded" in text


def test_missing_image_or_kernel_says_both(ig: Ignite, plain_registry: Registry) -> None:
    """Not here and not pullable: the error names both (as `ignite run no-such-image` did)."""
    err = fails(ig, "create", "no-such-image")
    assert "can't find image 'no-such-image:latest' here, and pulling " \
           "docker.io/library/no-such-image:latest failed" in err
    ig("image", "pull", f"{plain_registry.host}/test/busybox:1")
    err = fails(ig, "create", f"{plain_registry.host}/test/busybox:1", "--kernel-image",
                f"{plain_registry.host}/test/nokernel:1")
    assert "can't find kernel" in err and "has no repository test/nokernel" in err


@pytest.mark.parametrize("args", [
    ["image", "import", "out/rootfs.img"],
    ["kernel", "import", "out/vmlinux.bin"],
    ["create", "out/rootfs.img"],
    ["run", "build/app.tar.zst"],
])
def test_missing_path_says_so(ig: Ignite, args: list[str]) -> None:
    """A missing file whose name is also a valid reference: the pull is tried (and fails
    here, offline), and the hint says that no such file exists either."""
    err = fails(ig, *args)
    path = args[-1]
    assert f"can't find {'kernel' if args[0] == 'kernel' else 'image'} " in err
    assert f"there is no file or folder {path!r} either: check the path" in err
    assert ig("ps", "-a", "-q").stdout == "" and ig("image", "ls", "-q").stdout == ""


def test_moved_tag(ig: Ignite, plain_registry: Registry, test_layout: dict[str, str]) -> None:
    """A tag that moved: pull replaces the image, unless a VM uses it (then one clear error)."""
    ref = f"{plain_registry.host}/test/moving:1"
    plain_registry.push(test_layout["busybox"], "test/moving:1")
    first = ig("image", "pull", "-q", ref).stdout.strip()
    plain_registry.push(test_layout["zstd"], "test/moving:1")
    second = ig("image", "pull", "-q", ref).stdout.strip()
    assert first != second and ig("image", "ls", "-q").stdout.split() == [second]
    ig("create", ref, "--kernel-image", f"{plain_registry.host}/test/kernel:1", "--name", "u")
    plain_registry.push(test_layout["busybox"], "test/moving:1")
    err = fails(ig, "image", "pull", ref)
    assert "now names other content" in err and "(u)" in err
    ig("create", ref, "--kernel-image", f"{plain_registry.host}/test/kernel:1", "--name", "v")
    assert "now names other content" in fails(ig, "create", ref, "--pull", "always", "--name",
                                              "w")


def test_uncompressed_layers(ig: Ignite, plain_registry: Registry, tmp_path: Path) -> None:
    """Plain tar layers (diff_id = digest), pushed as they are; a config that lies fails."""
    from tests.helpers.images import OCILayout, busybox_layers

    layout = OCILayout(tmp_path / "oci")
    desc = layout.image(busybox_layers(), {"Cmd": ["/sbin/init"]}, compression=None)
    plain_registry.upload("test/plain", layout.dir, desc, "1")
    ig("image", "pull", f"{plain_registry.host}/test/plain:1")
    layers = busybox_layers()
    bad = layout.image(layers, {"Cmd": ["/sbin/init"]}, compression=None,
                       diff_ids=["sha256:" + "0" * 64] * len(layers))
    plain_registry.upload("test/plain", layout.dir, bad, "bad")
    assert "has the diff_id" in fails(ig, "image", "pull", f"{plain_registry.host}/test/plain:bad")


def test_compressed_layer_diff_ids(ig: Ignite, plain_registry: Registry, tmp_path: Path
                                   ) -> None:
    """A config whose diff_ids lie about gzip layers is refused as they are applied, also
    when the blobs are already stored for an image whose config is right."""
    from tests.helpers.images import OCILayout, busybox_layers

    layout = OCILayout(tmp_path / "oci")
    layers = busybox_layers()
    good = layout.image(layers, {"Cmd": ["/sbin/init"]})
    bad = layout.image(layers, {"Cmd": ["/sbin/init"], "Env": ["LIE=1"]},
                       diff_ids=["sha256:" + "0" * 64] * len(layers))
    plain_registry.upload("test/lying", layout.dir, bad, "bad")
    plain_registry.upload("test/lying", layout.dir, good, "good")
    ref = f"{plain_registry.host}/test/lying"
    for _ in range(2):  # (the second time, the blobs are stored)
        err = fails(ig, "image", "pull", f"{ref}:bad")
        assert "is not the layer its image config names" in err
        assert "the config's diff_id is sha256:0000" in err
        ig("image", "pull", f"{ref}:good")


def test_docker_schema2_list(ig: Ignite, plain_registry: Registry, tmp_path: Path) -> None:
    """Docker's own media types: a manifest list of v2 schema 2 manifests."""
    import gzip
    import hashlib

    from tests.helpers.images import OCILayout, busybox_layers

    layout = OCILayout(tmp_path / "oci")
    entries = []
    for arch, layers in (("amd64", busybox_layers()), ("arm64", busybox_layers()[:1])):
        diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
        cfg = json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["/sbin/init"]},
                          "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        manifest = {"schemaVersion": 2,
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "config": layout.blob(cfg, "application/vnd.docker.container.image.v1+json"),
                    "layers": [layout.blob(gzip.compress(layer, mtime=0),
                                           "application/vnd.docker.image.rootfs.diff.tar.gzip")
                               for layer in layers]}
        entries.append(layout.blob(json.dumps(manifest).encode(), manifest["mediaType"],
                                   platform={"architecture": arch, "os": "linux"}))
    listing = {"schemaVersion": 2,
               "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
               "manifests": entries}
    desc = layout.blob(json.dumps(listing).encode(), listing["mediaType"])
    plain_registry.upload("test/dockerlist", layout.dir, desc, "1")
    ig("image", "pull", f"{plain_registry.host}/test/dockerlist:1")
    ig("image", "pull", "--platform", "linux/arm64/v8", "--name", "arm",
       f"{plain_registry.host}/test/dockerlist:1")
    arm = json.loads(ig("inspect", "image", "arm").stdout)["status"]["ociSource"]["id"]
    assert arm.endswith(str(entries[1]["digest"]))


def test_single_platform_image_for_another_arch(ig: Ignite, plain_registry: Registry,
                                                tmp_path: Path) -> None:
    """As docker pull: a plain manifest for another architecture is pulled with a warning."""
    from ignitevm.images.registry.manifests import host_platform
    from tests.helpers.images import OCILayout, busybox_layers

    other = "s390x"
    layout = OCILayout(tmp_path / "oci")
    desc = layout.image(busybox_layers(), {"Cmd": ["/sbin/init"]}, arch=other)
    plain_registry.upload("test/othersingle", layout.dir, desc, "1")
    res = ig("image", "pull", f"{plain_registry.host}/test/othersingle:1")
    assert f"is an image for linux/{other}, not {host_platform()}" in res.stderr


def test_unpack_limit_refuses_before_download(ig: Ignite, plain_registry: Registry) -> None:
    """Layers larger, compressed, than what an image may unpack to: refused from
    the manifest, nothing downloaded, no image."""
    err = fails(ig, "image", "pull", "--unpack-limit", "1KB",
                f"{plain_registry.host}/test/busybox:1")
    assert "more than the 1024 an image may unpack to here" in err and "downloaded" in err
    blobs = ig.root / "content" / "blobs"
    layers = [p for p in blobs.rglob("*") if p.is_file() and p.stat().st_size > 4096] \
        if blobs.exists() else []
    assert layers == []
    assert ig("image", "ls", "-q").stdout.strip() == ""
