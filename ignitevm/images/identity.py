"""What makes two imports the same image: the digest of its manifest.

An image's identity (``Image.status.oci_source.id``) is the digest of the
manifest that names its config and every layer blob: two sources with the
same identity have the same content, so the second import reuses the first's
root file system. (The config digest alone is not enough: a source can carry
the same config with other layers.)

- OCI archives and layout folders (and a registry pull): the digest of the
  manifest they carry.
- ``docker save`` archives carry no manifest in that sense (manifest.json is
  Docker's own list). When the archive also holds an OCI manifest for this
  image (newer Docker does), its digest; otherwise the digest of the
  canonical manifest below, built from the config and layer blobs. It is
  never sent anywhere, so it only has to be deterministic: an OCI image
  manifest (schemaVersion 2, OCI media types, layers typed as plain tar
  whatever their compression) serialised as JSON with sorted keys, no spaces.
- A plain root file system tarball: the sha256 of the file.

Each layer is checked against its blob digest and the config's
``rootfs.diff_ids`` while it is unpacked (:mod:`layers`), so a source whose
manifest, config and layers disagree is refused rather than stored under an
identity that lies. That is what makes the second import's shortcut sound:
an identity pins the config and every layer blob, which the first import
verified, so a later source with the same identity designates the same
content even if its own bytes are never read. (An uncompressed layer of a
``docker save`` archive that is not named by its digest takes its diff_id as
its blob digest: the config pins it either way.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_manifest(
    config_digest: str, config_size: int, layers: Sequence[tuple[str, int]]
) -> bytes:
    """The manifest made for a source that carries none: config and (digest, size) of layers."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, s in layers],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def image_identity(manifest_digest: str | None, file_digest: str) -> str:
    """The identity stored for an image: its manifest digest, else (rootfs tar) the file's."""
    return manifest_digest or file_digest
