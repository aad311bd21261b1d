"""``ignite image pull REF`` of a tag already pulled: one manifest request, no command tree.

A second pull of an unchanged tag is a measured figure (bench/pull.py), and
the full path's start-up (argparse, httpx, the store's types) is most of it.
Here the plain form (``image pull [-q] REGISTRY/REPO:TAG``, no other flag) is
read with the few modules it needs: the Image of that name is found in the
store, recording ``oci://REPO@DIGEST``; the tag's manifest is fetched with one
GET, without credentials, and checked against its digest; if it is that
image's manifest (or an index whose entry for this host's platform is), the
image is up to date and the same lines as the full path's are printed.

Anything else returns None before anything is changed, and the full path runs
and does what it always does: a flag, a digest reference, Docker Hub, the
Configuration file, registries.conf saying anything of the name, proxies,
``IGNITE_INSECURE_REGISTRIES``, a registry not known to speak plain HTTP on
loopback (plain HTTP is used only where the full path uses it: a loopback
registry it found without TLS), a
``certs.d`` folder for the host, any answer but a plain 200 (401 and a token
dance, redirects, errors, chunked bodies), a manifest that does not match its
digest or names other content, a network error or a timeout. No credential is
read or sent, so none can leak; HTTPS is verified against the system CAs
exactly as the full path does when the host has no ``certs.d`` folder.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# (typing.TYPE_CHECKING: typing, which loads re, costs ~3 ms of a ~15 ms goal; so
# do the modules this path reads: api/refs, registry/mirrors, manifests, cli/fastvm)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ignitevm.api.refs import Reference

# (as store.layout, cli.config and blobs.ContentStore have them: not imported, they
# load pathlib; tests/unit/test_fastpull.py holds them equal)
DEFAULT_ROOT = "/var/lib/ignite"
METADATA = "metadata.json"
CONFIG_FILE = "/etc/ignite/config.yaml"
TIMEOUT = 10.0  # seconds for the connection and the answer (then the full path runs)
_MAX_HEADERS = 64 << 10
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")
_READ = {"content-length", "content-type", "docker-content-digest", "transfer-encoding"}
_SCHEMES_FILE = "http-registries"  # (content/): registries the full path found without TLS


def run(words: Sequence[str]) -> int | None:
    """``[-q] REF`` (the words after ``image pull``); None when the full path must."""
    from ignitevm.cli.fastvm import debugging

    quiet = False
    rest = list(words)
    if rest[:1] in (["-q"], ["--quiet"]):
        quiet, rest = True, rest[1:]
    if len(rest) != 1 or rest[0].startswith("-") or debugging() or _unusual_environment():
        return None
    from ignitevm.api.refs import parse
    from ignitevm.errors import InvalidInput

    try:
        ref = parse(rest[0])
    except InvalidInput:
        return None
    if ref.digest or not ref.tag or ref.domain == "docker.io" or _mirrored(ref):
        return None
    root = os.environ.get("IGNITE_ROOT") or DEFAULT_ROOT  # (as store.layout.default_root)
    found = _image(os.path.join(root, "image"), ref.familiar())
    if found is None:
        return None
    uid, recorded = found
    if not recorded.startswith(f"oci://{ref.repository}@sha256:"):
        return None
    digest = recorded.rpartition("@")[2]
    if _current(ref, os.path.join(root, "content", _SCHEMES_FILE)) != digest:
        return None
    if quiet:
        print(uid, flush=True)
        return 0
    err = sys.stderr
    err.write(
        f"{ref.tag}: Pulling from {ref.familiar_name()}\nDigest: {digest}\n"
        f"Status: Image is up to date for {ref.familiar()}\n"
    )
    err.flush()
    print(ref, flush=True)
    return 0


def _unusual_environment() -> bool:
    """Settings the full path reads that this one does not: it must run then."""
    from ignitevm.images.registry.hosts import INSECURE_ENV

    env = os.environ
    if any(env.get(v) or env.get(v.upper()) for v in _PROXY_VARS):
        return True
    if env.get(INSECURE_ENV, "").strip():
        return True
    return os.path.exists(CONFIG_FILE)  # (it may name a credentials folder, insecure hosts)


def _mirrored(ref: Reference) -> bool:
    """Whether registries.conf says anything of ``ref`` (a mirror, another location,
    insecure, blocked) or cannot be read: the full path reads it then. (A file of
    comments only, as Debian ships it, says nothing: no TOML parser is loaded.)"""
    from ignitevm.errors import IgniteError
    from ignitevm.images.registry import mirrors

    try:
        with open(mirrors.conf_file(), "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    if all(not line.strip() or line.lstrip().startswith(b"#") for line in text.splitlines()):
        return False
    try:
        return mirrors.endpoints(ref) != [mirrors.Endpoint(ref, False, False)]
    except (IgniteError, ValueError):
        return True


def _image(kind_dir: str, name: str) -> tuple[str, str] | None:
    """The UID and recorded identity of the one image named ``name`` (as the store's
    exact-name lookup finds it), or None."""
    import json

    try:
        uids = sorted(os.listdir(kind_dir))
    except OSError:
        return None
    for uid in uids:
        try:
            with open(os.path.join(kind_dir, uid, METADATA), "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError, RecursionError):
            return None  # (the full path says what it says of it)
        meta = data.get("metadata") if isinstance(data, dict) else None
        if not isinstance(meta, dict):
            return None
        if name not in (meta.get("name"), meta.get("uid")):
            continue
        status = data.get("status")
        source = status.get("ociSource") if isinstance(status, dict) else None
        ident = source.get("id") if isinstance(source, dict) else None
        if meta.get("uid") != uid or not isinstance(ident, str):
            return None
        return uid, ident
    return None


def _current(ref: Reference, schemes_file: str) -> str | None:
    """The digest of the image manifest ``ref`` names for this host's platform, from one
    GET of its tag; None when the answer is anything but plain."""
    try:  # (built in: OpenSSL's libcrypto is not loaded to hash one manifest)
        from _sha256 import sha256
    except ImportError:
        from hashlib import sha256

    from ignitevm.errors import IgniteError
    from ignitevm.images.registry import manifests
    from ignitevm.images.registry.hosts import cert_dir_names, is_loopback

    host = ref.domain
    if is_loopback(host):
        try:
            with open(schemes_file) as f:
                known_http = host in f.read().split()
        except OSError:
            return None
        if not known_http:
            return None  # (the full path tries TLS first)
        tls = False
    else:
        if any(os.path.exists(os.path.join(d, host)) for d in cert_dir_names()):
            return None
        tls = True
    path = f"/v2/{ref.path}/manifests/{ref.tag}"
    answer = _get(host, tls, path, {"Accept": manifests.ACCEPT})
    if answer is None:
        return None
    headers, body = answer
    digest = "sha256:" + sha256(body).hexdigest()
    if headers.get("docker-content-digest", digest) != digest:
        return None
    where = f"tag {ref.tag} of {ref.repository}"
    try:
        top = manifests.parse(body, digest, where, headers.get("content-type", ""))
        if not top.is_index:
            return digest
        chosen = manifests.choose(top, manifests.host_platform(), where).get("digest")
    except IgniteError:
        return None
    return chosen if isinstance(chosen, str) else None


def _get(
    host: str, tls: bool, path: str, extra: dict[str, str]
) -> tuple[dict[str, str], bytes] | None:
    """One HTTP/1.1 GET: the headers (lowercase names) and body of a 200 answer with a
    Content-Length; None for anything else (or any error)."""
    import socket
    import time

    from ignitevm.images.registry.hosts import split_host
    from ignitevm.images.registry.manifests import MAX_MANIFEST

    name, port = split_host(host)
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Connection: close",
        "Accept-Encoding: identity",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    try:
        # (an ASCII name as bytes: the idna codec is not loaded for it)
        address = name.encode() if name.isascii() else name
        sock: Any = socket.create_connection((address, port or (443 if tls else 80)), TIMEOUT)
        with sock:
            if tls:
                import ssl

                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=name)
            sock.settimeout(TIMEOUT)
            sock.sendall(request)
            data = bytearray()
            # (one deadline for the whole answer: a server that drips bytes ends
            # it too, and the full path runs)
            deadline = time.monotonic() + TIMEOUT
            while len(data) <= MAX_MANIFEST + _MAX_HEADERS:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                sock.settimeout(left)
                piece = sock.recv(1 << 16)
                if not piece:
                    break
                data += piece
    except (OSError, ValueError, UnicodeError):
        return None
    head, sep, body = bytes(data).partition(b"\r\n\r\n")
    if not sep:
        return None
    status, *fields = head.decode("latin-1").split("\r\n")
    if status.split(" ", 2)[:2] not in (["HTTP/1.1", "200"], ["HTTP/1.0", "200"]):
        return None
    headers: dict[str, str] = {}
    for field in fields:
        key, colon, value = field.partition(":")
        key = key.strip().lower()
        if not colon or (key in headers and key in _READ):
            return None  # (a header read here given twice: which one is meant?)
        headers[key] = value.strip()
    if "transfer-encoding" in headers or headers.get("content-length") != str(len(body)):
        return None
    return headers, body
