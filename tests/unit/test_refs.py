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
])
def test_refused(ref: str, why: str) -> None:
    with pytest.raises(InvalidInput) as err:
        refs.parse(ref)
    assert why in str(err.value)
    assert not refs.is_reference(ref)
