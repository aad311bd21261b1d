"""What a pull costs in requests, on the full path (any flag, auth, ``run --pull always``):
the client asks for the manifest straight away (no ``GET /v2/`` first) and learns the auth
challenge from a 401 to that request, as containerd's resolver does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Ignite
from tests.helpers.faultproxy import FaultProxy
from tests.helpers.registry import PASSWORD, USER, Registry, TokenServer
from tests.registry.conftest import creds_dir, fails

pytestmark = pytest.mark.registry


def _paths(proxy: FaultProxy) -> list[str]:
    return [s["path"] for s in proxy.faults.seen]


def test_second_pull_is_one_manifest_request(ig: Ignite, plain_registry: Registry) -> None:
    """An anonymous registry: a second pull of an unchanged tag through the full path
    (a flag keeps the CLI's fast path out) is one request, for the manifest."""
    with FaultProxy(plain_registry.host) as proxy:
        ref = f"{proxy.host}/test/busybox:1"
        ig("image", "pull", "--log-level", "info", ref)
        assert "/v2/" not in _paths(proxy)  # no ping on the first pull either
        proxy.faults.seen.clear()
        again = ig("image", "pull", "--log-level", "info", ref)
        assert "Image is up to date" in again.stderr
        assert _paths(proxy) == ["/v2/test/busybox/manifests/1"]
        proxy.faults.seen.clear()
        ig("image", "pull", "--log-level", "info", "--platform", "linux/amd64",
           f"{proxy.host}/test/multi:1")
        proxy.faults.seen.clear()
        ig("image", "pull", "--log-level", "info", "--platform", "linux/amd64",
           f"{proxy.host}/test/multi:1")  # an index: its chosen manifest is stored
        assert _paths(proxy) == ["/v2/test/multi/manifests/1"]


def test_second_pull_from_a_token_registry(ig: Ignite, tmp_path: Path,
                                           token_registry: tuple[Registry, TokenServer]
                                           ) -> None:
    """A token registry: the minimum is the manifest request answered 401 (the only way
    a client that holds no token learns the challenge), one token from the token server,
    the manifest again with it: two requests to the registry, one to the token server."""
    reg, tokens = token_registry
    for repo in ("public/busybox", "private/busybox"):  # anonymous token; user's token
        with FaultProxy(reg.host) as proxy:
            good = creds_dir(tmp_path / repo, proxy.host, USER, PASSWORD)
            ref = f"{proxy.host}/{repo}:1"
            ig("image", "pull", "--registry-config-dir", good, ref)
            proxy.faults.seen.clear()
            before = len(tokens.requests)
            ig("image", "pull", "--registry-config-dir", good, ref)
            seen = proxy.faults.seen
            assert [s["path"] for s in seen] == [f"/v2/{repo}/manifests/1"] * 2
            assert not seen[0]["auth"] and seen[1]["auth"].startswith("Bearer ")
            assert len(tokens.requests) - before == 1


def test_basic_registry_second_pull(ig: Ignite, auth_registry: Registry, tmp_path: Path
                                    ) -> None:
    """Basic auth: 401 with the challenge, then the manifest with the credentials."""
    with FaultProxy(auth_registry.host) as proxy:
        good = creds_dir(tmp_path / "good", proxy.host, USER, PASSWORD)
        ref = f"{proxy.host}/test/busybox:1"
        ig("image", "pull", "--registry-config-dir", good, ref)
        proxy.faults.seen.clear()
        ig("image", "pull", "--registry-config-dir", good, ref)
        seen = proxy.faults.seen
        assert [s["path"] for s in seen] == ["/v2/test/busybox/manifests/1"] * 2
        assert seen[1]["auth"].startswith("Basic ")
        proxy.faults.seen.clear()
        # no credentials: the one 401 says so (no second request without any)
        assert "wants credentials" in fails(ig, "image", "pull", "--log-level", "info", ref)
        assert [s["path"] for s in proxy.faults.seen] == ["/v2/test/busybox/manifests/1"]


def test_a_host_that_is_not_a_registry(ig: Ignite, tmp_path: Path) -> None:
    """A web server that is no registry: its 404 to the manifest is checked against
    ``GET /v2/`` (on this error path only), and said so."""
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        err = fails(ig, "image", "pull", f"127.0.0.1:{srv.server_address[1]}/a/b:1")
    finally:
        srv.shutdown()
        srv.server_close()
    assert "is not an OCI registry (GET /v2/ answered 404" in err


def test_create_pull_always(ig: Ignite, plain_registry: Registry) -> None:
    """``create --pull always`` (as ``run --pull always``) of an image and a kernel already
    here: one manifest request each."""
    with FaultProxy(plain_registry.host) as proxy:
        image, kernel = f"{proxy.host}/test/busybox:1", f"{proxy.host}/test/kernel:1"
        ig("create", image, "--kernel-image", kernel, "--name", "vm1")
        proxy.faults.seen.clear()
        ig("create", image, "--kernel-image", kernel, "--name", "vm2", "--pull", "always")
        assert sorted(_paths(proxy)) == ["/v2/test/busybox/manifests/1",
                                          "/v2/test/kernel/manifests/1"]
