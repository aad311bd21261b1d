"""Which proxy a registry request takes (images/registry/proxy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ignitevm.errors import InvalidInput
from ignitevm.images.registry import proxy

PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_by_scheme_with_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    assert proxy.proxy_for("https://r.example/v2/") is None
    monkeypatch.setenv("HTTPS_PROXY", "proxy.example:3128")
    monkeypatch.setenv("http_proxy", "http://plain.example:8080")
    assert proxy.proxy_for("https://r.example/v2/") == "http://proxy.example:3128"
    assert proxy.proxy_for("http://r.example/v2/") == "http://plain.example:8080"
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("ALL_PROXY", "https://all.example")
    assert proxy.proxy_for("https://r.example/v2/") == "https://all.example"


@pytest.mark.parametrize(("url", "no_proxy", "direct"), [
    ("https://r.example/", "r.example", True),
    ("https://a.r.example/", "r.example", True),
    ("https://ar.example/", "r.example", False),
    ("https://r.example/", ".r.example", False),
    ("https://a.r.example/", ".r.example", True),
    ("https://a.r.example/", "*.r.example", True),
    ("https://r.example:5000/", "r.example:5000", True),
    ("https://r.example:5001/", "r.example:5000", False),
    ("https://r.example/", "r.example:443", True),
    ("https://10.1.2.3/", "10.0.0.0/8", True),
    ("https://11.1.2.3/", "10.0.0.0/8", False),
    ("https://[fd00::1]:5000/", "fd00::/8", True),
    ("https://[fd00::1]:5000/", "[fd00::1]:5000", True),
    ("https://x.example/", " other.example , *", True),
    ("https://R.Example./", "r.example", True),
    ("https://127.0.0.1:5000/", "", True),      # loopback: never proxied
    ("https://localhost:5000/", "", True),
    ("https://[::1]:5000/", "", True),
    ("https://r.example/", "", False),
])
def test_no_proxy(monkeypatch: pytest.MonkeyPatch, url: str, no_proxy: str,
                  direct: bool) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert (proxy.proxy_for(url) is None) == direct


def test_credentials_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    assert proxy.redact("http://u:p@proxy.example:3128/") == "http://proxy.example:3128"
    monkeypatch.setenv("HTTPS_PROXY", "socks5://u:secret@proxy.example:1080")
    with pytest.raises(InvalidInput) as err:
        proxy.proxy_for("https://r.example/")
    assert "secret" not in str(err.value) and "only http:// and https://" in str(err.value)
    monkeypatch.setenv("HTTPS_PROXY", "http://u:secret@proxy.example:port")
    with pytest.raises(InvalidInput, match="bad port") as err:
        proxy.proxy_for("https://r.example/")
    assert "secret" not in str(err.value)


def test_no_secret_crosses_a_proxy_in_the_clear(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    """Credentials in a header or a form (a refresh token) for a plain-HTTP host that
    a proxy would see are refused before anything is sent (nothing listens here)."""
    from ignitevm.api.refs import parse
    from ignitevm.errors import IgniteError
    from ignitevm.images.registry.client import Client

    monkeypatch.setenv("HTTP_PROXY", "http://u:secret@proxy.invalid:3128")
    hosts = {"plain.example:5000", "tokens.example"}
    with Client(parse("plain.example:5000/x:1"), insecure=hosts,
                config_dir=str(tmp_path)) as client:
        for kwargs in ({"headers": {"Authorization": "Basic eDp5"}},
                       {"data": {"grant_type": "refresh_token", "refresh_token": "t"}}):
            with pytest.raises(IgniteError, match="refusing to send credentials") as err:
                client._plain("POST", "http://tokens.example/token", **kwargs)
            assert "secret" not in str(err.value) and "proxy.invalid:3128" in str(err.value)


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY"])
@pytest.mark.parametrize("value", ["http://u:secret@[bad/", "u:secret@[::1", "http://[::1"])
def test_a_malformed_proxy_url_is_named_not_shown(monkeypatch: pytest.MonkeyPatch, name: str,
                                                  value: str) -> None:
    """A proxy URL the URL parser refuses is the user's input: one line naming the
    variable, never its value (it may hold a password)."""
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidInput) as err:
        proxy.proxy_for("https://r.example/")
    assert err.value.brief == f"invalid proxy URL in ${name}: not a URL"
    assert "secret" not in f"{err.value.brief} {err.value.hint}"


def test_ports_of_many_digits_are_no_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A NO_PROXY entry or a realm's host with a port of thousands of digits (int()
    refuses those) is read as a port it is not, without an exception."""
    from ignitevm.images.registry.hosts import is_loopback, split_host

    many = "9" * 5000
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", f"r.example:{many},[fd00::1]:{many},q.example:\u00b2")
    assert proxy.proxy_for("https://r.example/") == "http://proxy.example:3128"
    assert split_host(f"auth.example:{many}") == ("auth.example", None)
    assert split_host(f"[::1]:{many}") == ("::1", None)
    assert is_loopback(f"127.0.0.1:{many}") and not is_loopback(f"auth.example:{many}")
    assert split_host("[::1]:5000") == ("::1", 5000) and split_host("h:443") == ("h", 443)
