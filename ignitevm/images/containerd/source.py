"""An image in containerd's store, opened as an :class:`ImageSource`.

The image's name is looked up in one namespace; its target (an index or a
manifest) is then read by :func:`~ignitevm.images.oci.open_oci`, the reader
of OCI layouts, through a :class:`~ignitevm.images.blobs.Store` whose blobs
come from containerd's content service. So the platform is chosen, and every
manifest, config and layer is checked against its digest and size, exactly as
for an archive, and the image's identity is its manifest digest: importing
it from containerd or from the archive it was loaded from gives the same image.

A lease taken for the whole import holds each blob before it is first read,
so containerd's garbage collector cannot remove it meanwhile (an image
deleted or retagged in containerd during the import, say).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

from ignitevm.errors import InvalidInput, NotFound
from ignitevm.images.blobs import DIGEST, Store
from ignitevm.images.containerd.client import Client, Target
from ignitevm.images.containerd.options import ContainerdOptions
from ignitevm.images.source import ImageSource, Opener

NAME_ANNOTATION = "io.containerd.image.name"
_SHOWN = 5  # image names listed when the one asked for is not there


@contextmanager
def open_containerd(text: str, opts: ContainerdOptions) -> Iterator[ImageSource]:
    """The image named ``text`` in containerd, readable for as long as the block runs."""
    from ignitevm.images.oci import open_oci

    with ExitStack() as stack:
        client = stack.enter_context(Client(opts.socket, opts.namespace))
        target = _find(client, text)
        lease = stack.enter_context(client.lease())
        store = ContainerdStore(client, lease, target, opts.platform)
        yield open_oci(store, "containerd", store.path, None, opts.platform)


def _find(client: Client, text: str) -> Target:
    """The image record for ``text``: as given, else its full reference (``alpine`` is
    ``docker.io/library/alpine:latest``, as containerd names what it pulls)."""
    from ignitevm.api import refs

    names = [text]
    try:
        full = str(refs.parse(text))
    except InvalidInput:
        full = text
    if full != text:
        names.append(full)
    for name in names:
        target = client.image(name)
        if target is not None:
            return target
    have = client.image_names()
    shown = ", ".join(have[:_SHOWN]) + (f" and {len(have) - _SHOWN} more"
                                         if len(have) > _SHOWN else "")
    ns = client.namespace
    elsewhere = [other for other in client.namespaces() if other != ns
                 and any(client.image(name, other) for name in names)]
    if elsewhere:
        hint = (f"it is in namespace {', '.join(elsewhere)}: add --containerd-namespace "
                f"{elsewhere[0]}")
    else:
        hint = (f"pull it into containerd first (ctr -n {ns} images pull {names[-1]}), or "
                f"pull it from its registry: ignite image pull {text}")
    raise NotFound(f"containerd has no image {text} in namespace {ns} (it has: "
                   f"{shown or 'none'})", hint=hint)


class ContainerdStore(Store):
    """The content of one containerd image, as the files of an OCI layout: an
    ``index.json`` naming the image's target, and ``blobs/sha256/<hex>``."""

    def __init__(self, client: Client, lease: str, target: Target, platform: str | None):
        # (no folder: the path only names the image in messages)
        self.path = Path(f"containerd image {target.name} (namespace {client.namespace})")
        self.client, self.lease, self.target = client, lease, target
        self.platform = platform  # (for the hint when content is missing)
        self._sizes: dict[str, int] = {}
        entry = {"mediaType": target.media_type, "digest": target.digest,
                 "size": target.size, "annotations": {NAME_ANNOTATION: target.name}}
        self._index = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()

    def _digest(self, name: str) -> str:
        digest = "sha256:" + name.removeprefix("blobs/sha256/")
        if not name.startswith("blobs/sha256/") or not DIGEST.fullmatch(digest):
            raise InvalidInput(f"{self.path}: unsupported content name {name!r}")
        return digest

    def size(self, name: str) -> int:
        if name == "index.json":
            return len(self._index)
        digest = self._digest(name)
        if digest not in self._sizes:
            self.client.hold(self.lease, digest)  # before the first read
            size = self.client.content_size(digest)
            if size is None:
                ns = self.client.namespace
                which = f" --platform {self.platform}" if self.platform else ""
                raise NotFound(
                    f"containerd lacks {digest} of {self.target.name} (namespace {ns}): it was "
                    "garbage-collected, or the image was pulled lazily or for another platform",
                    hint=f"fetch it: ctr -n {ns} content fetch{which} {self.target.name}")
            self._sizes[digest] = size
        return self._sizes[digest]

    def opener(self, name: str) -> Opener:
        if name == "index.json":
            return lambda: nullcontext(io.BytesIO(self._index))
        digest, size = self._digest(name), self.size(name)
        label = f"{digest} of {self.target.name}"
        return lambda: self.client.read(digest, size, label)
