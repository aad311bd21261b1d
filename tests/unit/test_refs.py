"""Image references parsed as Docker and containerd do."""

from __future__ import annotations

import pytest

from ignitevm.api import refs
from ignitevm.errors import InvalidInput

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("ref", "full", "familiar"), [
    ("alpine", "docker.io/library/alpine:latest", "alpine:latest"),
    ("alpine:3.19", "docker.io/library/alpine:3.19", "alpine:3.19"),
    ("library/alpine", "docker.io/library/alpine:latest", "alpine:latest"),
    ("docker.io/alpine", "docker.io/library/alpine:latest", "alpine:latest"),
    ("index.docker.io/library/alpine", "docker.io/library/alpine:latest", "alpine:latest"),
    ("weaveworks/ignite-ubuntu", "docker.io/weaveworks/ignite-ubuntu:latest",
     "weaveworks/ignite-ubuntu:latest"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("localhost:5000/team/base:1.2", "localhost:5000/team/base:1.2",
     "localhost:5000/team/base:1.2"),
    ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
    ("ghcr.io/org/app", "ghcr.io/org/app:latest", "ghcr.io/org/app:latest"),
    ("registry:5000/app", "registry:5000/app:latest", "registry:5000/app:latest"),
    ("Registry/app", "Registry/app:latest", "Registry/app:latest"),
    ("[::1]:5000/app:v1", "[::1]:5000/app:v1", "[::1]:5000/app:v1"),
    ("a/b/c/d:e_f.g-h", "docker.io/a/b/c/d:e_f.g-h", "a/b/c/d:e_f.g-h"),
    ("my__app-x.y", "docker.io/library/my__app-x.y:latest", "my__app-x.y:latest"),
    (f"ghcr.io/org/app@{D}", f"ghcr.io/org/app@{D}", f"ghcr.io/org/app@{D}"),
    (f"app:1@{D}", f"docker.io/library/app:1@{D}", f"app:1@{D}"),
    ("  alpine  ", "docker.io/library/alpine:latest", "alpine:latest"),
])
def test_parse(ref: str, full: str, familiar: str) -> None:
    parsed = refs.parse(ref)
    assert str(parsed) == full
    assert parsed.familiar() == familiar
    assert refs.normalize(ref) == familiar
    assert refs.parse(full) == parsed  # the full form parses back to itself


def test_digest_wins_over_tag() -> None:
    r = refs.parse(f"localhost:5000/app:1@{D}")
    assert (r.domain, r.path, r.tag, r.digest, r.reference) == (
        "localhost:5000", "app", "1", D, D)
    assert r.with_digest(D) == f"localhost:5000/app@{D}"
    assert refs.parse("app").reference == "latest"


@pytest.mark.parametrize(("ref", "why"), [
    ("", "invalid"),
    ("Alpine", "lowercase"),
    ("docker.io/Library/alpine", "lowercase"),
    ("ghcr.io/Org/App:1", "lowercase"),
    ("x:", "bad tag"),
    ("app:-x", "bad tag"),
    ("app:" + "t" * 129, "bad tag"),
    ("app@sha256:abc", "bad digest"),
    ("app@sha256:" + "AB" * 32, "64"),
    ("app@", "bad digest"),
    ("-app", "invalid"),
    ("app//x", "invalid"),
    ("a" * 256, "longer"),
    ("bad_host-.io/app", "bad registry host"),
    ("host:port:5000/app", "bad"),
    ("app with space", "invalid"),
    ("localhost:99999/x", "port 99999 of registry host 'localhost:99999' is out of range"),
    ("localhost:0/x:1", "out of range"),
    ("127.0.0.1:65536/x", "out of range"),
    ("[::1]:70000/x", "out of range"),
    (f"registry.example:123456/app@{D}", "out of range"),
    ("a:" + "9" * 5000 + "/x", "out of range"),  # (int() of so many digits: ValueError)
    ("[::1]:" + "0" * 4400 + "1/x", "out of range"),
])
def test_refused(ref: str, why: str) -> None:
    with pytest.raises(InvalidInput) as err:
        refs.parse(ref)
    assert why in str(err.value)
    assert not refs.is_reference(ref)


@pytest.mark.parametrize("ref", ["localhost:1/x", "localhost:65535/x:1", "[::1]:443/app",
                                 "[::1]/app", "registry.example:05000/app"])
def test_ports_in_range(ref: str) -> None:
    assert refs.parse(ref).domain == ref.split("/")[0]


@pytest.mark.parametrize(("ref", "hint"), [
    ("Alpine:3", "alpine:3"),
    ("Alpine", "alpine"),
    ("docker.io/Library/Alpine:3.19", "alpine:3.19"),
    ("localhost:5000/K:1", "localhost:5000/k:1"),
    ("ghcr.io/Org/App:1", "ghcr.io/org/app:1"),
    ("Team/App:v2", "team/app:v2"),  # (the uppercase first word is a host, as Docker reads it)
    (f"localhost:5000/Team/App:1@{D}", f"localhost:5000/team/app:1@{D}"),
])
def test_lowercase_hint(ref: str, hint: str) -> None:
    """The hint is the whole reference to type instead: host, repository and tag."""
    with pytest.raises(InvalidInput) as err:
        refs.parse(ref)
    assert "must be lowercase" in err.value.brief
    assert err.value.hint == f"use {hint!r}"
    assert refs.parse(hint)  # (and it parses)
