"""OCI image references, normalised the way Docker and Ignite do."""

from __future__ import annotations

import re

from ignitevm.errors import InvalidInput

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_RE = re.compile(
    r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?$"
)
_REF_RE = re.compile(
    rf"^(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[a-z0-9]+:[a-fA-F0-9]{32,}))?$"
)


def _looks_like_domain(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost" or part != part.lower()


def normalize(ref: str) -> str:
    """Return the familiar ``name:tag`` form; a missing tag becomes ``latest``.

    ``docker.io/library/ubuntu`` -> ``ubuntu:latest``;
    ``localhost:5000/app`` -> ``localhost:5000/app:latest``.
    """
    ref = ref.strip()
    first, sep, rest = ref.partition("/")
    domain = ""
    path = ref
    if sep and _looks_like_domain(first):
        domain, path = first, rest
    m = _REF_RE.match(path)
    if not m or (domain and not _DOMAIN_RE.match(domain)):
        raise InvalidInput(
            f"invalid image reference {ref!r}",
            hint="use a name like 'base', 'app:1.0' or 'registry:5000/team/app:tag'",
        )
    tag, digest = m.group("tag"), m.group("digest")
    if digest and not tag:
        raise InvalidInput(f"could not parse image {ref!r} with a tag",
                           hint="give the reference a tag, e.g. name:tag@sha256:...")
    name = m.group("path")
    if domain in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        domain = ""
        if name.startswith("library/") and name.count("/") == 1:
            name = name[len("library/"):]
    full = f"{domain}/{name}" if domain else name
    return f"{full}:{tag or 'latest'}"


def is_reference(text: str) -> bool:
    try:
        normalize(text)
    except InvalidInput:
        return False
    return True
