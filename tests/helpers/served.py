"""An HTTP server of the tests' own on a free loopback port, in a thread, for
as long as a ``with`` block (the proxies in faultproxy.py and httpproxy.py)."""

from __future__ import annotations

import http.server
import threading
from typing import Self

from tests.helpers.registry import free_port


class Served:
    """Subclasses give ``_handler()``: the request handler class."""

    def _serve(self) -> None:
        self.port = free_port()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 (keep-alive, as registries and clients speak it), no log lines."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass
