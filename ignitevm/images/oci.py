"""OCI image layouts (as a directory or an oci-archive tarball): index, manifest, config.

The index may list several images: one is picked by its ref name annotation,
then by platform (this host's ``linux/<arch>``). Nested indexes are followed,
and every manifest and config is checked against its descriptor's digest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ignitevm.errors import InvalidInput
from ignitevm.images.blobs import DIGEST, Store
from ignitevm.images.mediatypes import (
    CONFIG_TYPES,
    INDEX_TYPES,
    LAYER_TYPES,
    MANIFEST_TYPES,
)
from ignitevm.images.source import ImageSource, Layer, make_image, ref_matches

REF_ANNOTATION = "org.opencontainers.image.ref.name"
_MACHINE = os.uname().machine
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(_MACHINE, _MACHINE)


def open_oci(store: Store, kind: str, path: Path, ref: str | None,
             platform: str | None = None) -> ImageSource:
    """Describe the image of the OCI layout in ``store`` (``kind``: oci-layout or oci-archive;
    ``platform``: the os/arch[/variant] to take from an index, default this host's)."""
    index = store.json("index.json", "index")
    if not isinstance(index, dict):
        raise InvalidInput(f"{path}: index.json is not an image index")
    desc = _choose(store, index.get("manifests"), ref, platform)
    annotations = desc.get("annotations") or {}
    name = annotations.get(REF_ANNOTATION) or annotations.get("io.containerd.image.name")
    for _ in range(4):
        media = desc.get("mediaType")
        digest, blob, _size = _blob(store, desc, "manifest")
        if media in INDEX_TYPES:
            nested = store.json(blob, "index", digest)
            desc = _choose(
                store, nested.get("manifests") if isinstance(nested, dict) else None, None,
                platform,
            )
        elif media in MANIFEST_TYPES:
            manifest = store.json(blob, "manifest", digest)
            break
        else:
            raise InvalidInput(f"{path}: {digest} has unsupported media type {media!r}")
    else:
        raise InvalidInput(f"{path}: image indexes are nested too deeply")
    if not isinstance(manifest, dict):
        raise InvalidInput(f"{path}: manifest {digest} is not an object")
    cdesc = manifest.get("config")
    cmedia = cdesc.get("mediaType") if isinstance(cdesc, dict) else None
    if cmedia not in CONFIG_TYPES:
        raise InvalidInput(
            f"{path}: manifest {digest} is not a container image (config type {cmedia!r})"
        )
    config_digest, config_blob, _ = _blob(store, cdesc, "config")
    config = store.json(config_blob, "config", config_digest)
    layers = []
    for ldesc in manifest.get("layers") or []:
        media = ldesc.get("mediaType") if isinstance(ldesc, dict) else None
        if media not in LAYER_TYPES:
            raise InvalidInput(f"{path}: layer has unsupported media type {media!r}")
        ldigest, lblob, lsize = _blob(store, ldesc, "layer")
        layers.append(Layer(ldigest, lsize, store.opener(lblob)))
    ref_name = name if isinstance(name, str) else None
    return make_image(kind, ref_name, config_digest, config, layers, path, digest)


def _blob(store: Store, desc: Any, what: str) -> tuple[str, str, int]:
    """Check an OCI descriptor; return (digest, blob path, size)."""
    if not isinstance(desc, dict):
        raise InvalidInput(f"{store.path}: the {what} descriptor is malformed")
    digest = desc.get("digest")
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise InvalidInput(f"{store.path}: unsupported {what} digest {digest!r} (sha256 only)")
    name = "blobs/sha256/" + digest[7:]
    size = store.size(name)
    if desc.get("size", size) != size:
        raise InvalidInput(
            f"{store.path}: {what} {digest} has {size} bytes, its descriptor says {desc['size']}",
            hint="the source is truncated or corrupt; export it again",
        )
    return digest, name, size


def _platform(desc: dict[str, Any]) -> str | None:
    p = desc.get("platform")
    if not isinstance(p, dict):
        return None
    return f"{p.get('os')}/{p.get('architecture')}" + (f"/{p['variant']}" if "variant" in p else "")


def _choose(
    store: Store, descs: Any, ref: str | None, platform: str | None = None
) -> dict[str, Any]:
    """Pick one descriptor from an index: by ref name, then by platform."""
    if not isinstance(descs, list) or not descs:
        raise InvalidInput(f"{store.path}: the image index lists no manifests")
    descs = [d for d in descs if isinstance(d, dict)]
    if ref is not None:
        names = [(d.get("annotations") or {}).get(REF_ANNOTATION) for d in descs]
        descs = [d for d, n in zip(descs, names, strict=True) if n and ref_matches(ref, n)]
        if not descs:
            have = ", ".join(sorted(n for n in names if n)) or "none"
            raise InvalidInput(f"{store.path} holds no image named {ref} (it has: {have})")
    wanted = platform or f"linux/{_ARCH}"
    platforms = [_platform(d) for d in descs]
    if len(descs) == 1 and platforms[0] is None:
        return descs[0]
    for d, p in zip(descs, platforms, strict=True):
        if p is not None and (p == wanted or p.startswith(wanted + "/")):
            return d
    if any(platforms):
        have = ", ".join(sorted({p for p in platforms if p}))
        raise InvalidInput(f"{store.path} has no {wanted} image (it has: {have})")
    names = [(d.get("annotations") or {}).get(REF_ANNOTATION) or d.get("digest") for d in descs]
    raise InvalidInput(
        f"{store.path} holds {len(descs)} images ({', '.join(map(str, names))})",
        hint="name the one to use",
    )
