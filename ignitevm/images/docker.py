"""``docker save`` archives: manifest.json, a config named by its digest, layer tarballs."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ignitevm.errors import InvalidInput
from ignitevm.images.blobs import DIGEST, TarIndex, compression, norm
from ignitevm.images.identity import canonical_manifest, digest_of
from ignitevm.images.source import ImageSource, Layer, Opener, make_image, ref_matches
from ignitevm.log import log


def open_docker(store: TarIndex, path: Path, ref: str | None) -> ImageSource:
    """Describe the image of the docker-archive ``store`` (the first one, or ``ref``)."""
    entries = store.json("manifest.json", "manifest")
    if (
        not isinstance(entries, list)
        or not entries
        or not all(isinstance(e, dict) for e in entries)
    ):
        raise InvalidInput(f"{path}: manifest.json lists no images")
    if ref is not None:
        entries = [e for e in entries if any(ref_matches(ref, t) for t in e.get("RepoTags") or [])]
        if not entries:
            raise InvalidInput(f"{path} holds no image named {ref}")
    elif len(entries) > 1:
        log.debug("%s holds %d images; using the first one", path, len(entries))
    entry = entries[0]
    tags = entry.get("RepoTags") or []
    config_name = norm(str(entry.get("Config", "")))
    data = store.read(config_name)
    config_digest = "sha256:" + hashlib.sha256(data).hexdigest()
    named = re.search(r"([0-9a-f]{64})(\.json)?$", config_name)
    if named and named.group(1) != config_digest[7:]:
        raise InvalidInput(f"{path}: config {config_name} does not match its digest")
    try:
        config = json.loads(data)
    except (ValueError, RecursionError):  # (RecursionError: nested too deeply)
        raise InvalidInput(f"{path}: config {config_name} is not valid JSON") from None
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") if isinstance(config, dict) else []
    layer_names = entry.get("Layers") or []
    layers = []
    for i, lname in enumerate(layer_names):
        name, info = store.resolve(norm(str(lname)))
        opener = store.opener(name)
        layers.append(Layer(_layer_digest(name, i, diff_ids, opener), info.size, opener))
    blobs = [(layer.digest, layer.size) for layer in layers]
    manifest = _carried_manifest(store, config_digest, [d for d, _ in blobs])
    if manifest is None:
        manifest = digest_of(canonical_manifest(config_digest, len(data), blobs))
    ref_name = tags[0] if tags else None
    return make_image("docker-archive", ref_name, config_digest, config, layers, path, manifest)


def _carried_manifest(store: TarIndex, config_digest: str, layers: list[str]) -> str | None:
    """The digest of the OCI manifest for this very image, if the archive also holds one.

    Newer Docker writes an OCI layout beside manifest.json; its manifest is
    used only if it names the same config and the same layer blobs, in order.
    """
    if "index.json" not in store.members:
        return None
    try:
        index = store.json("index.json", "index")
        pending = list(index.get("manifests") or []) if isinstance(index, dict) else []
        for _ in range(64):
            if not pending:
                break
            desc = pending.pop(0)
            digest = desc.get("digest") if isinstance(desc, dict) else None
            name = f"blobs/sha256/{digest[7:]}" if isinstance(digest, str) else ""
            if not DIGEST.fullmatch(str(digest)) or name not in store.members:
                continue
            doc = store.json(name, "manifest", digest)
            if not isinstance(doc, dict):
                continue
            if isinstance(doc.get("manifests"), list):  # a nested index
                pending += doc["manifests"]
                continue
            config, descs = doc.get("config"), doc.get("layers")
            if not isinstance(config, dict) or not isinstance(descs, list):
                continue
            named = [d.get("digest") if isinstance(d, dict) else None for d in descs]
            if config.get("digest") == config_digest and named == layers:
                return str(digest)
    except InvalidInput as exc:
        log.debug("%s: ignoring its OCI index (%s)", store.path, exc)
    return None


def _layer_digest(name: str, i: int, diff_ids: Any, opener: Opener) -> str:
    """The sha256 of a docker-archive layer blob, computed only when no name gives it."""
    named = re.fullmatch(r"blobs/sha256/([0-9a-f]{64})", name)
    if named:
        return "sha256:" + named.group(1)
    with opener() as f:
        head = f.read(8)
        if (
            isinstance(diff_ids, list)
            and len(diff_ids) > i
            and isinstance(diff_ids[i], str)
            and DIGEST.fullmatch(diff_ids[i])
            and compression(head) is None
        ):
            return diff_ids[i]  # an uncompressed layer's blob digest is its diff id
        h = hashlib.sha256(head)
        while chunk := f.read(1 << 20):
            h.update(chunk)
        return "sha256:" + h.hexdigest()
