"""OCI image references, parsed as Docker and containerd do (distribution's grammar).

``parse`` gives the full form a registry needs (``docker.io/library/alpine:latest``);
``normalize`` gives the familiar form images are named by (``alpine:latest``).

- A one-word name is an official image: ``alpine`` -> ``docker.io/library/alpine``.
- The first component is a registry host if it has a ``.`` or a ``:``, is
  ``localhost``, or has an uppercase letter; otherwise the host is ``docker.io``.
- With neither tag nor digest the tag is ``latest``; with both, the digest
  decides what is pulled (the tag is kept for display).
- Repository names are lowercase; a reference with an uppercase repository is refused.
- A registry host's port is 1-65535.
"""

from __future__ import annotations

import re
from collections import namedtuple

from ignitevm.errors import InvalidInput

DOCKER_HUB = "docker.io"
_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
)
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
# A sha256 digest as every store and image document of the project writes it (the one
# pattern: images/blobs, source and the registry pull use it too).
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_NAME_MAX = 255
_HINT = "use a name like 'alpine', 'app:1.0', 'registry.example:5000/team/app:tag' or " \
        "'name@sha256:<64 hex digits>'"


# (collections.namedtuple, not typing.NamedTuple: typing is ~3 ms of the CLI's fast pull)
class Reference(namedtuple("Reference", "domain path tag digest")):
    __slots__ = ()
    domain: str  # "docker.io", "ghcr.io", "localhost:5000"
    path: str  # "library/alpine", "team/app"
    tag: str | None  # None only when a digest is given
    digest: str | None  # "sha256:<hex>"

    @property
    def repository(self) -> str:
        """``docker.io/library/alpine``."""
        return f"{self.domain}/{self.path}"

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return self.repository + (f":{self.tag}" if self.tag else "") + (
            f"@{self.digest}" if self.digest else "")

    def familiar_name(self) -> str:
        """``alpine``, ``team/app``, ``localhost:5000/app`` (no tag or digest)."""
        if self.domain == DOCKER_HUB:
            if self.path.startswith("library/") and self.path.count("/") == 1:
                return self.path[len("library/"):]
            return self.path
        return self.repository

    def familiar(self) -> str:
        """``alpine:latest``, ``app@sha256:…``, ``app:1@sha256:…``."""
        return self.familiar_name() + (f":{self.tag}" if self.tag else "") + (
            f"@{self.digest}" if self.digest else "")

    def with_digest(self, digest: str) -> str:
        """``docker.io/library/alpine@sha256:…``: what an Image records."""
        return f"{self.repository}@{digest}"


def _looks_like_domain(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost" or part != part.lower()


def parse(ref: str) -> Reference:
    """Parse ``ref`` into its full form, or raise :class:`InvalidInput` saying why."""
    text = ref.strip()
    rest, at, digest = text.partition("@")
    if at and not _DIGEST_RE.fullmatch(digest):
        raise InvalidInput(f"invalid image reference {ref!r}: bad digest {digest!r}",
                           hint="a digest looks like sha256:<64 hex digits>")
    if at and digest.startswith("sha256:") and not DIGEST.fullmatch(digest):
        raise InvalidInput(f"invalid image reference {ref!r}: a sha256 digest has 64 "
                           "lowercase hex digits", hint=_HINT)
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:  # a ':' after the last '/' starts the tag (else it is a port)
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidInput(f"invalid image reference {ref!r}: bad tag {tag!r}", hint=_HINT)
    first, sep, remainder = rest.partition("/")
    if sep and _looks_like_domain(first):
        domain, path = first, remainder
        if not _DOMAIN_RE.fullmatch(domain):
            raise InvalidInput(f"invalid image reference {ref!r}: bad registry host {domain!r}",
                               hint=_HINT)
        port = domain.rpartition("]")[2].partition(":")[2]  # ("[::1]:5000": its last part)
        if port and (len(port) > 5 or not 0 < int(port) < 65536):  # (int(): 4300 digits)
            raise InvalidInput(f"invalid image reference {ref!r}: port {port} of registry "
                               f"host {domain!r} is out of range (1-65535)", hint=_HINT)
    else:
        domain, path = DOCKER_HUB, rest
    if domain in _HUB_ALIASES:
        domain = DOCKER_HUB
        if "/" not in path:
            path = "library/" + path
    if not path:
        raise InvalidInput(f"invalid image reference {ref!r}: no repository name", hint=_HINT)
    if path != path.lower() and _PATH_RE.fullmatch(path.lower()):
        if domain != DOCKER_HUB and not _looks_like_domain(domain.lower()):
            # (a host only for its capitals, as in 'Team/App': meant for Docker Hub)
            domain, path = DOCKER_HUB, f"{domain}/{path}"
        lowered = Reference(domain.lower(), path.lower(), tag, digest if at else None)
        raise InvalidInput(f"invalid image reference {ref!r}: repository names must be "
                           "lowercase", hint=f"use {lowered.familiar()!r}")
    if not _PATH_RE.fullmatch(path):
        raise InvalidInput(f"invalid image reference {ref!r}", hint=_HINT)
    if len(domain) + 1 + len(path) > _NAME_MAX:
        raise InvalidInput(f"invalid image reference {ref!r}: the name is longer than "
                           f"{_NAME_MAX} characters")
    if tag is None and not at:
        tag = "latest"
    return Reference(domain, path, tag, digest if at else None)


def normalize(ref: str) -> str:
    """Return the familiar ``name:tag`` form; a missing tag becomes ``latest``.

    ``docker.io/library/ubuntu`` -> ``ubuntu:latest``;
    ``localhost:5000/app`` -> ``localhost:5000/app:latest``;
    ``app@sha256:…`` stays as it is.
    """
    return parse(ref).familiar()


def is_reference(text: str) -> bool:
    try:
        parse(text)
    except InvalidInput:
        return False
    return True
