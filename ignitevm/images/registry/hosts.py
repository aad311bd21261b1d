"""Registry hosts: loopback or not, and where their certificates are looked for.

Light to import (the CLI's fast pull path reads it); :mod:`tls` builds on it.
"""

from __future__ import annotations

import os

CERTS_DIRS = ("/etc/containers/certs.d", "/etc/docker/certs.d")
INSECURE_ENV = "IGNITE_INSECURE_REGISTRIES"


def split_host(host: str) -> tuple[str, int | None]:
    """``"[::1]:5000"`` -> ("::1", 5000); ``"ghcr.io"`` -> ("ghcr.io", None)."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, port_number(rest[1:]) if rest.startswith(":") else None
    name, _, port = host.partition(":")
    return name, port_number(port)


def port_number(text: str) -> int | None:
    """A port written in ASCII digits (at most 5: a realm or a setting is untrusted,
    and int() of thousands of digits raises), or None."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 5 else None


def is_loopback(host: str) -> bool:
    name = split_host(host)[0]
    if name == "localhost":
        return True
    if not name[:1].isdigit() and ":" not in name:
        return False  # (a host name: no address starts so)
    parts = name.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3 and (
            p == "0" or p[0] != "0") and int(p) <= 255 for p in parts):
        return parts[0] == "127"  # (plain dotted IPv4, as ipaddress reads it: 127/8)
    import ipaddress  # (~1 ms, for the rest: IPv6, and what it refuses)

    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def cert_dir_names() -> list[str]:
    """The folders whose ``HOST[:PORT]/`` subfolders hold a registry's certificates
    (``IGNITE_CERTS_DIRS``, a colon list, replaces the default ones)."""
    env = os.environ.get("IGNITE_CERTS_DIRS")
    return [d for d in (env.split(":") if env is not None else CERTS_DIRS) if d]
