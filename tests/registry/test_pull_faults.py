"""Faults between the client and a real registry: a proxy cuts, alters, delays, redirects."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import Ignite
from tests.helpers.faultproxy import FaultProxy, Faults
from tests.helpers.registry import Registry, TokenServer
from tests.registry.conftest import fails

pytestmark = pytest.mark.registry


def test_digest_mismatch(ig: Ignite, plain_registry: Registry, tmp_path: Path) -> None:
    with FaultProxy(plain_registry.host, Faults(corrupt_blobs=True)) as proxy:
        err = fails(ig, "image", "pull", f"{proxy.host}/test/busybox:1")
    assert "does not match its digest" in err
    content = ig.root / "content"
    assert not list((content / "ingest").glob("*[0-9a-f]"))  # nothing cached
    assert len(list((content / "blobs" / "sha256").iterdir())) == 1  # the manifest only


def test_cut_connection_resumes(ig: Ignite, plain_registry: Registry) -> None:
    with FaultProxy(plain_registry.host, Faults(cut_blobs=2, busy=1, too_many=1)) as proxy:
        ig("image", "pull", f"{proxy.host}/test/busybox:1")
        ranges = [s["range"] for s in proxy.faults.seen if s["range"]]
    assert ranges and all(r.startswith("bytes=") for r in ranges)


def test_truncated_blob(ig: Ignite, plain_registry: Registry) -> None:
    """A registry that always cuts a blob short: the pull fails; the next one resumes."""
    with FaultProxy(plain_registry.host, Faults(cut_always=True)) as proxy:
        err = fails(ig, "image", "pull", f"{proxy.host}/test/busybox:1")
    assert "truncated" in err and "the download resumes" in err
    assert not list((ig.root / "content" / "blobs" / "sha256").glob("*"))[1:]  # manifest only
    # (parts are kept by digest: any registry that serves the blob can finish it)
    with FaultProxy(plain_registry.host) as proxy:
        ig("image", "pull", f"{proxy.host}/test/busybox:1")
        assert any(s["range"] for s in proxy.faults.seen)


def test_busy_registry(ig: Ignite, plain_registry: Registry) -> None:
    with FaultProxy(plain_registry.host, Faults(busy=10)) as proxy:
        err = fails(ig, "image", "pull", f"{proxy.host}/test/busybox:1")
    assert "503" in err


def test_redirect_drops_authorization(ig: Ignite,
                                      token_registry: tuple[Registry, TokenServer]) -> None:
    reg, _ = token_registry
    with FaultProxy(reg.host, Faults(redirect_blobs=True)) as proxy:
        ig("image", "pull", f"{proxy.host}/public/busybox:1")
        seen = proxy.faults.seen
    redirected = [s for s in seen if s["host"].startswith("localhost")]
    assert redirected and not any(s["auth"] for s in redirected)
    assert any(s["auth"].startswith("Bearer ") for s in seen if s["host"].startswith("127."))


def test_schema1_refused(ig: Ignite, plain_registry: Registry) -> None:
    body = json.dumps({"schemaVersion": 1, "name": "test/busybox", "tag": "1",
                       "fsLayers": [], "history": []}).encode()
    with FaultProxy(plain_registry.host, Faults(manifest_body=body)) as proxy:
        err = fails(ig, "image", "pull", f"{proxy.host}/test/busybox:1")
    assert "schema 1" in err


def test_disk_full_mid_pull(ig: Ignite, plain_registry: Registry) -> None:
    """Files may not grow past 300 kB (prlimit; Python gets EFBIG as on a full disk):
    one error line, no image, no blob under its final name; the next pull completes."""
    import shutil
    import subprocess
    import sys

    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    ref = f"{plain_registry.host}/test/busybox:1"
    env = {**os.environ, **ig.env, "IGNITE_ROOT": str(ig.root)}
    res = subprocess.run(["prlimit", "--fsize=300000", sys.executable, "-m", "ignitevm", "image",
                          "pull", ref], env=env, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "error: cannot write blob" in res.stderr and "free some space" in res.stderr
    assert ig("image", "ls", "-q").stdout == ""
    blobs = ig.root / "content" / "blobs" / "sha256"
    assert all(p.stat().st_size < 300000 for p in blobs.iterdir())
    ig("image", "pull", ref)


def test_shared_layers_fetched_once(ig: Ignite, plain_registry: Registry) -> None:
    """Two images with the same layers, pulled at the same time and then again by another
    name: every layer crosses the wire once."""
    import subprocess
    import sys

    with FaultProxy(plain_registry.host) as proxy:
        env = {**os.environ, **ig.env, "IGNITE_ROOT": str(ig.root)}
        procs = [subprocess.Popen([sys.executable, "-m", "ignitevm", "image", "pull", "-q",
                                   f"{proxy.host}/test/{name}:1"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL)
                 for name in ("busybox", "multi")]
        for p in procs:
            assert p.wait() == 0, p.stderr.read() if p.stderr else ""
        ig("image", "pull", "--name", "again", f"{proxy.host}/test/busybox:1")
        blobs = [s["path"] for s in proxy.faults.seen if "/blobs/" in s["path"]]
    digests = [b.rsplit("/", 1)[1] for b in blobs]
    layers = {d for d in digests if digests.count(d) > 1}
    assert not layers, f"fetched more than once: {layers}"
    assert len(ig("image", "ls", "-q").stdout.split()) == 3


def test_same_pull_twice_at_once(ig: Ignite, plain_registry: Registry) -> None:
    """Two pulls of one reference at the same time: both succeed, one image."""
    import subprocess
    import sys

    env = {**os.environ, **ig.env, "IGNITE_ROOT": str(ig.root)}
    ref = f"{plain_registry.host}/test/busybox:1"
    procs = [subprocess.Popen([sys.executable, "-m", "ignitevm", "image", "pull", "-q", ref],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True) for _ in range(3)]
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ids = ig("image", "ls", "-q").stdout.split()
    assert len(ids) == 1 and all(out.strip() == ids[0] for out, _ in outs)


def _digest_of(reg: Registry, repo: str, tag: str) -> str:
    """The digest the registry itself gives the manifest of ``repo:tag``."""
    import httpx

    from ignitevm.images.registry.manifests import ACCEPT

    resp = httpx.get(f"http://{reg.host}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
    resp.raise_for_status()
    return resp.headers["docker-content-digest"]


def _nothing_kept(ig: Ignite) -> None:
    content = ig.root / "content"
    assert not list((content / "blobs" / "sha256").glob("*"))  # not even the manifest
    assert not list((content / "ingest").glob("*[0-9a-f]"))
    assert ig("image", "ls", "-q").stdout == ""


def test_manifest_not_matching_its_header(ig: Ignite, plain_registry: Registry) -> None:
    """A tag's manifest whose bytes do not hash to the registry's Docker-Content-Digest
    (a proxy altered it): refused, nothing kept."""
    with FaultProxy(plain_registry.host, Faults(alter_manifests="/manifests/")) as proxy:
        err = fails(ig, "image", "pull", f"{proxy.host}/test/busybox:1")
    real = _digest_of(plain_registry, "test/busybox", "1")
    assert f"tag 1 of {proxy.host}/test/busybox does not match its digest {real}" in err
    assert "nothing was kept" in err
    _nothing_kept(ig)


@pytest.mark.parametrize("header", [True, False])
def test_manifest_not_matching_the_digest_asked(ig: Ignite, plain_registry: Registry,
                                                header: bool) -> None:
    """``repo@sha256:…`` whose answer hashes to something else: refused whether or not the
    registry's header (which the proxy keeps, or drops) agrees with the digest asked."""
    real = _digest_of(plain_registry, "test/busybox", "1")
    faults = Faults(alter_manifests="/manifests/", drop_digest=not header)
    with FaultProxy(plain_registry.host, faults) as proxy:
        err = fails(ig, "image", "pull", f"{proxy.host}/test/busybox@{real}")
    assert f"manifest {real} of {proxy.host}/test/busybox does not match its digest" in err
    _nothing_kept(ig)


def test_index_entry_not_matching_its_digest(ig: Ignite, plain_registry: Registry) -> None:
    """A multi-platform tag whose index is intact but whose chosen manifest (asked by the
    digest the index lists) comes altered: refused, the index not kept either."""
    faults = Faults(alter_manifests="/manifests/sha256:", drop_digest=True)
    with FaultProxy(plain_registry.host, faults) as proxy:
        err = fails(ig, "image", "pull", "--platform", "linux/amd64",
                    f"{proxy.host}/test/multi:1")
        asked = [s["path"] for s in proxy.faults.seen]
    assert asked[0] == "/v2/test/multi/manifests/1" and "/manifests/sha256:" in asked[1]
    assert "does not match its digest" in err
    _nothing_kept(ig)


def test_retry_after_http_date(ig: Ignite, plain_registry: Registry) -> None:
    """``Retry-After`` as an HTTP date (RFC 9110) is honoured: the debug log shows the
    wait it asks for (about 3 s), not the 0.2 s back-off; a date far ahead is capped."""
    import re
    import time
    from email.utils import formatdate

    when = formatdate(time.time() + 3, usegmt=True)
    with FaultProxy(plain_registry.host, Faults(busy=1, retry_after=when)) as proxy:
        res = ig("image", "pull", "--log-level", "debug", f"{proxy.host}/test/busybox:1")
    waits = [float(w) for w in re.findall(r": 503; retrying in ([0-9.]+)s", res.stderr)]
    assert len(waits) == 1 and 1.0 < waits[0] <= 3.0, res.stderr
