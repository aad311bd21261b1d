"""A small HTTP server on the host, for guests to reach "the outside world"
(this host has no internet): it answers every GET with one fixed line."""

from __future__ import annotations

import contextlib
import http.server
import subprocess
import threading
from collections.abc import Iterator

BODY = b"hello from the host\n"


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # (the stdlib's name)
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


def host_address() -> str | None:
    """A non-loopback IPv4 address of this host: guests reach it through any
    network plugin (CNI routes and masquerades, slirp and passt connect)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        words = line.split()
        if "inet" in words:
            return words[words.index("inet") + 1].split("/")[0]
    return None


def passt_unusable() -> str | None:
    """Why passt cannot serve a VM on this host (None: it can)."""
    import shutil

    from ignitevm.providers.network.passt import ipv4_routable

    if shutil.which("passt") is None:
        return "passt is not installed (run scripts/setup.sh)"
    if not ipv4_routable():
        return "this host has no IPv4 default route, without which passt turns IPv4 off"
    return None


@contextlib.contextmanager
def serving() -> Iterator[str | None]:
    """Serve on every address of the host; yields the URL a guest fetches
    (None if the host has no address but loopback)."""
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host = host_address()
        yield f"http://{host}:{server.server_address[1]}/" if host else None
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
