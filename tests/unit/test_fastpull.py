"""The lean second pull's own parts (cli/fastpull.py): its copies of the store's constants,
its imports, and its one HTTP GET, which takes only a plain 200 answer."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from tests.conftest import REPO
from tests.helpers.registry import serve_once


def test_constants_match_the_full_path() -> None:
    from ignitevm.cli import config, fastpull
    from ignitevm.images.registry import hosts, manifests, mirrors, pull
    from ignitevm.store import layout

    assert fastpull.DEFAULT_ROOT == layout.DEFAULT_ROOT
    assert fastpull.METADATA == layout.METADATA
    assert str(config.DEFAULT_PATH) == fastpull.CONFIG_FILE
    assert fastpull._SCHEMES_FILE == pull.SCHEMES_FILE
    assert fastpull.REGISTRIES_CONF == mirrors.DEFAULT_CONF
    assert fastpull.INSECURE_ENV == hosts.INSECURE_ENV
    assert fastpull.MAX_MANIFEST == manifests.MAX_MANIFEST
    assert fastpull.ACCEPT == manifests.ACCEPT


def test_light_imports() -> None:
    """What the fast path loads leaves out the full client, argparse and pathlib, and
    re (typing, the reference parser), json, enum, socket, logging, hashlib (OpenSSL),
    ipaddress, contextlib, collections."""
    code = (
        "import sys\nfrom ignitevm.cli import fastpull, main\n"
        "heavy = {'httpx', 'argparse', 'pathlib', 'ssl', 'tomllib', 'msgspec', 'typing',\n"
        "         'logging', 'hashlib', 'ipaddress', 'contextlib', 're', 'json', 'enum',\n"
        "         'socket', 'collections', 'ignitevm.errors', 'ignitevm.api.refs'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out.strip() == "[]"


def _at(host: str) -> tuple[str, int]:
    name, _, port = host.partition(":")
    return name, int(port)


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nContent-Length: 2\r\n\r\n{}", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}", False),  # cut short
        (b"HTTP/1.1 200 OK\r\n\r\n{}", False),  # no length
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n"
            b"2\r\n{}\r\n",
            False,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", False),
        (b"HTTP/1.1 302 Found\r\nLocation: http://x/\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}", False),
        (b"garbage", False),
    ],
)
def test_get_takes_only_a_plain_answer(answer: bytes, ok: bool) -> None:
    from ignitevm.cli.fastpull import _get

    host, t = serve_once(answer)
    got = _get(*_at(host), host, False, "/v2/x/manifests/1", {})
    t.join(5)
    assert (got is not None) == ok
    if ok:
        assert got == ({"content-type": "a/b", "content-length": "2"}, b"{}")


def test_nothing_listening() -> None:
    from ignitevm.cli.fastpull import _get

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _get("127.0.0.1", port, f"127.0.0.1:{port}", False, "/v2/", {}) is None


def test_a_dripping_answer_ends_at_one_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The timeout holds for the whole answer, not for each byte of it."""
    import time

    from ignitevm.cli import fastpull

    monkeypatch.setattr(fastpull, "TIMEOUT", 0.5)
    stop = threading.Event()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def drip() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                conn.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}":
                    if stop.wait(0.1):
                        return
                    conn.sendall(bytes([byte]))

    t = threading.Thread(target=drip, daemon=True)
    t.start()
    started = time.monotonic()
    assert fastpull._get("127.0.0.1", srv.getsockname()[1], "x", False, "/v2/", {}) is None
    assert time.monotonic() - started < 3
    stop.set()
    t.join(5)


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        (b"HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:1\r\nContent-Length: 2\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", False),  # a body: not a HEAD's
        (b"HTTP/1.1 200 OK\r\n\r\n", False),  # no length
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:1\r\n"
         b"Docker-Content-Digest: sha256:2\r\nContent-Length: 2\r\n\r\n", False),  # which?
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", False),  # the headers never end
    ],
)
def test_head_takes_only_a_plain_answer_with_no_body(answer: bytes, ok: bool) -> None:
    from ignitevm.cli.fastpull import _get

    host, t = serve_once(answer)
    got = _get(*_at(host), host, False, "/v2/x/manifests/1", {}, head=True)
    t.join(5)
    assert (got is not None) == ok
    if ok:
        assert got == ({"docker-content-digest": "sha256:1", "content-length": "2"}, b"")
