"""``ignite image pull REF`` of a tag already pulled: one manifest request, no parser.

A second pull of an unchanged tag is a measured figure (bench/pull.py) whose
goal (1 % of the first pull) leaves a few milliseconds above the interpreter's
own start-up: no ``re`` (the reference parser), ``json``, ``enum`` or
``socket`` module is loaded here.

The full path leaves a **pull record** when a pull of the plain form
(``image pull [-q] REF``, REF naming a tag) records or confirms an image
(:func:`write`): one small text file per reference under the state root's
``cache/pulled/``, named by the sha256 of REF as it was given, holding REF
(checked byte for byte), what the full path prints of it, the registry and
repository, the tag's top manifest as served (its digest and media type: an
index's for a multi-platform tag), the image manifest chosen from it (the
digest the image records), the machine it was chosen for, whether the registry
spoke plain HTTP on loopback, and the image's UID and the stat identity (inode,
size, mtime) of its metadata.json as the record was written.

:func:`run` looks REF up, checks that the image's metadata.json is the one
recorded (so the name still names that image, recording that manifest), and
asks for the tag's manifest once with a HEAD request, without credentials:
when the answer's ``Docker-Content-Digest`` is the recorded digest (and its
media type the recorded one), the tag still names the manifest the full path
checked byte for byte and chose from, and the image is up to date: the same
lines as the full path's are printed. Nothing is parsed but the header lines.

Why a header is enough here: what it can make this path do is keep the image
already stored, which was verified against that very digest when it was
pulled. A registry that lies (an old digest for a tag that moved) could do the
same through a GET, serving the old manifest's bytes, which it has; it gains
nothing from a HEAD. What it cannot do is make anything new be taken without
the full path's checks: any other answer (another digest, none, another media
type) sends this to the full path. A HEAD costs the registry no body (~0.1 ms
less here than a GET, on loopback) and this path no body to read and hash.

Anything else returns None before anything is changed, and the full path runs
and does what it always does (writing the record again): a flag, no record or
another reference's, a record not as this module writes it, an image removed
or pulled again, another machine, the Configuration file, registries.conf
saying anything, proxies, ``IGNITE_INSECURE_REGISTRIES``, a loopback registry
no longer known to speak plain HTTP, a ``certs.d`` folder for an HTTPS
registry, any answer but a plain 200 with no body (401 and a token dance,
redirects, errors), another digest (the tag moved) or none, a network error or a
timeout. No credential is read or sent, so none can leak;
HTTPS is verified against the system CAs exactly as the full path does when
the host has no ``certs.d`` folder.
"""

import os
import sys

# (typing.TYPE_CHECKING: typing, which loads re, costs ~3 ms of the goal; the annotations
# naming these are quoted: ``from __future__ import annotations`` imports __future__,
# ~0.3 ms, as do cli/main.py and util/umask.py, which the answer loads too)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path
    from typing import Any

    from ignitevm.api.refs import Reference

# (as store.layout, cli.config, mirrors, hosts, manifests and registry.pull have them:
# not imported, they load pathlib, re or json, or cost packages' imports;
# tests/unit/test_fastpull.py holds them equal)
DEFAULT_ROOT = "/var/lib/ignite"
METADATA = "metadata.json"
CONFIG_FILE = "/etc/ignite/config.yaml"
REGISTRIES_CONF = "/etc/containers/registries.conf"
INSECURE_ENV = "IGNITE_INSECURE_REGISTRIES"
_SCHEMES_FILE = "http-registries"  # (content/): registries the full path found without TLS
MAX_MANIFEST = 4 << 20  # (a recorded manifest is no larger)
ACCEPT = (  # the full path's manifest request asks for the same
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"
)

RECORDS = ("cache", "pulled")  # under the state root
FORMAT = "ignite pull record 1"
TIMEOUT = 10.0  # seconds for the connection and the answer (then the full path runs)
_MAX_HEADERS = 64 << 10
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")
_READ = {"content-length", "content-type", "docker-content-digest", "transfer-encoding"}
_FIELDS = (  # the record's lines after FORMAT, in order
    "text", "shown", "tag", "name", "image", "host", "address", "port", "path", "top",
    "media", "digest", "machine", "scheme", "uid", "stat",
)


def run(words: "Sequence[str]") -> int | None:
    """``[-q] REF`` (the words after ``image pull``); None when the full path must."""
    quiet = False
    rest = list(words)
    if rest[:1] in (["-q"], ["--quiet"]):
        quiet, rest = True, rest[1:]
    if len(rest) != 1 or rest[0].startswith("-") or _unusual_environment():
        return None
    root = os.environ.get("IGNITE_ROOT") or DEFAULT_ROOT  # (as store.layout.default_root)
    rec = _read(root, rest[0])
    if rec is None or not _answer_unchanged(root, rec):
        return None
    if quiet:
        print(rec["uid"], flush=True)
        return 0
    err = sys.stderr
    err.write(
        f"{rec['tag']}: Pulling from {rec['name']}\nDigest: {rec['digest']}\n"
        f"Status: Image is up to date for {rec['image']}\n"
    )
    err.flush()
    print(rec["shown"], flush=True)
    return 0


def _hex(data: bytes) -> str:
    try:  # (built in: OpenSSL's libcrypto is not loaded to hash one manifest)
        from _sha256 import sha256
    except ImportError:
        from hashlib import sha256
    return sha256(data).hexdigest()


def record_file(root: str, text: str) -> str:
    return os.path.join(root, *RECORDS, _hex(text.encode("utf-8", "surrogateescape")))


def _stat_identity(st: os.stat_result) -> str:
    return f"{st.st_ino} {st.st_size} {st.st_mtime_ns}"


def _read(root: str, text: str) -> dict[str, str] | None:
    """The record of ``text`` (as given), if it is one this module wrote for it and the
    image it names is as it was then."""
    try:
        with open(record_file(root, text), "rb") as f:
            data = f.read(64 << 10)
        lines = data.decode().split("\n")
    except (OSError, ValueError):
        return None
    if len(lines) != len(_FIELDS) + 2 or lines[0] != FORMAT or lines[-1] or b"\r" in data:
        return None
    rec = dict(zip(_FIELDS, lines[1:-1], strict=True))
    uid, port = rec["uid"], rec["port"]
    if (rec["text"] != text or rec["scheme"] not in ("http", "https")
            or not (uid.isascii() and uid.isalnum() and port.isascii() and port.isdigit())
            or rec["machine"] != os.uname().machine):
        return None
    try:
        st = os.stat(os.path.join(root, "image", uid, METADATA))
    except OSError:
        return None  # (removed: a stale record says nothing)
    return rec if _stat_identity(st) == rec["stat"] else None


def _unusual_environment() -> bool:
    """Settings the full path reads that this one does not: it must run then."""
    env = os.environ
    if env.get("IGNITE_DEBUG") == "1":  # (tracebacks are the full path's)
        return True
    if any(env.get(v) or env.get(v.upper()) for v in _PROXY_VARS):
        return True
    if env.get(INSECURE_ENV, "").strip():
        return True
    if os.path.exists(CONFIG_FILE):  # (it may name a credentials folder, insecure hosts)
        return True
    # registries.conf saying anything (a mirror, another location, insecure, blocked),
    # or unreadable: a file of comments only, as Debian ships it, says nothing
    try:
        with open(env.get("CONTAINERS_REGISTRIES_CONF") or REGISTRIES_CONF, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return any(line.strip() and not line.lstrip().startswith(b"#")
               for line in text.splitlines())


def _answer_unchanged(root: str, rec: dict[str, str]) -> bool:
    """Whether the recorded tag still names the manifest recorded: one HEAD request."""
    host = rec["host"]
    tls = rec["scheme"] == "https"
    if tls:
        from ignitevm.images.registry.hosts import cert_dir_names

        if any(os.path.exists(os.path.join(d, host)) for d in cert_dir_names()):
            return False
    else:
        try:  # (still known to speak plain HTTP: else the full path tries TLS first)
            with open(os.path.join(root, "content", _SCHEMES_FILE)) as f:
                if host not in f.read().split():
                    return False
        except OSError:
            return False
    answer = _get(rec["address"], int(rec["port"]), host, tls,
                  f"/v2/{rec['path']}/manifests/{rec['tag']}", {"Accept": ACCEPT}, head=True)
    if answer is None:
        return False
    headers = answer[0]
    media = headers.get("content-type", "").partition(";")[0].strip()
    return headers.get("docker-content-digest") == rec["top"] and media == rec["media"]


def _get(
    name: str, port: int, host: str, tls: bool, path: str, extra: dict[str, str],
    head: bool = False,
) -> tuple[dict[str, str], bytes] | None:
    """One HTTP/1.1 GET (or with ``head`` a HEAD) from ``host`` (at ``name``, ``port``):
    the headers (lowercase names) and body of a 200 answer with a Content-Length (and,
    to a HEAD, no body); None for anything else (or any error)."""
    import time

    lines = [
        f"{'HEAD' if head else 'GET'} {path} HTTP/1.1",
        f"Host: {host}",
        "Connection: close",
        "Accept-Encoding: identity",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    data = bytearray()
    sock: Any = None
    try:
        sock = _connect(name, port)
        if tls:  # (verified against the system CAs, as the full path without certs.d)
            import socket
            import ssl

            sock = socket.socket(fileno=sock.detach())
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=name)
        sock.settimeout(TIMEOUT)
        sock.sendall(request)
        # (one deadline for the whole answer: a server that drips bytes ends it too,
        # and the full path runs)
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
    except (OSError, ValueError, OverflowError):  # (ssl.SSLError, _socket.gaierror: OSError)
        return None
    finally:
        if sock is not None:
            sock.close()
    top, sep, body = bytes(data).partition(b"\r\n\r\n")
    if not sep:
        return None
    status, *fields = top.decode("latin-1").split("\r\n")
    if status.split(" ", 2)[:2] not in (["HTTP/1.1", "200"], ["HTTP/1.0", "200"]):
        return None
    headers: dict[str, str] = {}
    for field in fields:
        key, colon, value = field.partition(":")
        key = key.strip().lower()
        if not colon or (key in headers and key in _READ):
            return None  # (a header read here given twice: which one is meant?)
        headers[key] = value.strip()
    length = headers.get("content-length", "")
    if "transfer-encoding" in headers or not (length.isascii() and length.isdigit()) or (
            body if head else length != str(len(body))):
        return None
    return headers, body


def _connect(name: str, port: int) -> "Any":
    """A connected ``_socket.socket`` (socket.create_connection without the socket
    module: its enums cost ~2 ms), each address of ``name`` tried in turn."""
    import _socket

    # (an ASCII name as bytes: the idna codec is not loaded for it)
    address = name.encode() if name.isascii() else name
    error: OSError = OSError(f"no address for {name}")
    for family, kind, proto, _, where in _socket.getaddrinfo(
            address, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(TIMEOUT)
            sock.connect(where)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


# --- the full path's side ---------------------------------------------------------------


def write(root: "Path", text: str, ref: "Reference", top: str, media: str, digest: str,
          http: bool, uid: str, identity: str) -> None:
    """Record (or confirm) that ``image pull TEXT`` found image ``uid``, recording
    ``identity``, up to date with the tag's top manifest ``top`` (of type ``media``)
    chosen for this machine, ``digest`` being the image manifest's: the image's
    metadata.json is read back, and the record written only when it names that image
    under ``ref``'s name with that identity. A write that fails is left out (the full
    path runs next time)."""
    import json

    from ignitevm.images.registry.hosts import is_loopback, split_host
    from ignitevm.log import log
    from ignitevm.store.layout import DIR_MODE
    from ignitevm.util.fs import atomic_write

    if http and not is_loopback(ref.domain):
        return  # (--insecure-registry: the environment that allowed it is not recorded)
    meta_file = root / "image" / uid / METADATA
    try:
        with open(meta_file, "rb") as f:
            st = os.fstat(f.fileno())
            data = json.loads(f.read())
        meta, status = data["metadata"], data["status"]
        if (meta["name"], meta["uid"], status["ociSource"]["id"]) != (
                ref.familiar(), uid, identity):
            return
    except (OSError, ValueError, RecursionError, KeyError, TypeError):
        return
    address, port = split_host(ref.domain)
    values = {
        "text": text, "shown": str(ref), "tag": ref.tag, "name": ref.familiar_name(),
        "image": ref.familiar(), "host": ref.domain, "address": address,
        "port": str(port or (80 if http else 443)), "path": ref.path, "top": top,
        "media": media, "digest": digest, "machine": os.uname().machine,
        "scheme": "http" if http else "https", "uid": uid, "stat": _stat_identity(st),
    }
    if any("\n" in v or "\r" in v for v in values.values()):
        return
    content = "\n".join([FORMAT, *(values[k] for k in _FIELDS), ""])
    path = record_file(str(root), text)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            if f.read() == content:
                return  # (confirmed as it stands)
    except (OSError, ValueError):
        pass
    try:
        os.makedirs(os.path.dirname(path), mode=DIR_MODE, exist_ok=True)
        atomic_write(_as_path(path), content.encode("utf-8", "surrogateescape"))
    except OSError as exc:
        log.debug("cannot record the pull of %s: %s", text, exc)


def forget(root: "Path", uid: str) -> None:
    """Remove the records naming image ``uid`` (removed): a stale one is harmless, as
    its image's metadata.json is gone, but it need not stay."""
    folder = os.path.join(root, *RECORDS)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as f:
                lines = f.read(64 << 10).split(b"\n")
            if len(lines) > _FIELDS.index("uid") + 1 and lines[
                    _FIELDS.index("uid") + 1] == uid.encode():
                os.unlink(path)
        except OSError:
            continue


def _as_path(path: str) -> "Path":
    from pathlib import Path

    return Path(path)
