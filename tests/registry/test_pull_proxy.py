"""Pulls through an HTTP proxy (HTTPS_PROXY / HTTP_PROXY / NO_PROXY) from real
docker-registry processes, reached under names that only the test proxy knows (so the
registries on loopback are not loopback to the client: loopback is never proxied)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Ignite
from tests.helpers.httpproxy import HTTPProxy
from tests.helpers.registry import PASSWORD, USER, Registry, TestCA, free_port, running_registry
from tests.registry.conftest import creds_dir, fails

pytestmark = pytest.mark.registry

TLS_NAME = "registry.proxied.example"
PLAIN_NAME = "plain.proxied.example"


@pytest.fixture(scope="module")
def named_tls_registry(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA,
                       test_layout: dict[str, str]) -> Iterator[Registry]:
    pair = test_ca.issue("proxied", [f"DNS:{TLS_NAME}"])
    with running_registry(tmp_path_factory.mktemp("reg-proxied"), tls=pair, ca=test_ca.cert,
                          users={USER: PASSWORD}) as reg:
        reg.push(test_layout["busybox"], "test/busybox:1")
        yield reg


@pytest.fixture
def proxy(named_tls_registry: Registry) -> Iterator[HTTPProxy]:
    with HTTPProxy({TLS_NAME: "127.0.0.1", PLAIN_NAME: "127.0.0.1"}) as p:
        yield p


def _port(reg: Registry) -> str:
    return reg.host.rpartition(":")[2]


def _trust(home: Path, reg: Registry, name: str) -> None:
    folder = home / "certs.d" / f"{name}:{_port(reg)}"
    folder.mkdir(parents=True)
    assert reg.ca is not None
    (folder / "ca.crt").write_bytes(reg.ca.read_bytes())


def test_https_goes_through_a_tunnel(ig: Ignite, named_tls_registry: Registry,
                                     proxy: HTTPProxy, home: Path, tmp_path: Path) -> None:
    reg = named_tls_registry
    host = f"{TLS_NAME}:{_port(reg)}"
    _trust(home, reg, TLS_NAME)
    creds = creds_dir(tmp_path / "creds", host, USER, PASSWORD)
    ig.env["HTTPS_PROXY"] = proxy.url
    ig("image", "pull", "--registry-config-dir", creds, f"{host}/test/busybox:1")
    # The proxy saw tunnels to the registry, never a request, nor credentials.
    assert proxy.seen and {(s.method, s.target) for s in proxy.seen} == {("CONNECT", host)}
    assert not any(k.lower() == "authorization" for s in proxy.seen for k in s.headers)


def test_no_proxy_and_loopback_connect_directly(ig: Ignite, named_tls_registry: Registry,
                                                plain_registry: Registry, proxy: HTTPProxy,
                                                home: Path) -> None:
    reg = named_tls_registry
    _trust(home, reg, TLS_NAME)
    ig.env.update(HTTPS_PROXY=proxy.url, NO_PROXY=f"localhost,.other.example,{TLS_NAME}")
    # Not proxied: the name is resolved here, where it means nothing.
    assert "unknown registry host" in fails(
        ig, "image", "pull", f"{TLS_NAME}:{_port(reg)}/test/busybox:1")
    assert not proxy.seen
    # Loopback registries never go through a proxy, even a dead one.
    dead = f"http://127.0.0.1:{free_port()}"
    ig.env.update(HTTPS_PROXY=dead, HTTP_PROXY=dead, ALL_PROXY=dead, NO_PROXY="")
    ig("image", "pull", f"{plain_registry.host}/test/busybox:1")


def test_plain_http_registry_through_the_proxy(ig: Ignite, plain_registry: Registry,
                                               auth_registry: Registry, tmp_path: Path) -> None:
    with HTTPProxy({PLAIN_NAME: "127.0.0.1"}) as proxy:
        ig.env.update(HTTP_PROXY=proxy.url, HTTPS_PROXY=proxy.url)
        # Anonymous: forwarded (the proxy sees the requests, there is nothing secret in them)
        host = f"{PLAIN_NAME}:{_port(plain_registry)}"
        ig("image", "pull", "--insecure-registry", host, f"{host}/test/busybox:1")
        assert any(s.method == "GET" and s.target.startswith(f"http://{host}/v2/")
                   for s in proxy.seen)
        # With credentials: refused, as they would cross the proxy in the clear.
        host = f"{PLAIN_NAME}:{_port(auth_registry)}"
        creds = creds_dir(tmp_path / "creds", host, USER, PASSWORD)
        seen = len(proxy.seen)
        err = fails(ig, "image", "pull", "--insecure-registry", host, "--registry-config-dir",
                    creds, f"{host}/test/busybox:1")
        assert "refusing to send credentials" in err and "NO_PROXY" in err
        assert not any("authorization" in (k.lower() for k in s.headers)
                       for s in proxy.seen[seen:])


def test_proxy_credentials_and_failures(ig: Ignite, named_tls_registry: Registry,
                                        home: Path) -> None:
    reg = named_tls_registry
    host = f"{TLS_NAME}:{_port(reg)}"
    _trust(home, reg, TLS_NAME)
    with HTTPProxy({TLS_NAME: "127.0.0.1"}, user="proxyuser", password="s3cret") as proxy:
        ig.env["HTTPS_PROXY"] = f"http://proxyuser:wrong@127.0.0.1:{proxy.port}"
        err = fails(ig, "image", "pull", f"{host}/test/busybox:1")
        assert "proxy http://127.0.0.1:" in err and "wrong" not in err
        ig.env["HTTPS_PROXY"] = f"http://proxyuser:s3cret@127.0.0.1:{proxy.port}"
        # (the registry wants credentials: the tunnel itself was granted)
        assert "wants credentials" in fails(ig, "image", "pull", f"{host}/test/busybox:1")
    ig.env["HTTPS_PROXY"] = f"127.0.0.1:{free_port()}"  # (no scheme: http://)
    err = fails(ig, "image", "pull", f"{host}/test/busybox:1")
    assert "cannot connect to the proxy http://127.0.0.1:" in err
    ig.env["HTTPS_PROXY"] = "socks5://127.0.0.1:1080"
    assert "only http:// and https:// proxies" in fails(ig, "image", "pull",
                                                        f"{host}/test/busybox:1")
