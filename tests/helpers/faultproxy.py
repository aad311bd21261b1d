"""A fault proxy in front of a loopback registry: cuts connections, alters bytes, answers
503/429, redirects blobs to another origin. Everything it sees is recorded."""

from __future__ import annotations

import http.client
import http.server
import socket
import threading
from dataclasses import dataclass, field

from tests.helpers.served import QuietHandler, Served


@dataclass
class Faults:
    corrupt_blobs: bool = False  # flip one byte in every blob body
    cut_blobs: int = 0  # cut this many blob responses halfway (then serve whole)
    cut_always: bool = False  # cut every blob response halfway
    busy: int = 0  # answer this many requests with 503 + Retry-After: 0
    too_many: int = 0  # answer this many requests with 429 + Retry-After: 0
    expire: int = 0  # forward this many blob requests without Authorization (a stale token)
    redirect_blobs: bool = False  # 307 blob GETs to the other origin (localhost vs 127.0.0.1)
    manifest_body: bytes | None = None  # serve this instead of every manifest
    # add a byte (a newline: still the same JSON) to the manifests whose path holds this
    # ("/manifests/": all; "/manifests/sha256:": those asked by digest)
    alter_manifests: str = ""
    drop_digest: bool = False  # leave out the Docker-Content-Digest header
    retry_after: str = "0"  # the Retry-After of the busy and too_many answers
    forbidden: bool = False  # answer 403 to every request for a repository's content
    last_auth: str = ""  # what a redirected request gets upstream (as a signed URL would)
    # Hold the first blob answer of at least this many bytes: stream half of it, set
    # ``held`` (its path in ``held_path``), wait for ``release``, then stream the rest as
    # upstream gives it (a registry killed meanwhile: the answer is cut there). Upstream
    # is read through a small receive buffer, so most of the rest is still the
    # registry's to send while it is held.
    hold_over: int = 0
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    held_path: str = ""
    seen: list[dict[str, str]] = field(default_factory=list)


class FaultProxy(Served):
    def __init__(self, upstream: str, faults: Faults | None = None):
        self.upstream = upstream  # "127.0.0.1:PORT" of a plain-HTTP registry
        self.faults = faults or Faults()
        self._lock = threading.Lock()
        self._serve()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _take(self, name: str) -> bool:
        with self._lock:
            left = getattr(self.faults, name)
            if left > 0:
                setattr(self.faults, name, left - 1)
                return True
            return False

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(QuietHandler):
            def _status(self, code: int, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                f = proxy.faults
                blob = "/blobs/" in self.path
                f.seen.append({"path": self.path, "host": self.headers.get("Host", ""),
                               "auth": self.headers.get("Authorization", ""),
                               "range": self.headers.get("Range", "")})
                if proxy._take("busy"):
                    return self._status(503, {"Retry-After": f.retry_after})
                if proxy._take("too_many"):
                    return self._status(429, {"Retry-After": f.retry_after})
                if f.forbidden and self.path.rstrip("/") != "/v2":
                    return self._status(403)
                if blob and f.redirect_blobs and self.headers.get("Host", "").startswith("127."):
                    where = f"http://localhost:{proxy.port}{self.path}"
                    return self._status(307, {"Location": where})
                if "/manifests/" in self.path and f.manifest_body is not None:
                    body = f.manifest_body
                    self.send_response(200)
                    self.send_header("Content-Type",
                                     "application/vnd.docker.distribution.manifest.v1+json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                hold = blob and f.hold_over > 0 and not f.held_path
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                if self.headers.get("Host", "").startswith("localhost"):
                    headers["Authorization"] = f.last_auth
                elif blob and proxy._take("expire"):
                    headers.pop("Authorization", None)
                elif self.headers.get("Authorization"):
                    f.last_auth = self.headers["Authorization"]
                try:
                    if hold:
                        name, port = proxy.upstream.rsplit(":", 1)
                        conn.sock = socket.socket()
                        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
                        conn.sock.settimeout(60)
                        conn.sock.connect((name, int(port)))
                    conn.request("GET", self.path, headers=headers)
                    resp = conn.getresponse()
                except OSError:  # the registry is gone: as a reverse proxy answers then
                    conn.close()
                    return self._status(502)
                size = int(resp.getheader("Content-Length") or 0)
                if hold and resp.status == 200 and size >= f.hold_over:
                    return self._held(resp, conn, size)
                body = resp.read()
                conn.close()
                cut = blob and resp.status in (200, 206) and (f.cut_always
                                                              or proxy._take("cut_blobs"))
                if blob and f.corrupt_blobs and body:
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                if f.alter_manifests and f.alter_manifests in self.path and resp.status == 200:
                    body += b"\n"
                dropped = ["content-length", "connection", "transfer-encoding"]
                if f.drop_digest:
                    dropped.append("docker-content-digest")
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in dropped:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if cut:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def _held(self, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection,
                      size: int) -> None:
                f = proxy.faults
                f.held_path = self.path
                f.seen[-1]["size"] = str(size)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.end_headers()
                sent = 0
                try:
                    while sent < size:
                        if sent >= size // 2 and not f.held.is_set():
                            self.wfile.flush()
                            f.held.set()
                            f.release.wait(600)
                        piece = resp.read(min(64 << 10, size - sent))
                        if not piece:
                            break
                        self.wfile.write(piece)
                        sent += len(piece)
                except (OSError, http.client.HTTPException):
                    pass  # upstream died (or the client did): the answer ends here
                finally:
                    conn.close()
                if sent < size:
                    self.close_connection = True
                    try:
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        return Handler
