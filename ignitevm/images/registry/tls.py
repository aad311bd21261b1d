"""Which scheme and certificates a registry host gets.

HTTPS is verified against the system CAs plus the per-registry files in
Docker's layout (``certs.d/HOST:PORT/*.crt`` as CAs, ``*.cert`` with its
``*.key`` as a client certificate) under ``/etc/docker/certs.d`` and
``/etc/containers/certs.d`` (``IGNITE_CERTS_DIRS``, a colon list, replaces them).

Plain HTTP is allowed only for loopback registries (as Docker does) and for
registries opted in with ``--insecure-registry HOST[:PORT]`` or
``IGNITE_INSECURE_REGISTRIES``; even then HTTPS is tried first, and a
registry that does not speak TLS is the only reason to fall back.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

from ignitevm.errors import InvalidInput
from ignitevm.images.registry.hosts import (  # noqa: F401 (imported from here)
    CERTS_DIRS,
    INSECURE_ENV,
    cert_dir_names,
    is_loopback,
    split_host,
)

if TYPE_CHECKING:
    import ssl
    from pathlib import Path


class Transport(NamedTuple):
    host: str
    http_allowed: bool  # plain HTTP may be used if the registry does not speak TLS
    opted_in: bool  # named insecure by the user: TLS is not verified either


def insecure_registries(flags: list[str] | None = None) -> set[str]:
    names = set(flags or [])
    names.update(n.strip() for n in os.environ.get(INSECURE_ENV, "").split(",") if n.strip())
    for name in names:
        if "://" in name or "/" in name:
            raise InvalidInput(f"invalid insecure registry {name!r}: give HOST or HOST:PORT")
    return names


def certs_dirs() -> list[Path]:
    from pathlib import Path

    return [Path(d) for d in cert_dir_names()]


def transport(host: str, insecure: set[str]) -> Transport:
    """What ``host`` ("name" or "name:port") may use."""
    name = split_host(host)[0]
    opted_in = host in insecure or name in insecure
    return Transport(host, opted_in or is_loopback(host), opted_in)


def ssl_context(t: Transport) -> ssl.SSLContext:
    """System CAs plus the host's certs.d files (made only when HTTPS is used: ~60 ms)."""
    import ssl

    host, opted_in = t.host, t.opted_in
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    if opted_in:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    for base in certs_dirs():
        folder = base / host
        if not folder.is_dir():
            continue
        for ca in sorted(folder.glob("*.crt")):
            try:
                context.load_verify_locations(cafile=str(ca))
            except (OSError, ssl.SSLError) as exc:
                raise InvalidInput(f"cannot load the CA certificate {ca}: {exc}") from None
        for cert in sorted(folder.glob("*.cert")):
            key = cert.with_suffix(".key")
            if not key.is_file():
                raise InvalidInput(f"client certificate {cert} has no key {key.name} beside it")
            try:
                context.load_cert_chain(str(cert), str(key))
            except (OSError, ssl.SSLError) as exc:
                raise InvalidInput(f"cannot load the client certificate {cert}: {exc}") from None
    return context
