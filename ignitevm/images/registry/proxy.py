"""Which HTTP proxy a registry request goes through: ``HTTPS_PROXY``, ``HTTP_PROXY``,
``ALL_PROXY`` and ``NO_PROXY`` (either case), read as Docker and curl read them.

- ``https://`` requests take ``HTTPS_PROXY``, ``http://`` ones ``HTTP_PROXY``;
  either falls back to ``ALL_PROXY``. A value without a scheme is ``http://``;
  ``http://`` and ``https://`` proxies are supported (SOCKS is refused).
- ``NO_PROXY``: a comma list of ``*`` (no proxy at all), host names (``example.com``
  also covers ``x.example.com``; ``.example.com`` only its subdomains), IP
  addresses and CIDR ranges, each optionally with ``:PORT``.
- Loopback hosts (``localhost``, 127.0.0.0/8, ``::1``) never go through a proxy.

HTTPS goes through the proxy in a ``CONNECT`` tunnel: the proxy sees the host and
port, never the requests (nor their ``Authorization``). A plain-HTTP request is
sent to the proxy itself, so one that would carry credentials is refused
(client.py); proxy URLs are shown without their user and password.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse

from ignitevm.errors import InvalidInput
from ignitevm.images.registry.hosts import port_number


def _env(*names: str) -> str:
    return _find(*names)[1]


def _find(*names: str) -> tuple[str, str]:
    """The first of ``names`` set (either case): its name as set and its value."""
    for name in names:
        for variant in (name.lower(), name.upper()):
            value = os.environ.get(variant, "").strip()
            if value:
                return variant, value
    return "", ""


def proxy_for(url: str) -> str | None:
    """The proxy URL for a request to ``url``, or None to connect directly."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if _is_loopback(host) or bypassed(host, port, _env("NO_PROXY")):
        return None
    name, value = _find("HTTPS_PROXY" if parts.scheme == "https" else "HTTP_PROXY",
                        "ALL_PROXY")
    return normalize(value, name) if value else None


def normalize(value: str, name: str = "HTTPS_PROXY") -> str:
    """A proxy URL from the environment variable ``name``'s value (``host:port`` means
    ``http://host:port``)."""
    if "://" not in value:
        value = "http://" + value
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:  # (a bracket left open...: not shown, it may hold a password)
        raise InvalidInput(f"invalid proxy URL in ${name}: not a URL",
                           hint=f"set {name} to http://HOST:PORT, or unset it") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(f"unsupported proxy {redact(value)!r}: only http:// and https:// "
                           "proxies are supported", hint="set HTTPS_PROXY/HTTP_PROXY to an "
                           "HTTP proxy, or unset it")
    try:
        parts.port  # noqa: B018 (raises on a malformed port)
    except ValueError:
        raise InvalidInput(f"invalid proxy {redact(value)!r}: bad port") from None
    if not parts.hostname:
        raise InvalidInput(f"invalid proxy {redact(value)!r}: no host")
    return value


def redact(url: str) -> str:
    """``url`` without a user or password (for messages and logs)."""
    parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, "", "", ""))


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` (its value) names ``host:port``."""
    host = host.lower().rstrip(".")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, want_port = _split(entry)
        if want_port is not None and want_port != port:
            continue
        if "/" in name:
            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.rstrip(".")
        if name.startswith("*."):
            name = name[1:]
        if name.startswith("."):
            if host.endswith(name):
                return True
        elif host == name or host.endswith("." + name):
            return True
    return False


def _split(entry: str) -> tuple[str, int | None]:
    """``"[::1]:5000"``, ``"host:80"``, ``"10.0.0.0/8"``, ``"::1"`` -> (name, port);
    a port that is none (``host:x``, thousands of digits) is -1: no port matches it."""
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        port = rest[1:]
    elif entry.count(":") == 1:
        name, _, port = entry.partition(":")
    else:
        return entry, None
    return name, (-1 if (n := port_number(port)) is None else n) if port else None


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
