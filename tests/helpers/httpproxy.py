"""A small HTTP proxy for the tests (no proxy is started from a package): ``CONNECT``
tunnels and plain forwarding, optional Basic proxy auth, and names of its own
(``routes``: a made-up host name -> the loopback address that serves it), so a
registry on loopback can be reached under a name that is not loopback. Everything
it is asked is recorded in ``seen``: the request line and the header names."""

from __future__ import annotations

import base64
import http.client
import http.server
import select
import socket
import urllib.parse
from dataclasses import dataclass, field

from tests.helpers.served import QuietHandler, Served


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)


class HTTPProxy(Served):
    def __init__(self, routes: dict[str, str] | None = None, user: str | None = None,
                 password: str | None = None):
        self.routes = routes or {}
        self.auth = (base64.b64encode(f"{user}:{password}".encode()).decode()
                     if user is not None else None)
        self.seen: list[Seen] = []
        self._serve()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _address(self, host: str, port: int) -> tuple[str, int]:
        return self.routes.get(host, host), port

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(QuietHandler):
            def _allowed(self) -> bool:
                proxy.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
                if proxy.auth is None or \
                        self.headers.get("Proxy-Authorization") == f"Basic {proxy.auth}":
                    return True
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_CONNECT(self) -> None:
                if not self._allowed():
                    return
                host, _, port = self.path.rpartition(":")
                try:
                    upstream = socket.create_connection(proxy._address(host, int(port)), 5)
                except OSError:
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                with upstream:
                    _splice(self.connection, upstream)

            def _forward(self) -> None:
                if not self._allowed():
                    return
                url = urllib.parse.urlsplit(self.path)
                if url.scheme != "http" or not url.hostname:
                    self.send_error(400)
                    return
                addr = proxy._address(url.hostname, url.port or 80)
                conn = http.client.HTTPConnection(*addr, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-authorization", "proxy-connection")}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path = url.path + (f"?{url.query}" if url.query else "")
                try:
                    conn.request(self.command, path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except OSError:
                    self.send_error(502)
                    return
                finally:
                    conn.close()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = _forward

        return Handler


def _splice(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    socks = [a, b]
    while True:
        ready, _, _ = select.select(socks, [], [], 60)
        if not ready:
            return
        for s in ready:
            try:
                data = s.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            (b if s is a else a).sendall(data)
