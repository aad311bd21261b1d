"""Manifests and indexes from a registry: fetched whole, checked, and one platform chosen.

Docker v2 schema 2 and OCI manifests and indexes are read; schema 1 is
refused with a clear message. Every manifest is checked against the digest it
was asked by (or the registry's ``Docker-Content-Digest``).
"""

from __future__ import annotations

import json
import os
from collections import namedtuple

from ignitevm.api.platform import config_platform
from ignitevm.errors import InvalidInput
from ignitevm.images.mediatypes import CONFIG_TYPES, INDEX_TYPES, MANIFEST_TYPES

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:  # (not imported: the CLI's fast pull path reads this module)
    from typing import Any

    from ignitevm.images.registry.client import Client

SCHEMA1_TYPES = {
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
}
ACCEPT = ", ".join(sorted(INDEX_TYPES | MANIFEST_TYPES))
MAX_MANIFEST = 4 << 20
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


class Manifest(namedtuple("Manifest", "digest media raw doc")):
    __slots__ = ()
    digest: str
    media: str
    raw: bytes
    doc: dict[str, Any]

    @property
    def is_index(self) -> bool:
        return self.media in INDEX_TYPES


def host_platform() -> str:
    machine = os.uname().machine
    return f"linux/{_ARCH.get(machine, machine)}"


def parse(raw: bytes, digest: str, where: str, content_type: str = "") -> Manifest:
    """Check a manifest's type; ``where`` names it in messages."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # (RecursionError: nested too deeply)
        raise InvalidInput(f"{where} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"{where} is not a JSON object")
    media = doc.get("mediaType") or content_type.split(";")[0].strip()
    if doc.get("schemaVersion") == 1 or media in SCHEMA1_TYPES:
        raise InvalidInput(f"{where} is a Docker schema 1 manifest, which is not supported",
                           hint="push the image again with a current docker or skopeo "
                                "(it writes schema 2)")
    if media not in INDEX_TYPES | MANIFEST_TYPES:
        if "manifests" in doc:
            media = "application/vnd.oci.image.index.v1+json"
        elif "config" in doc and "layers" in doc:
            media = "application/vnd.oci.image.manifest.v1+json"
        else:
            raise InvalidInput(f"{where} has the unsupported media type {media!r}")
    return Manifest(digest, media, raw, doc)


def fetch(client: Client, reference: str, expected: str | None = None) -> Manifest:
    """GET ``manifests/<reference>``; ``expected`` is the digest it must have."""
    from contextlib import closing  # (these two not at the top: the CLI's fast pull
    from hashlib import sha256  # path reads this module)

    what = f"manifest {reference}" if reference.startswith("sha256:") else f"tag {reference}"
    with closing(client.get(f"manifests/{reference}", {"Accept": ACCEPT}, stream=True)) as resp:
        if resp.status_code != 200:
            raise client.error(resp, what)
        chunks, total = [], 0
        for chunk in resp.iter_bytes():
            total += len(chunk)
            if total > MAX_MANIFEST:
                raise InvalidInput(f"{what} of {client.domain}/{client.repository} is larger "
                                   f"than {MAX_MANIFEST >> 20} MiB; refused")
            chunks.append(chunk)
        raw = b"".join(chunks)
        content_type = resp.headers.get("content-type", "")
        claimed = resp.headers.get("docker-content-digest", "")
    digest = "sha256:" + sha256(raw).hexdigest()
    where = f"{what} of {client.domain}/{client.repository}"
    if expected is None and claimed.startswith("sha256:"):
        expected = claimed
    if expected is not None and digest != expected:
        raise InvalidInput(f"{where} does not match its digest {expected} (its content hashes "
                           f"to {digest})", hint="the registry or a proxy sent corrupt data;"
                           " nothing was kept")
    return parse(raw, digest, where, content_type)


def platform_of(desc: dict[str, Any]) -> str | None:
    """The platform an index entry is for; None if it says none (or not one)."""
    return config_platform(desc.get("platform")) or None


def choose(index: Manifest, wanted: str, where: str) -> dict[str, Any]:
    """The descriptor of ``index`` for the platform ``wanted`` (``os/arch[/variant]``)."""
    descs = [d for d in index.doc.get("manifests") or [] if isinstance(d, dict)]
    have = []
    for desc in descs:
        plat = platform_of(desc)
        if plat is None or plat.startswith("unknown/"):  # attestations, not images
            continue
        have.append(plat)
        if plat == wanted or (wanted.count("/") == 1 and plat.startswith(wanted + "/")):
            return desc
    if wanted == "linux/arm64" or wanted == "linux/arm64/v8":  # arm64's only variant
        for desc in descs:
            if platform_of(desc) in ("linux/arm64", "linux/arm64/v8"):
                return desc
    listed = ", ".join(sorted(set(have))) or "none"
    raise InvalidInput(f"{where} has no image for {wanted} (it has: {listed})",
                       hint="choose one with --platform")


def check_platform(text: str) -> str:
    parts = text.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidInput(f"invalid platform {text!r}", hint="use os/arch[/variant], e.g. "
                           "linux/amd64 or linux/arm64")
    return "/".join(parts)


def image_parts(m: Manifest, where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(config descriptor, layer descriptors) of an image manifest."""
    cfg = m.doc.get("config")
    layers = m.doc.get("layers")
    if not isinstance(cfg, dict) or not isinstance(layers, list):
        raise InvalidInput(f"{where} is malformed (no config or layers)")
    if cfg.get("mediaType") not in CONFIG_TYPES:
        raise InvalidInput(f"{where} is not a container image (config type "
                           f"{cfg.get('mediaType')!r})")
    return cfg, [d if isinstance(d, dict) else {} for d in layers]
