"""Image identity is the manifest digest, and every layer must be the one its config names."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from ignitevm.errors import InvalidInput
from ignitevm.images.archive import ImageSource, open_source
from ignitevm.images.identity import canonical_manifest, digest_of
from ignitevm.images.layers import apply_layers
from tests.conftest import Ignite
from tests.unit.test_archive import (
    OCI_CONFIG,
    OCI_MANIFEST,
    docker_archive,
    image_config,
    layer,
    oci_layout,
    put_blob,
    tar_of,
)
from tests.unit.test_layers import blob_layer


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def docker_archive_with(path: Path, config: bytes, layers: list[bytes]) -> Path:
    """A `docker save` tarball carrying ``config`` as is, whatever its layers really are."""
    files = {f"{sha(config)[7:]}.json": config}
    names = []
    for i, data in enumerate(layers):
        names.append(f"{i:064x}/layer.tar")
        files[names[-1]] = data
    manifest = [{"Config": f"{sha(config)[7:]}.json", "RepoTags": ["x:1"], "Layers": names}]
    files["manifest.json"] = json.dumps(manifest).encode()
    path.write_bytes(tar_of(files))
    return path


def test_oci_identity_is_the_manifest_digest(tmp_path: Path) -> None:
    oci_layout(tmp_path / "layout", [layer(1), layer(2)])
    index = json.loads((tmp_path / "layout/index.json").read_text())
    with open_source(tmp_path / "layout") as src:
        assert src.identity == src.manifest == index["manifests"][0]["digest"]
        assert src.identity != src.digest  # not the config's
        assert [x.diff_id for x in src.layers] == [sha(layer(1)), sha(layer(2))]


def test_docker_archive_identity_is_a_canonical_manifest(tmp_path: Path) -> None:
    config = docker_archive(tmp_path / "a.tar", [layer(1), layer(2)])
    with open_source(tmp_path / "a.tar") as src:
        blobs = [(sha(layer(n)), len(layer(n))) for n in (1, 2)]
        assert src.identity == digest_of(canonical_manifest(sha(config), len(config), blobs))
    # Same config, other (compressed) layers: another identity.
    docker_archive_with(tmp_path / "b.tar", config, [layer(1), gzip.compress(layer(3))])
    with open_source(tmp_path / "b.tar") as other:
        assert other.digest == src.digest and other.identity != src.identity


def test_docker_archive_carrying_an_oci_manifest_uses_its_digest(tmp_path: Path) -> None:
    layers = [layer(1)]
    config = image_config(layers)
    root = tmp_path / "tree"
    cdesc = put_blob(root, config, OCI_CONFIG)
    ldesc = put_blob(root, layers[0], "application/vnd.oci.image.layer.v1.tar")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cdesc,
                           "layers": [ldesc]}).encode()
    mdesc = put_blob(root, manifest, OCI_MANIFEST)
    files = {f"blobs/sha256/{sha(b)[7:]}": b for b in (config, layers[0], manifest)}
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [mdesc]}).encode()
    files["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    files["manifest.json"] = json.dumps([{
        "Config": f"blobs/sha256/{sha(config)[7:]}", "RepoTags": ["x:1"],
        "Layers": [f"blobs/sha256/{sha(layers[0])[7:]}"]}]).encode()
    (tmp_path / "new.tar").write_bytes(tar_of(files))
    with open_source(tmp_path / "new.tar") as src:
        assert src.kind == "docker-archive" and src.identity == sha(manifest)


@pytest.mark.parametrize("compress", [False, True])
def test_a_layer_that_is_not_its_diff_id_is_refused(tmp_path: Path, compress: bool) -> None:
    tar = layer(1)
    blob = gzip.compress(tar) if compress else tar
    good = blob_layer(blob)._replace(diff_id=sha(tar))
    bad = blob_layer(blob)._replace(diff_id=sha(layer(2)))
    for lay, ok in ((good, True), (bad, False)):
        src = ImageSource("oci-layout", None, "sha256:" + "0" * 64, {}, [lay], lay.size,
                          Path("img"))
        dest = tmp_path / f"root-{ok}"
        dest.mkdir()
        if ok:
            apply_layers(src, dest)
            assert (dest / "file1").read_text() == "layer 1\n"
        else:
            with pytest.raises(InvalidInput, match="not the layer its image config names"):
                apply_layers(src, dest)


def test_config_must_list_one_diff_id_per_layer(tmp_path: Path) -> None:
    config = image_config([layer(1)])
    docker_archive_with(tmp_path / "a.tar", config, [layer(1), layer(2)])
    with pytest.raises(InvalidInput, match="diff_ids do not list one sha256"):
        open_source(tmp_path / "a.tar").__enter__()


@pytest.mark.parametrize("compress", [False, True])
def test_import_refuses_layers_the_config_does_not_name(
    tmp_path: Path, ignite: Ignite, compress: bool
) -> None:
    """Before: an archive whose layers are not the ones its config names was stored under
    that config's digest, and a later import of the genuine image got the impostor's files."""
    good_layer = layer(1)
    config = docker_archive(tmp_path / "good.tar", [good_layer])
    evil_layer = tar_of({"file1": b"impostor\n"})
    docker_archive_with(tmp_path / "evil.tar", config,
                        [gzip.compress(evil_layer) if compress else evil_layer])
    res = ignite("image", "import", str(tmp_path / "evil.tar"), "--name", "evil", check=False)
    assert res.returncode == 1, res
    # (An uncompressed docker-archive layer's blob digest is its diff_id.)
    assert res.stderr.startswith("error: ")
    assert ("diff_id" if compress else "does not match its digest") in res.stderr
    assert "Traceback" not in res.stderr
    assert "evil" not in ignite("image", "ls").stdout
    assert not list((ignite.root / "image").iterdir())
    assert not list((ignite.root / "tmp").iterdir())
    ignite("image", "import", str(tmp_path / "good.tar"), "--name", "good")
    res = ignite("image", "import", str(tmp_path / "evil.tar"), "--name", "good", check=False)
    if compress:
        # Other layer blobs: other content, not "already imported".
        assert res.returncode == 1 and "already exists with other content" in res.stderr
    else:
        # The config pins the uncompressed layers (diff_ids, verified when "good" was
        # imported): the identity designates good's content, which is what is there.
        assert res.returncode == 0 and "already imported" in res.stderr


@pytest.mark.parametrize("junk", [{"layers": 5}, {"manifests": "x"}, [], {"config": 1}])
def test_a_docker_archive_with_a_junk_oci_index_gets_the_canonical_manifest(
    tmp_path: Path, junk: object
) -> None:
    config = image_config([layer(1)])
    manifest = json.dumps(junk).encode()
    files = {f"{sha(config)[7:]}.json": config, "0" * 64 + "/layer.tar": layer(1),
             f"blobs/sha256/{sha(manifest)[7:]}": manifest,
             "index.json": json.dumps({"manifests": [{"digest": sha(manifest)}, 7]}).encode(),
             "manifest.json": json.dumps([{"Config": f"{sha(config)[7:]}.json",
                                           "Layers": ["0" * 64 + "/layer.tar"]}]).encode()}
    (tmp_path / "a.tar").write_bytes(tar_of(files))
    with open_source(tmp_path / "a.tar") as src:
        blobs = [(sha(layer(1)), len(layer(1)))]
        assert src.kind == "docker-archive"
        assert src.identity == digest_of(canonical_manifest(sha(config), len(config), blobs))
