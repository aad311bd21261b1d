"""HTTP to one registry repository: scheme choice, auth, retries, timeouts and redirects.

There is no ``GET /v2/`` first: the first request (a manifest) chooses the
scheme, and a 401 to it brings the auth challenge (Basic or Bearer); the
request is then sent once more with credentials, as containerd's resolver
does (Docker's client asks ``/v2/`` first). ``GET /v2/`` is asked only to tell
a host that is no registry from a missing repository, on that error path.

Requests are retried with a doubling pause on network errors, 429 and 5xx
(``Retry-After`` honoured, capped); a redirect to another host (a blob store)
never carries the registry's ``Authorization`` header, and a redirect from
HTTPS to plain HTTP is refused unless the registry may use HTTP anyway.
"""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from ignitevm.api.refs import Reference
from ignitevm.api.validation import printable
from ignitevm.errors import IgniteError, NotFound
from ignitevm.images.registry import credentials, proxy, tls
from ignitevm.images.registry.auth import Auth
from ignitevm.log import log
from ignitevm.util.fs import atomic_write

RETRIES = 4
BACKOFF = 0.2  # seconds, doubled at each retry
MAX_WAIT = 30.0  # the longest Retry-After honoured
MAX_REDIRECTS = 5
RETRY_STATUS = {429, 500, 502, 503, 504}
MAX_SMALL = 1 << 20  # token answers and error documents
# What OpenSSL says when the other end answers a TLS hello in plain HTTP
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD LAYER FAILURE", "PACKET LENGTH TOO LONG",
            "HTTP REQUEST", "UNEXPECTED EOF", "EOF OCCURRED IN VIOLATION")
READ_SIZE = 1 << 20
DIRECT_MIN = 8 << 20  # a body with more left than this is read straight from its socket
_CODE = re.compile(r"[A-Z_]{1,64}")  # an error code (NAME_UNKNOWN, DENIED...)
TIMEOUT = httpx.Timeout(connect=15.0, read=60.0, write=60.0, pool=120.0)


class NetworkError(IgniteError):
    """The registry could not be reached or the connection broke."""

    def __init__(self, brief: str, *, hint: str | None = None, retry: bool = True):
        super().__init__(brief, hint=hint)
        self.retry = retry


def api_host(domain: str) -> str:
    return "registry-1.docker.io" if domain == "docker.io" else domain


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc


class Small(NamedTuple):
    status_code: int
    reason_phrase: str
    content: bytes


def read_small(resp: httpx.Response, limit: int = MAX_SMALL) -> bytes:
    """A body that should be small (tokens, error documents): at most ``limit`` bytes."""
    data = bytearray()
    try:
        for chunk in resp.iter_bytes():
            data += chunk
            if len(data) > limit:
                break
    finally:
        resp.close()
    return bytes(data[:limit])


def body(resp: httpx.Response, client: Client) -> Iterator[bytes | memoryview]:
    """The body of a streamed answer (a blob), piece by piece; each piece is valid until
    the next is asked for (the caller writes and hashes it before).

    A large body is read past h11: once its first piece (all h11 holds) has come
    through httpx, the rest is read with ``recv_into`` into one reused buffer, from
    the socket httpcore documents as the answer's ``network_stream`` extension. h11
    copies each byte three times while the GIL is held (into its buffer, out of it,
    into bytes); this way the four downloads spend their time in the socket read, the
    file write and the hashes, which all release it. Only for a plain body of known
    length (no content or transfer encoding) on a plain or directly TLS-wrapped
    socket; anything else is read through httpx as ever. The connection is closed
    afterwards, not reused (h11 never saw the body's end). A body cut short ends
    early (the caller resumes it); a socket error is a :class:`NetworkError`.
    """
    chunks = resp.iter_bytes()
    sock = _own_socket(resp)
    for chunk in chunks:
        yield chunk
        if sock is not None:
            break
    else:
        return
    left = int(resp.headers["content-length"]) - resp.num_bytes_downloaded
    if left < DIRECT_MIN:
        yield from chunks  # (the connection stays reusable)
        return
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    try:
        sock.settimeout(TIMEOUT.read)
        while left > 0:
            want = min(left, READ_SIZE)
            got = 0
            while got < want:  # (a TLS socket gives one record, ~16 KiB, a call)
                n = sock.recv_into(view[got:want])
                if not n:
                    break
                got += n
            if got:
                left -= got
                yield view[:got]
            if got < want:
                return  # the connection ended early: the caller resumes
    except OSError as exc:  # (socket.timeout and ssl.SSLError too)
        raise client.network_error(exc) from None


def _own_socket(resp: httpx.Response) -> Any:
    """The socket ``resp``'s body arrives on, when it may be read directly (see
    :func:`body`); else None."""
    import socket

    headers = resp.headers
    length = headers.get("content-length", "")
    if (not length.isascii() or not length.isdigit() or int(length) < DIRECT_MIN
            or headers.get("transfer-encoding")
            or headers.get("content-encoding", "identity").lower() != "identity"
            or resp.http_version != "HTTP/1.1"):
        return None
    stream = resp.extensions.get("network_stream")
    get = getattr(stream, "get_extra_info", None)
    if get is None:
        return None
    try:
        sock, ssl_object = get("socket"), get("ssl_object")
    except Exception:
        return None
    if type(sock) is socket.socket and ssl_object is None:
        return sock  # plain TCP (or a Unix socket)
    if isinstance(sock, ssl.SSLSocket) and ssl_object is not None and (
            getattr(sock, "_sslobj", None) is ssl_object):
        return sock  # TLS on the socket itself (not TLS inside a proxy's TLS)
    return None


def retry_after(resp: httpx.Response, now: float | None = None) -> float | None:
    """The wait a 429 or 503 asks for, in seconds (``Retry-After``: a number of seconds,
    or an HTTP date), never more than MAX_WAIT; None when it says nothing usable."""
    value = resp.headers.get("retry-after", "").strip()
    try:
        wait = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # ("-0000": UTC, as HTTP dates are)
            import datetime

            when = when.replace(tzinfo=datetime.UTC)
        wait = when.timestamp() - (time.time() if now is None else now)
    if wait != wait:  # NaN
        return None
    return min(max(wait, 0.0), MAX_WAIT)


class Client:
    """Requests to one repository of one registry, authenticated as the user set up."""

    def __init__(self, ref: Reference, *, config_dir: str | None = None,
                 insecure: set[str] | None = None, schemes: Path | None = None):
        self.domain = ref.domain
        self.host = api_host(ref.domain)
        self.repository = ref.path
        self.scope = f"repository:{ref.path}:pull"
        self.insecure = insecure or set()
        self.transport = tls.transport(self.host, self.insecure)
        _larger_reads()
        self._clients: dict[str, httpx.Client] = {}
        self._schemes = schemes  # a file remembering registries that speak only HTTP
        creds = credentials.lookup(ref.domain, ref.repository, config_dir)
        login = "docker login" + ("" if ref.domain == "docker.io" else f" {ref.domain}")
        self.auth = Auth(ref.domain, creds, self._plain, login_hint=f"log in with '{login}'")
        self.base: str | None = None

    def close(self) -> None:
        for c in list(self._clients.values()):
            c.close()

    def _http(self, url: str, via: str | None) -> httpx.Client:
        """The connection pool for ``url``'s scheme and proxy ``via`` (HTTPS verified as
        tls.py says). The environment is read by proxy.py alone (``trust_env`` would
        also let httpx read ~/.netrc and SSL_CERT_FILE)."""
        scheme = "https" if url.startswith("https:") else "http"
        key = f"{scheme} {via or ''}"
        if key not in self._clients:
            verify: ssl.SSLContext | bool = (tls.ssl_context(self.transport)
                                             if scheme == "https" else False)
            self._clients[key] = httpx.Client(
                verify=verify, timeout=TIMEOUT, follow_redirects=False, trust_env=False,
                proxy=via, limits=httpx.Limits(max_connections=16))
        return self._clients[key]

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the registry's API ---------------------------------------------------
    def _first_contact(self, path: str, headers: dict[str, str], *,
                       stream: bool) -> httpx.Response:
        """The first request to the registry, straight to ``path`` (no ``GET /v2/``
        first, as containerd's resolver does): it chooses the scheme.
        HTTPS unless the host may use plain HTTP (loopback or opted in) and does not
        speak TLS; a host remembered as plain HTTP that now answers HTTPS is asked again
        over TLS. Never a downgrade otherwise."""
        known_http = self.transport.http_allowed and self.host in self._read_schemes()
        schemes = ("http", "https", "http") if known_http else ("https", "http")
        if not known_http and self.transport.http_allowed and self._speaks_tls() is False:
            schemes = ("http",)  # (no verified TLS context to build: ~50 ms)
        resp = None
        for scheme in schemes:
            try:
                resp = self._send("GET", f"{scheme}://{self.host}/v2/{self.repository}/{path}",
                                  headers, stream=stream)
                if known_http and resp.status_code == 400:  # an HTTPS server now
                    resp.close()
                    known_http, resp = False, None
                    continue
                break
            except NetworkError as exc:
                if known_http:
                    known_http = False  # it moved (to HTTPS?): ask again
                    continue
                if scheme == "https" and getattr(exc, "plain_http", False):
                    if self.transport.http_allowed:
                        log.debug("%s does not speak TLS; using plain HTTP", self.host)
                        continue
                    raise NetworkError(
                        f"registry {self.domain} does not speak HTTPS",
                        hint=f"plain HTTP is used only for loopback registries or ones named "
                             f"with --insecure-registry {self.host} (or "
                             f"{tls.INSECURE_ENV})", retry=False) from None
                raise
        assert resp is not None
        self.base = f"{scheme}://{self.host}"
        if (scheme == "http") != (self.host in self._read_schemes()):
            self._write_schemes(scheme == "http")
        return resp

    def _not_a_registry(self, resp: httpx.Response) -> IgniteError | None:
        """For a 404: the error saying the host is no registry at all (its ``GET /v2/``
        answers neither 200, 401 nor 403), or None (a registry without that name). Asked
        only on this error path, so a pull that works costs no ``GET /v2/``; a 5xx is
        the registry's (or its proxy's) trouble, said as it is."""
        if resp.headers.get("docker-distribution-api-version") or self.base is None:
            return None
        try:
            ping = self._send("GET", f"{self.base}/v2/", {}, stream=True)
        except IgniteError:
            return None
        ping.close()
        if ping.status_code in (200, 401, 403):
            return None
        return IgniteError(f"{self.host} is not an OCI registry (GET /v2/ answered "
                           f"{ping.status_code} {ping.reason_phrase})")

    def _speaks_tls(self) -> bool | None:
        """For a host that may use plain HTTP (loopback or opted in), met for the first
        time: whether it answers a TLS hello at all, from one handshake that sends nothing
        else and is dropped (the request that follows is verified as ever). None when
        that cannot be told (a proxy, no connection, a timeout): HTTPS is tried first."""
        import socket

        from ignitevm.images.registry.hosts import split_host

        if proxy.proxy_for(f"https://{self.host}/") is not None:
            return None
        name, port = split_host(self.host)
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        probe.check_hostname = False
        probe.verify_mode = ssl.CERT_NONE  # (only whether it speaks TLS: nothing is sent)
        try:
            with socket.create_connection((name, port or 443), TIMEOUT.connect) as raw:
                raw.settimeout(TIMEOUT.connect)
                with probe.wrap_socket(raw, server_hostname=name or None):
                    return True
        except ssl.SSLError as exc:
            if any(w in str(exc).upper() for w in _NOT_TLS):
                log.debug("%s does not speak TLS; using plain HTTP", self.host)
                return False
            return None
        except (OSError, ValueError):
            return None

    def _read_schemes(self) -> set[str]:
        try:
            return set(self._schemes.read_text().split()) if self._schemes else set()
        except OSError:
            return set()

    def _write_schemes(self, http: bool) -> None:
        if self._schemes is None:
            return
        hosts = self._read_schemes()
        (hosts.add if http else hosts.discard)(self.host)
        try:
            atomic_write(self._schemes, "".join(f"{h}\n" for h in sorted(hosts)))
        except OSError as exc:
            log.debug("cannot remember the scheme of %s: %s", self.host, exc)

    def get(self, path: str, headers: dict[str, str] | None = None, *,
            stream: bool = False) -> httpx.Response:
        """An authenticated GET of ``/v2/<repository>/<path>`` (closed by the caller).
        The registry's auth challenge comes from its 401 to the first request without
        credentials: the request is then sent once more with them. Only the registry's
        own 401 is a challenge: one from a host it redirected to (a blob store, a CDN)
        would name a token server of that host's choosing, which would be sent the
        user's credentials for the registry."""
        retried = False
        authz = self.auth.header(self.scope)
        while True:
            sent = dict(headers or {})
            if authz:
                sent["Authorization"] = authz
            if self.base is None:
                resp = self._first_contact(path, sent, stream=stream)
            else:
                resp = self._send("GET", f"{self.base}/v2/{self.repository}/{path}", sent,
                                  stream=stream)
            if resp.status_code == 401:
                resp.close()
                challenge = resp.headers.get("www-authenticate")
                if _origin(str(resp.url)) != _origin(str(self.base)):
                    raise IgniteError(f"registry {self.domain} redirected to "
                                      f"{printable(_origin(str(resp.url))[1])}, which asks "
                                      "for credentials: refused (they are the registry's)")
                if retried or not challenge:
                    raise self.auth.refused(challenge, self.scope)
                self.auth.challenge(challenge)
                self.auth.forget(self.scope)
                authz = self.auth.header(self.scope)
                if authz is None:  # (Basic, and no credentials to give)
                    raise self.auth.refused(challenge, self.scope)
                retried = True
                continue
            if resp.status_code == 403:
                resp.close()
                raise self.auth.denied(self.repository)
            return resp

    def error(self, resp: httpx.Response, what: str) -> IgniteError:
        """An error for an unexpected answer to a request for ``what``."""
        not_registry = self._not_a_registry(resp) if resp.status_code == 404 else None
        if not_registry is not None:
            resp.close()
            return not_registry
        codes: list[str] = []
        try:
            body: Any = json.loads(read_small(resp))
            codes = [e.get("code") for e in body.get("errors") or []]
        except (ValueError, AttributeError, TypeError, httpx.HTTPError):
            pass
        # (the registry's own words: only codes of the distribution spec's form are shown)
        codes = [c for c in codes if isinstance(c, str) and _CODE.fullmatch(c)][:8]
        if resp.status_code == 404:
            if "NAME_UNKNOWN" in codes or (what.startswith("tag ") and self._no_repository()):
                return NotFound(f"registry {self.domain} has no repository {self.repository}",
                                hint="check the image name")
            return NotFound(f"registry {self.domain} has no {what} in {self.repository}",
                            hint="check the tag or digest")
        return IgniteError(f"registry {self.domain} answered {resp.status_code} "
                           f"{resp.reason_phrase} for {what}" +
                           (f" ({', '.join(codes)})" if codes else ""))

    def _no_repository(self) -> bool:
        """Whether the repository itself is unknown (some registries say only "no manifest")."""
        try:
            resp = self.get("tags/list", stream=True)
        except IgniteError:
            return False
        resp.close()
        return resp.status_code == 404

    # --- HTTP -------------------------------------------------------------------
    def _plain(self, method: str, url: str, **kwargs: Any) -> Small:
        """A request to a token server (its answer read, at most 1 MiB). Plain HTTP only
        when both the registry and the token server may use it (loopback or opted in)."""
        scheme, netloc = _origin(url)
        if scheme == "http" and not (self.transport.http_allowed and (
                tls.is_loopback(netloc) or netloc in self.insecure)):
            raise IgniteError(f"registry {self.domain} sends credentials to a token server "
                              f"over plain HTTP ({netloc}); refused",
                              hint=f"name it with --insecure-registry {netloc} to allow it")
        headers = kwargs.pop("headers", None) or {}
        resp = self._send(method, url, headers, stream=True, **kwargs)
        return Small(resp.status_code, resp.reason_phrase, read_small(resp))

    def _send(self, method: str, url: str, headers: dict[str, str], *, stream: bool,
              **kwargs: Any) -> httpx.Response:
        """Send with retries, following redirects safely."""
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._retrying(method, url, headers, stream=stream, **kwargs)
            if not resp.is_redirect:
                return resp
            resp.close()
            target = urllib.parse.urljoin(url, resp.headers["location"])
            scheme, _ = _origin(target)
            if scheme not in ("http", "https") or (
                    scheme == "http" and origin[0] == "https" and not self.transport.http_allowed):
                raise IgniteError(f"registry {self.domain} redirected to {scheme}:// "
                                  "(refused: no downgrade from HTTPS)")
            if _origin(target) != origin:
                if kwargs.get("data"):  # (a token request's form: a refresh token, say)
                    raise IgniteError(f"the token server of registry {self.domain} "
                                      "redirected a request with credentials to another host "
                                      f"({printable(_origin(target)[1])}): refused")
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url = target
        raise IgniteError(f"registry {self.domain} redirected more than {MAX_REDIRECTS} times")

    def _retrying(self, method: str, url: str, headers: dict[str, str], *, stream: bool,
                  **kwargs: Any) -> httpx.Response:
        via = proxy.proxy_for(url)
        secret = kwargs.get("data") or any(k.lower() == "authorization" for k in headers)
        if via is not None and url.startswith("http:") and secret:  # (data: a refresh token)
            # (HTTPS is tunnelled: the proxy never sees what goes through it)
            host = _origin(url)[1]
            raise IgniteError(f"refusing to send credentials for {host} in the clear through "
                              f"the proxy {proxy.redact(via)} (the registry speaks plain HTTP)",
                              hint=f"add {host} to NO_PROXY, or give the registry HTTPS")
        for attempt in range(RETRIES):
            wait = BACKOFF * 2 ** attempt
            try:
                http = self._http(url, via)
                request = http.build_request(method, url, headers=headers, **kwargs)
                resp = http.send(request, stream=stream)
            except httpx.TransportError as exc:
                err = self.network_error(exc, via)
                if not err.retry or attempt == RETRIES - 1:
                    raise err from None
                log.debug("%s %s: %s; retrying in %.2fs", method, _safe(url), err, wait)
            else:
                if resp.status_code not in RETRY_STATUS or attempt == RETRIES - 1:
                    return resp
                wait = retry_after(resp) or wait
                resp.close()
                log.debug("%s %s: %d; retrying in %.2fs", method, _safe(url),
                          resp.status_code, wait)
            time.sleep(wait)  # a back-off between attempts, not a wait for an event
        raise AssertionError("unreachable")

    def network_error(self, exc: Exception, via: str | None = None) -> NetworkError:
        """A user-facing error for a transport failure (``retry``: worth trying again)."""
        text = str(exc) or type(exc).__name__
        if via is not None:
            err = _proxy_error(exc, text, via, f"registry {self.domain}")
            if err is not None:
                return err
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, ssl.SSLError):
            cause = cause.__cause__ or cause.__context__
        where = f"registry {self.domain}"
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = cause.verify_message or str(cause)
            return NetworkError(
                f"cannot verify the TLS certificate of {where}: {why}",
                hint=f"put its CA certificate in /etc/docker/certs.d/{self.host}/ca.crt, or "
                     f"name it with --insecure-registry {self.host} if you trust the network",
                retry=False)
        if isinstance(cause, ssl.SSLError) or "WRONG_VERSION_NUMBER" in text:
            if any(w in text.upper() for w in _NOT_TLS):
                err = NetworkError(f"{where} does not speak TLS: {text}", retry=False)
                err.plain_http = True  # type: ignore[attr-defined]
                return err
            return NetworkError(
                f"TLS with {where} failed: {text}",
                hint=f"if it wants a client certificate, put client.cert and client.key in "
                     f"/etc/docker/certs.d/{self.host}/", retry=False)
        lower = text.lower()
        if "name or service not known" in lower or "name resolution" in lower or \
                "nodename nor servname" in lower or "no address associated" in lower:
            hint = ("check the image name (a first component with a '.' or ':' is a registry "
                    "host)") if self.domain != "docker.io" else (
                    f"{self.repository} is on Docker Hub, which this host cannot resolve "
                    "(offline?); import an archive instead, or name another registry")
            return NetworkError(f"unknown registry host {self.host}", hint=hint, retry=False)
        if "connection refused" in lower:
            return NetworkError(f"cannot connect to {where}: connection refused",
                                hint="check that the registry runs and the port is right")
        if isinstance(exc, httpx.TimeoutException):
            return NetworkError(f"{where} timed out ({type(exc).__name__})")
        return NetworkError(f"connection to {where} failed: {text}")


def _proxy_error(exc: Exception, text: str, via: str, where: str) -> NetworkError | None:
    """The error for a failure of the proxy itself (not of what is behind it), or None."""
    shown = proxy.redact(via)
    lower = text.lower()
    if isinstance(exc, httpx.ProxyError):
        return NetworkError(f"the proxy {shown} refused the connection to {where}: {text}",
                            hint="check HTTPS_PROXY/HTTP_PROXY (and the proxy's credentials), "
                            "or add the registry to NO_PROXY")
    if isinstance(exc, httpx.ConnectError) and ("connection refused" in lower
                                                or "name or service not known" in lower
                                                or "name resolution" in lower):
        return NetworkError(f"cannot connect to the proxy {shown} (for {where}): {text}",
                            hint="check HTTPS_PROXY/HTTP_PROXY, or add the registry to "
                            "NO_PROXY")
    return None


def _larger_reads() -> None:
    """Read sockets 1 MiB at a time (httpcore's default is 64 KiB, each piece parsed by
    h11 in Python): blob downloads run ~2.5 times faster. Process-wide, set on first use."""
    try:
        from httpcore._sync.http11 import HTTP11Connection
    except ImportError:  # a future httpcore: keep its default
        return
    if getattr(HTTP11Connection, "READ_NUM_BYTES", 0) < READ_SIZE:
        HTTP11Connection.READ_NUM_BYTES = READ_SIZE


def _safe(url: str) -> str:
    """A URL for logs: no query string (it may carry signed tokens)."""
    return url.split("?", 1)[0]
