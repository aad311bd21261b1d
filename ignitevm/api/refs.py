"""OCI image references, parsed as Docker and containerd do (distribution's grammar).

``parse`` gives the full form a registry needs (``docker.io/library/alpine:latest``);
``normalize`` gives the familiar form images are named by (``alpine:latest``).

- A one-word name is an official image: ``alpine`` -> ``docker.io/library/alpine``.
- The first component is a registry host if it has a ``.`` or a ``:``, is
  ``localhost``, or has an uppercase letter; otherwise the host is ``docker.io``.
- With neither tag nor digest the tag is ``latest``; with both, the digest
  decides what is pulled (the tag is kept for display).
- Repository names are lowercase; a reference with an uppercase repository is refused.
"""

from __future__ import annotations

from collections import namedtuple

from ignitevm.errors import InvalidInput

DOCKER_HUB = "docker.io"
_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_NAME_MAX = 255
_HINT = "use a name like 'alpine', 'app:1.0', 'registry.example:5000/team/app:tag' or " \
        "'name@sha256:<64 hex digits>'"

# distribution's grammar, read character by character (its regular expressions, which
# tests/unit/test_refs_grammar.py holds these to, cost the CLI's fast pull ~1 ms to compile):
#   path       component ("/" component)*
#   component  [a-z0-9]+ (([._] | "__" | "-"+) [a-z0-9]+)*
#   domain     (part ("." part)* | "[" [0-9a-fA-F:.]+ "]") (":" [0-9]+)?
#   part       [a-zA-Z0-9] | [a-zA-Z0-9] [a-zA-Z0-9-]* [a-zA-Z0-9]
#   tag        \w [\w.-]{0,127}  (\w: a Unicode letter, digit or "_")
#   digest     [A-Za-z][A-Za-z0-9]* ([-_+.] [A-Za-z][A-Za-z0-9]*)* ":" [0-9a-fA-F]{32,}
_DIGITS = frozenset("0123456789")
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_LETTERS = _LOWER | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LOWER_ALNUM = _LOWER | _DIGITS
_ALNUM = _LETTERS | _DIGITS
_HEX = _DIGITS | frozenset("abcdefABCDEF")
_BRACKETED = _HEX | frozenset(":.")


def _is_component(s: str) -> bool:
    if not s or s[0] not in _LOWER_ALNUM or s[-1] not in _LOWER_ALNUM:
        return False
    sep = ""  # (the separator since the last [a-z0-9]: between two of them, as it ends so)
    for ch in s:
        if ch in _LOWER_ALNUM:
            if sep and sep not in (".", "_", "__") and sep != "-" * len(sep):
                return False
            sep = ""
        elif ch in "._-":
            sep += ch
        else:
            return False
    return True


def _is_path(s: str) -> bool:
    return all(_is_component(c) for c in s.split("/"))


def _is_domain_part(s: str) -> bool:
    return bool(s) and s[0] in _ALNUM and s[-1] in _ALNUM and all(
        ch in _ALNUM or ch == "-" for ch in s)


def _is_port(s: str) -> bool:
    return bool(s) and all(ch in _DIGITS for ch in s)


def _is_domain(s: str) -> bool:
    if s.startswith("["):
        inner, bracket, port = s[1:].partition("]")
        if not bracket or not inner or not all(ch in _BRACKETED for ch in inner):
            return False
    else:
        host, colon, port = s.partition(":")
        if not all(_is_domain_part(p) for p in host.split(".")):
            return False
        port = colon + port
    return not port or (port[0] == ":" and _is_port(port[1:]))


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _is_tag(s: str) -> bool:
    return 0 < len(s) <= 128 and _is_word(s[0]) and all(
        _is_word(ch) or ch in ".-" for ch in s)


def _is_digest(s: str) -> bool:
    algorithm, colon, encoded = s.partition(":")
    if not colon or len(encoded) < 32 or not all(ch in _HEX for ch in encoded):
        return False
    word = ""
    for ch in algorithm + "+":  # (a last separator closes the last word)
        if ch not in "-_+.":
            word += ch
        elif not word or word[0] not in _LETTERS or not all(c in _ALNUM for c in word):
            return False
        else:
            word = ""
    return True


def _is_sha256(s: str) -> bool:
    return len(s) == 71 and s.startswith("sha256:") and all(
        ch in _DIGITS or ch in "abcdef" for ch in s[7:])

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
    if at and not _is_digest(digest):
        raise InvalidInput(f"invalid image reference {ref!r}: bad digest {digest!r}",
                           hint="a digest looks like sha256:<64 hex digits>")
    if at and digest.startswith("sha256:") and not _is_sha256(digest):
        raise InvalidInput(f"invalid image reference {ref!r}: a sha256 digest has 64 "
                           "lowercase hex digits", hint=_HINT)
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:  # a ':' after the last '/' starts the tag (else it is a port)
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _is_tag(tag):
            raise InvalidInput(f"invalid image reference {ref!r}: bad tag {tag!r}", hint=_HINT)
    first, sep, remainder = rest.partition("/")
    if sep and _looks_like_domain(first):
        domain, path = first, remainder
        if not _is_domain(domain):
            raise InvalidInput(f"invalid image reference {ref!r}: bad registry host {domain!r}",
                               hint=_HINT)
    else:
        domain, path = DOCKER_HUB, rest
    if domain in _HUB_ALIASES:
        domain = DOCKER_HUB
        if "/" not in path:
            path = "library/" + path
    if not path:
        raise InvalidInput(f"invalid image reference {ref!r}: no repository name", hint=_HINT)
    if path != path.lower() and _is_path(path.lower()):
        raise InvalidInput(f"invalid image reference {ref!r}: repository names must be "
                           "lowercase", hint=f"use {path.lower()!r}")
    if not _is_path(path):
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
