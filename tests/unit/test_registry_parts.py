"""The registry client's parts that need no registry: credentials, challenges, TLS policy,
platform choice, diff_ids and the content store's ingest (all fast, no network)."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.images.blobs import ContentStore
from ignitevm.images.registry import credentials, manifests, tls
from ignitevm.images.registry.auth import parse_challenge
from ignitevm.images.registry.diffid import DiffHasher
from tests.helpers.served import QuietHandler


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path


def write_config(path: Path, data: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("key", ["reg.example:5000", "https://reg.example:5000",
                                 "http://reg.example:5000/v2/", "reg.example:5000/"])
def test_keys_with_or_without_scheme(home: Path, key: str) -> None:
    write_config(home / ".docker/config.json", {"auths": {key: auth("u", "s3cr3t-pw")}})
    c = credentials.lookup("reg.example:5000", "reg.example:5000/team/app")
    assert (c.username, c.password) == ("u", "s3cr3t-pw")
    assert "s3cr3t-pw" not in repr(c)
    assert not credentials.lookup("reg.example:5001", "reg.example:5001/team/app")


def test_docker_hub_key(home: Path) -> None:
    write_config(home / ".docker/config.json",
                 {"auths": {"https://index.docker.io/v1/": auth("hub", "x")}})
    assert credentials.lookup("docker.io", "docker.io/library/alpine").username == "hub"


def test_longest_repository_key_wins(home: Path) -> None:
    write_config(home / "run/containers/auth.json", {"auths": {
        "reg.example": auth("host", "1"), "reg.example/team": auth("team", "2"),
        "reg.example/team/app": auth("app", "3")}})
    assert credentials.lookup("reg.example", "reg.example/team/app").username == "app"
    assert credentials.lookup("reg.example", "reg.example/team/other").username == "team"
    assert credentials.lookup("reg.example", "reg.example/elsewhere").username == "host"
    assert credentials.lookup("reg.example", "reg.example/teamx/a").username == "host"


def test_order_and_config_dir(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                              ) -> None:
    write_config(home / ".docker/config.json", {"auths": {"r.example": auth("home", "1")}})
    write_config(tmp_path / "dc/config.json", {"auths": {"r.example": auth("env", "2")}})
    assert credentials.lookup("r.example", "r.example/a").username == "home"
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert credentials.lookup("r.example", "r.example/a").username == "env"
    (tmp_path / "empty").mkdir()
    assert not credentials.lookup("r.example", "r.example/a", str(tmp_path / "empty"))


def test_identity_token_and_bad_entries(home: Path) -> None:
    write_config(home / ".docker/config.json",
                 {"auths": {"r.example": {"identitytoken": "tok-s3cr3t"}}})
    c = credentials.lookup("r.example", "r.example/a")
    assert c.identity_token == "tok-s3cr3t" and "s3cr3t" not in repr(c)
    write_config(home / ".docker/config.json", {"auths": {"r.example": {"auth": "!!"}}})
    with pytest.raises(InvalidInput, match="base64"):
        credentials.lookup("r.example", "r.example/a")
    (home / ".docker/config.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="cannot read registry credentials"):
        credentials.lookup("r.example", "r.example/a")


def test_credential_helper(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real `docker-credential-NAME get` program (the protocol: server on stdin, JSON out)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-test"
    helper.write_text('#!/bin/sh\nread server\ncase "$server" in\n'
                      '  r.example) echo \'{"Username":"helped","Secret":"s3"}\' ;;\n'
                      '  t.example) echo \'{"Username":"<token>","Secret":"idt"}\' ;;\n'
                      '  *) echo "credentials not found in native keychain"; exit 1 ;;\nesac\n')
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    write_config(home / ".docker/config.json", {"credHelpers": {"r.example": "test"},
                                                "credsStore": "test"})
    c = credentials.lookup("r.example", "r.example/a")
    assert (c.username, c.password) == ("helped", "s3")
    assert credentials.lookup("t.example", "t.example/a").identity_token == "idt"
    assert not credentials.lookup("u.example", "u.example/a")
    write_config(home / ".docker/config.json", {"credHelpers": {"r.example": "absent"}})
    with pytest.raises(IgniteError, match="docker-credential-absent"):
        credentials.lookup("r.example", "r.example/a")


def test_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "reg",
                      "scope": "repository:a/b:pull"}
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def test_refusals_say_which() -> None:
    """A second 401 whose challenge says insufficient_scope is a denied repository, not a
    wrong password; a 403 is a denial; a plain second 401 is a wrong password."""
    from ignitevm.images.registry.auth import Auth
    from ignitevm.images.registry.credentials import Credentials

    scope = "repository:team/app:pull"
    denied = ('Bearer realm="https://auth.example/token",service="reg",'
              f'scope="{scope}",error="insufficient_scope"')
    creds = Credentials("bob", "secret", origin="/x/config.json")
    user = Auth("reg.example", creds, lambda *a, **k: None, "log in with 'docker login'")
    anon = Auth("reg.example", Credentials(), lambda *a, **k: None, "log in with 'docker login'")
    assert user.refused(denied, scope).brief == \
        "registry reg.example: bob may not pull team/app (or it does not exist)"
    assert "credentials may be needed" in anon.refused(denied, scope).brief
    assert "refused the credentials for bob" in user.refused(
        denied.replace("insufficient_scope", "invalid_token"), scope).brief
    assert "refused the credentials for bob" in user.refused('Basic realm="r"', scope).brief
    assert "wants credentials" in anon.refused(None, scope).brief
    assert user.denied("team/app").brief == \
        "registry reg.example denies access to team/app for bob (403 Forbidden)"
    assert "credentials may be needed" in (anon.denied("team/app").hint or "")
    assert "secret" not in str(user.refused(denied, scope).hint)


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost:5000", True), ("127.0.0.1:5000", True), ("127.9.9.9", True),
    ("[::1]:5000", True), ("192.0.2.2:5000", False), ("localhost.example", False),
    ("reg.example", False)])
def test_loopback(host: str, loopback: bool) -> None:
    assert tls.is_loopback(host) is loopback
    t = tls.transport(host, set())
    assert t.http_allowed is loopback and not t.opted_in


def test_loopback_as_ipaddress_reads_it() -> None:
    """is_loopback reads plain IPv4 itself (ipaddress costs the CLI ~1 ms): the
    same answer as ipaddress for every name, odd ones too."""
    import ipaddress
    import random

    def by_ipaddress(name: str) -> bool:
        if name == "localhost":
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    names = ["127.0.0.1", "127.255.255.255", "128.0.0.1", "0.0.0.0", "1.2.3.4", "127.0.0.01",
             "127.00.0.1", "0127.0.0.1", "127.0.0.256", "127.0.0", "127.0.0.1.", ".127.0.0.1",
             "127.0.0.1.5", "127..0.1", "1270.0.0.1", "127.0.0.+1", "127.0.0.\u0661",
             "\u0661\u0662\u0667.0.0.1", "127.0.0.1 ", " 127.0.0.1", "", "::1", "::2",
             "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "fe80::1%eth0", "1e3", "1", "127",
             "2130706433", "0x7f.0.0.1", "127.0.0.1%lo", "localhost", "Localhost", "reg.example"]
    rng = random.Random(7)
    for _ in range(3000):
        names.append(".".join(rng.choice(["127", "0", "00", "255", "256", "1", "01", "99", "",
                                          "a", "1a", "\u0661", "300", "-1", "+1"])
                              for _ in range(rng.choice([3, 4, 4, 4, 5]))))
    for name in names:
        host = f"[{name}]" if ":" in name else name  # (a host as a reference has it)
        assert tls.is_loopback(host) is by_ipaddress(name), name
        assert tls.is_loopback(f"{host}:5000") is by_ipaddress(name), name


def test_insecure_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tls.INSECURE_ENV, "a.example:5000, b.example")
    names = tls.insecure_registries(["c.example"])
    assert names == {"a.example:5000", "b.example", "c.example"}
    assert tls.transport("b.example:443", names).opted_in
    assert not tls.transport("a.example:5001", names).http_allowed
    with pytest.raises(InvalidInput):
        tls.insecure_registries(["https://x.example"])


def index(*platforms: str) -> manifests.Manifest:
    descs = []
    for p in platforms:
        os_, arch, *variant = p.split("/")
        plat = {"os": os_, "architecture": arch, **({"variant": variant[0]} if variant else {})}
        descs.append({"digest": "sha256:" + hashlib.sha256(p.encode()).hexdigest(),
                      "platform": plat})
    doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
           "manifests": descs}
    return manifests.parse(json.dumps(doc).encode(), "sha256:x", "test")


def test_platform_choice() -> None:
    idx = index("linux/amd64", "linux/arm/v7", "linux/arm64/v8", "unknown/unknown")
    assert manifests.platform_of(manifests.choose(idx, "linux/amd64", "t")) == "linux/amd64"
    assert manifests.platform_of(manifests.choose(idx, "linux/arm64", "t")) == "linux/arm64/v8"
    assert manifests.platform_of(manifests.choose(idx, "linux/arm", "t")) == "linux/arm/v7"
    with pytest.raises(InvalidInput, match=r"\(it has: linux/amd64, linux/arm/v7, "
                       r"linux/arm64/v8\)"):
        manifests.choose(idx, "linux/s390x", "t")
    assert manifests.check_platform("Linux/AMD64") == "linux/amd64"


def test_index_platforms_read_as_untrusted() -> None:
    """An index entry whose platform is missing a word or is not one (a registry is
    untrusted: its words end up in an error message) is passed over, not printed."""
    idx = index("linux/amd64", "Linux\x1b[2J/arm64", "linux/" + "x" * 40)
    idx.doc["manifests"].append({"digest": "sha256:" + "0" * 64,
                                 "platform": {"architecture": "arm64"}})
    assert [manifests.platform_of(d) for d in idx.doc["manifests"]] == [
        "linux/amd64", None, None, None]
    with pytest.raises(InvalidInput, match=r"\(it has: linux/amd64\)"):
        manifests.choose(idx, "linux/arm64", "t")


def test_schema1_refused() -> None:
    with pytest.raises(InvalidInput, match="schema 1"):
        manifests.parse(b'{"schemaVersion": 1, "fsLayers": []}', "sha256:x", "test")


def test_diff_id_of_gzip_members() -> None:
    data = os.urandom(100_000) + b"\0" * 5_000_000
    blob = gzip.compress(data[:1000]) + gzip.compress(data[1000:])
    h = DiffHasher("layer")
    for i in range(0, len(blob), 4096):
        h.feed(blob[i:i + 4096])
    assert h.digest() == "sha256:" + hashlib.sha256(data).hexdigest()
    cut = DiffHasher("layer")
    cut.feed(blob[:-10])
    with pytest.raises(InvalidInput, match="truncated"):
        cut.digest()


def test_ingest_checks_and_resumes(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    data = os.urandom(10_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with pytest.raises(InvalidInput, match="truncated"), store.ingest(digest, len(data)) as ing:
        assert ing is not None
        ing.write(data[:4000])  # a cut download: the part is kept
    assert not store.has(digest)
    with store.ingest(digest, len(data)) as ing:
        assert ing is not None and ing.offset == 4000  # resumes where it stopped
        ing.write(data[4000:])
    assert store.has(digest, len(data)) and store.read(store.blob_name(digest)) == data
    assert not list((store.path / "ingest").iterdir())  # no part, no lock left
    with store.ingest(digest, len(data)) as ing:
        assert ing is None  # fetched once
    bad = "sha256:" + "0" * 64
    with pytest.raises(InvalidInput, match="does not match"), store.ingest(bad, 3) as ing:
        assert ing is not None
        ing.write(b"abc")
    assert not store.has(bad) and not (store.path / "ingest" / bad[7:]).exists()
    with pytest.raises(InvalidInput, match="longer"), store.ingest(bad, 2) as ing:
        assert ing is not None
        ing.write(b"abc")
    with pytest.raises(InvalidInput, match="sha256 only"):
        ContentStore.blob_name("sha512:" + "0" * 128)


def test_a_blob_is_on_disk_before_it_has_its_name(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut cannot be made here: the order of the calls stands for it
    (a blob renamed unsynced can come back with its full size and no bytes)."""
    store = ContentStore(tmp_path / "content")
    data = os.urandom(5000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    calls: list[str] = []
    real_sync, real_replace = os.fdatasync, os.replace

    def fdatasync(fd: int) -> None:
        calls.append(f"sync {os.readlink(f'/proc/self/fd/{fd}')}")
        real_sync(fd)

    def replace(src: object, dst: object) -> None:
        calls.append(f"replace {src}")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "replace", replace)
    with store.ingest(digest, len(data)) as ing:
        assert ing is not None
        ing.write(data)
    partial = store.path / "ingest" / digest[7:]
    assert calls == [f"sync {partial}", f"replace {partial}"]
    assert store.read(store.blob_name(digest)) == data


def test_mirror_endpoints(tmp_path: Path) -> None:
    from ignitevm.api.refs import parse
    from ignitevm.images.registry.mirrors import endpoints

    conf = tmp_path / "registries.conf"
    conf.write_text("""
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.example:5000/hub"
insecure = true

[[registry]]
prefix = "docker.io/team"
location = "team.example/t"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "m.example"
""")
    got = [(str(e.ref), e.insecure, e.mirror) for e in endpoints(parse("alpine"), conf)]
    assert got == [("mirror.example:5000/hub/library/alpine:latest", True, True),
                   ("docker.io/library/alpine:latest", False, False)]
    got = [str(e.ref) for e in endpoints(parse("team/app:1"), conf)]
    assert got == ["team.example/t/app:1"]  # digest-only mirrors: not for a tag
    digest = "sha256:" + "a" * 64
    got = [str(e.ref) for e in endpoints(parse(f"team/app@{digest}"), conf)]
    assert got == [f"m.example/app@{digest}", f"team.example/t/app@{digest}"]
    assert [str(e.ref) for e in endpoints(parse("quay.io/x/y"), conf)] == ["quay.io/x/y:latest"]
    assert [str(e.ref) for e in endpoints(parse("x"), tmp_path / "none")] == [
        "docker.io/library/x:latest"]


def test_plain_http_token_realm_rules(home: Path) -> None:
    """Credentials go to a token server over plain HTTP only when the registry and the
    token server may both use it (checked before anything is sent)."""
    from ignitevm.api.refs import parse
    from ignitevm.images.registry.client import Client

    remote = Client(parse("registry.example/a/b"))
    with pytest.raises(IgniteError, match="over plain HTTP"):
        remote._plain("GET", "http://127.0.0.1:9/token")  # a remote registry, a local realm
    with pytest.raises(IgniteError, match="over plain HTTP"):
        remote._plain("GET", "http://auth.example/token")
    local = Client(parse("localhost:5000/a"))
    with pytest.raises(IgniteError, match="over plain HTTP"):
        local._plain("GET", "http://auth.example/token")  # a local registry, a remote realm
    opted = Client(parse("registry.example/a"), insecure={"registry.example", "auth.example"})
    assert opted.transport.http_allowed
    for c in (remote, local, opted):
        c.close()


def test_small_bodies_are_capped() -> None:
    import httpx

    from ignitevm.images.registry.client import read_small

    resp = httpx.Response(200, content=b"x" * (3 << 20))
    assert len(read_small(resp)) == 1 << 20


@pytest.mark.parametrize(("body", "shown"), [
    (b'{"errors": [{"code": "DENIED"}, {"code": "TOOMANYREQUESTS"}]}',
     " (DENIED, TOOMANYREQUESTS)"),
    (b'{"errors": [{"code": "\\u001b]0;owned\\u0007\\u001b[2J"}, {"code": "DENIED"}]}',
     " (DENIED)"),
    (b'{"errors": [{"code": "lower"}, {"code": 5}, {"code": "' + b"A" * 65 + b'"}]}', ""),
    (b'{"errors": {"code": "DENIED"}}', ""),
    (b'{"errors": [7]}', ""),
])
def test_registry_error_codes_are_shown_only_when_well_formed(body: bytes, shown: str) -> None:
    """A registry's error document is the registry's text: only codes of the spec's form
    (capitals and underscores) reach the error line, never its escapes."""
    import httpx

    from ignitevm.api.refs import parse
    from ignitevm.images.registry.client import Client

    client = Client(parse("registry.example/a"))
    try:
        err = client.error(httpx.Response(418, content=body), "tag latest")
    finally:
        client.close()
    assert err.brief == f"registry registry.example answered 418 I'm a teapot for tag latest{shown}"


@pytest.mark.parametrize("expires", ["1e999", "-1e999", '"' + "9" * 5000 + '"'])
def test_a_token_lifetime_of_no_number_is_no_crash(expires: str) -> None:
    """A token server's expires_in that is no usable number (inf, thousands of digits)
    is the token server's fault, said in one line, not an exception read as a bug."""
    from ignitevm.images.registry.auth import Auth
    from ignitevm.images.registry.client import Small
    from ignitevm.images.registry.credentials import Credentials

    body = f'{{"token": "t", "expires_in": {expires}}}'.encode()
    auth = Auth("reg.example", Credentials(), lambda *a, **k: Small(200, "OK", body),
                "log in")
    auth.challenge('Bearer realm="https://auth.example/token",service="reg"')
    with pytest.raises(IgniteError, match="sent no token"):
        auth.header("repository:a/b:pull")


def test_a_manifest_nested_too_deeply_is_one_error() -> None:
    """A hostile registry's manifest of 100,000 '[' is refused as not JSON (it
    made json.loads raise RecursionError, a traceback)."""
    with pytest.raises(InvalidInput, match="not valid JSON"):
        manifests.parse(b"[" * 100_000, "sha256:" + "0" * 64, "the manifest")


def test_retry_after_forms() -> None:
    """Seconds or an HTTP date (the three forms RFC 9110 allows), bounded to MAX_WAIT;
    nothing usable gives None (the client's own back-off)."""
    from email.utils import formatdate

    import httpx

    from ignitevm.images.registry.client import MAX_WAIT, retry_after

    now = 1_800_000_000.0

    def wait(value: str) -> float | None:
        return retry_after(httpx.Response(503, headers={"Retry-After": value}), now)

    assert wait("7") == 7.0 and wait("0") == 0.0 and wait("-4") == 0.0
    assert wait("99999") == MAX_WAIT and wait("1e999") == MAX_WAIT
    assert wait(formatdate(now + 12, usegmt=True)) == 12.0
    assert wait(formatdate(now + 12)) == 12.0  # "-0000"
    assert wait(formatdate(now - 60, usegmt=True)) == 0.0  # already past
    assert wait(formatdate(now + 86400, usegmt=True)) == MAX_WAIT  # a day: capped
    assert wait("Sun Nov  6 08:49:37 1994") == 0.0  # asctime form
    assert wait("Sunday, 06-Nov-94 08:49:37 GMT") == 0.0  # RFC 850 form
    for junk in ("", "soon", "nan", "Mon, 99 Foo 2026 25:61:00 GMT"):
        assert wait(junk) is None, junk


# --- blob bodies read past h11 (client.body): which answers may be --------------------------


class _Stream:
    def __init__(self, sock: object, ssl_object: object = None):
        self.info = {"socket": sock, "ssl_object": ssl_object}

    def get_extra_info(self, name: str) -> object:
        return self.info.get(name)


def _answer(headers: dict[str, str], stream: object | None) -> object:
    import httpx

    ext: dict[str, object] = {"http_version": b"HTTP/1.1"}
    if stream is not None:
        ext["network_stream"] = stream
    return httpx.Response(200, headers=headers, extensions=ext)


def test_direct_socket_only_for_plain_bodies_of_known_length() -> None:
    import socket
    import ssl

    from ignitevm.images.registry.client import DIRECT_MIN, _own_socket

    big = str(DIRECT_MIN * 2)
    with socket.socket() as sock:
        assert _own_socket(_answer({"content-length": big}, _Stream(sock))) is sock
        for headers in ({"content-length": "100"},  # small: through h11 (reused connection)
                        {"transfer-encoding": "chunked"},
                        {"content-length": big, "transfer-encoding": "chunked"},
                        {"content-length": big, "content-encoding": "gzip"},
                        {"content-length": "+" + big}, {"content-length": big + ".0"}):
            assert _own_socket(_answer(headers, _Stream(sock))) is None, headers
        # no stream, or one without a socket, or a plain socket with TLS above it
        assert _own_socket(_answer({"content-length": big}, None)) is None
        assert _own_socket(_answer({"content-length": big}, object())) is None
        assert _own_socket(_answer({"content-length": big}, _Stream(None))) is None
        assert _own_socket(_answer({"content-length": big}, _Stream(sock, object()))) is None
        # TLS: only on the socket itself, not TLS inside a proxy's TLS
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls = ctx.wrap_socket(socket.socket(), server_hostname="x", do_handshake_on_connect=False)
        with tls:
            inner = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="x")
            assert _own_socket(_answer({"content-length": big},
                                       _Stream(tls, inner))) is None


def test_download_imports_leave_out_tarfile_and_tomllib(tmp_path: Path) -> None:
    """A download loads neither tarfile (the archive reader's) nor tomllib when
    registries.conf holds comments only, as Debian ships it; one that says anything is
    parsed as ever."""
    from tests.helpers.python import python_out

    conf = tmp_path / "registries.conf"
    conf.write_text("# comments only\n\n   # indented too\n")
    code = (
        "import sys\n"
        "from ignitevm.images.registry import pull, mirrors\n"
        "from ignitevm.api.refs import parse\n"
        "assert [e.ref.domain for e in mirrors.endpoints(parse('example.com/a/b:1'))] == "
        "['example.com']\n"
        "print(sorted({'tarfile', 'tomllib'} & set(sys.modules)))\n"
        "from ignitevm.images.blobs import BoundedTarInfo\n"
        "from ignitevm.images import blobs\n"
        "assert blobs.BoundedTarInfo is BoundedTarInfo is blobs.bounded_tarinfo()\n"
        "import tarfile; assert issubclass(BoundedTarInfo, tarfile.TarInfo)\n"
    )
    env = dict(os.environ, CONTAINERS_REGISTRIES_CONF=str(conf))
    assert python_out(code, env=env).strip() == "[]"
    conf.write_text('# a mirror\n[[registry]]\nlocation = "example.com"\n'
                    '[[registry.mirror]]\nlocation = "mirror.example"\n')
    code = ("from ignitevm.images.registry import mirrors\n"
            "from ignitevm.api.refs import parse\n"
            "print([e.ref.domain for e in mirrors.endpoints(parse('example.com/a/b:1'))])\n")
    assert python_out(code, env=env).strip() == "['mirror.example', 'example.com']"


@contextlib.contextmanager
def _serving(handler: type, host: str = "127.0.0.1") -> Iterator[int]:
    """``handler`` served on ``host`` in a thread for the block; its port."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _redirect(handler: QuietHandler, location: str) -> None:
    handler.send_response(307)
    handler.send_header("Location", location)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def test_a_redirect_targets_challenge_gets_no_credentials(tmp_path: Path) -> None:
    """A registry redirects its manifest to another host, which answers 401 naming a
    token server of its own: that is no challenge of the registry's, and the user's
    credentials for the registry go nowhere (neither to it nor to its token server)."""
    from ignitevm.api.refs import parse
    from ignitevm.errors import IgniteError
    from ignitevm.images.registry.client import Client

    seen: list[tuple[str, str | None]] = []

    class Other(QuietHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            if self.path.startswith("/token"):
                body = b'{"token": "t"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(401)
            self.send_header("WWW-Authenticate",
                             f'Bearer realm="http://127.0.0.2:{other_port}/token",service="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()

    class Registry(QuietHandler):
        def do_GET(self) -> None:
            _redirect(self, f"http://127.0.0.2:{other_port}{self.path}")

    with _serving(Other, "127.0.0.2") as other_port, _serving(Registry) as port:
        (tmp_path / "config.json").write_text(json.dumps({"auths": {f"127.0.0.1:{port}": {
            "auth": base64.b64encode(b"alice:s3cret").decode()}}}))
        client = Client(parse(f"127.0.0.1:{port}/a/b:1"), config_dir=str(tmp_path))
        with pytest.raises(IgniteError, match="which asks for credentials: refused"):
            client.get("manifests/1")
        assert seen and all(authz is None for _path, authz in seen), seen
        assert not [p for p, _ in seen if p.startswith("/token")]


def test_a_token_request_is_not_redirected_to_another_host() -> None:
    """A token server that redirects a request carrying a form (a refresh token) to
    another host: refused, and that host is sent nothing."""

    from ignitevm.api.refs import parse
    from ignitevm.errors import IgniteError
    from ignitevm.images.registry.client import Client

    got: list[str] = []

    class Other(QuietHandler):
        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    class Tokens(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            _redirect(self, f"http://127.0.0.2:{other_port}/token")

    with _serving(Other, "127.0.0.2") as other_port, _serving(Tokens) as port:
        client = Client(parse(f"127.0.0.1:{port}/a/b:1"))
        with pytest.raises(IgniteError, match=r"to another host .*: refused"):
            client._plain("POST", f"http://127.0.0.1:{port}/token",
                          data={"grant_type": "refresh_token", "refresh_token": "s3cret"})
        assert got == []
