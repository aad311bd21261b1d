"""Real registries on loopback for the tests: Debian's `docker-registry`, run as a plain
process with its own config and a temporary storage folder (never the package's default
config or service), with no auth, htpasswd basic auth, TLS from a test CA, or Bearer
tokens from a small token server that lives in the tests (none is packaged anywhere).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.daemon import serving, terminate

REGISTRY = shutil.which("docker-registry")
SKOPEO = shutil.which("skopeo")
OPENSSL = shutil.which("openssl")
START_DEADLINE = 30.0


def missing_tools() -> str | None:
    """Why registry tests cannot run here, or None."""
    for name, path in (("docker-registry", REGISTRY), ("skopeo", SKOPEO), ("openssl", OPENSSL)):
        if path is None:
            return f"{name} is not installed (bash scripts/setup.sh installs it)"
    return None


def serve_once(answer: bytes, seen: list[bytes] | None = None
               ) -> tuple[str, threading.Thread]:
    """A one-shot server on loopback (a stand-in registry that says one thing): it
    reads a request (kept in ``seen``, if given) and sends ``answer``."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def once() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                request = conn.recv(65536)
                if seen is not None:
                    seen.append(request)
                conn.sendall(answer)

    t = threading.Thread(target=once, daemon=True)
    t.start()
    return f"127.0.0.1:{srv.getsockname()[1]}", t


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL or "openssl", *args], cwd=cwd, check=True, capture_output=True)


class TestCA:
    """A certificate authority made with openssl, and leaf certificates it signs."""

    __test__ = False

    def __init__(self, folder: Path):
        self.dir = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.cert = folder / "ca.crt"
        self.key = folder / "ca.key"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
                 "-subj", "/CN=ignitevm test CA", cwd=folder)

    def issue(self, name: str, sans: list[str], *, rsa: bool = False,
              client: bool = False) -> tuple[Path, Path]:
        """A (cert, key) pair for ``sans`` ("DNS:x" / "IP:x" entries)."""
        key = ["-newkey", "rsa:2048"] if rsa else [
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        _openssl("req", "-new", *key, "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=self.dir)
        usage = "clientAuth" if client else "serverAuth"
        ext = self.dir / f"{name}.ext"
        ext.write_text(f"subjectAltName={','.join(sans)}\nextendedKeyUsage={usage}\n"
                       "basicConstraints=CA:FALSE\n" if sans else
                       f"extendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", ext.name,
                 cwd=self.dir)
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"


def htpasswd_line(user: str, password: str) -> str:
    """An htpasswd entry with bcrypt at cost 4 (cost 12 costs ~250 ms per request)."""
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return f"{user}:{hashed}\n"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A Bearer token server for docker-registry's `auth: token:` (RS256 JWTs with x5c).

    Users are checked with Basic auth; anonymous callers get pull access to the
    repositories in ``public``, a user named in ``allow`` to the repositories listed
    there (as a registry's per-user access rules), any other user to every repository.
    A user in ``deny`` is answered 403 Forbidden. Every request is recorded in
    ``requests`` (its method, path, query, the form's field names, the Authorization
    scheme: never a secret).

    ``POST /token`` is OAuth2's refresh-token grant, as clients holding a config.json
    ``identitytoken`` use it: a form with grant_type=refresh_token, refresh_token,
    service, scope (space-separated) and client_id; a refresh token in
    ``refresh_tokens`` stands for its user, any other is answered 400 invalid_grant
    (RFC 6749 5.2).
    """

    def __init__(self, ca: TestCA, users: dict[str, str], public: set[str] | None = None,
                 service: str = "ignitevm-test-registry", issuer: str = "ignitevm-test-issuer",
                 lifetime: int = 300, allow: dict[str, set[str]] | None = None,
                 deny: set[str] | None = None, refresh_tokens: dict[str, str] | None = None):
        self.users = users
        self.refresh_tokens = refresh_tokens or {}
        self.public = public or set()
        self.allow = allow or {}
        self.deny = deny or set()
        self.service = service
        self.issuer = issuer
        self.lifetime = lifetime
        self.cert, self.key = ca.issue("token-signer", [], rsa=True)
        der = subprocess.run([OPENSSL or "openssl", "x509", "-in", str(self.cert), "-outform",
                              "DER"], check=True, capture_output=True).stdout
        self._x5c = base64.b64encode(der).decode()
        self.requests: list[dict[str, str]] = []
        self.port = free_port()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def start(self) -> TokenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def sign(self, claims: dict[str, object]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run([OPENSSL or "openssl", "dgst", "-sha256", "-sign", str(self.key)],
                             input=signing.encode(), check=True, capture_output=True).stdout
        return f"{signing}.{_b64url(sig)}"

    def grant(self, user: str | None, scopes: list[str]) -> list[dict[str, object]]:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository":
                continue
            wanted = [a for a in actions.split(",") if a]
            if user and (user not in self.allow or name in self.allow[user]):
                allowed = wanted
            else:
                allowed = [a for a in wanted if a == "pull" and name in self.public]
            if allowed:
                access.append({"type": "repository", "name": name, "actions": allowed})
        return access

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                auth = self.headers.get("Authorization", "")
                server.requests.append({"method": "GET", "path": url.path, "query": url.query,
                                        "auth": auth.split(" ", 1)[0]})
                user = None
                if auth.startswith("Basic "):
                    name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if server.users.get(name) != password or name in server.deny:
                        self._answer(403 if name in server.deny else 401, b"")
                        return
                    user = name
                self._token(user, query.get("scope", []), "token")

            def do_POST(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                one = {k: v[0] for k, v in form.items() if len(v) == 1}
                server.requests.append({
                    "method": "POST", "path": url.path, "query": url.query,
                    "auth": self.headers.get("Authorization", "").split(" ", 1)[0],
                    "type": self.headers.get("Content-Type", ""),
                    "fields": ",".join(sorted(form)), "grant_type": one.get("grant_type", ""),
                    "service": one.get("service", ""), "scope": one.get("scope", ""),
                    "client_id": one.get("client_id", "")})
                user = server.refresh_tokens.get(one.get("refresh_token", ""))
                if (url.path != "/token" or one.get("grant_type") != "refresh_token"
                        or not one.get("client_id") or one.get("service") != server.service):
                    self._answer(400, json.dumps({"error": "invalid_request"}).encode())
                elif user is None or user in server.deny:
                    self._answer(400, json.dumps({"error": "invalid_grant"}).encode())
                else:
                    self._token(user, one.get("scope", "").split(), "access_token")

            def _token(self, user: str | None, scopes: list[str], key: str) -> None:
                now = int(time.time())
                claims = {"iss": server.issuer, "sub": user or "", "aud": server.service,
                          "exp": now + server.lifetime, "nbf": now - 10, "iat": now,
                          "jti": secrets.token_hex(8), "access": server.grant(user, scopes)}
                token = server.sign(claims)
                self._answer(200, json.dumps({key: token, "expires_in": server.lifetime}
                                             ).encode())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                if body:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@dataclass
class Registry:
    """One running docker-registry."""

    host: str  # "127.0.0.1:PORT"
    storage: Path
    process: subprocess.Popen[bytes]
    tls: bool = False
    user: str | None = None
    password: str | None = None
    ca: Path | None = None
    log: list[str] = field(default_factory=list)
    cert_dir: Path | None = None  # certs.d-style folder skopeo pushes with (client certs)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def push(self, source: str, dest: str, *, all_images: bool = False) -> None:
        """``skopeo copy SOURCE docker://HOST/DEST`` (e.g. ``oci:DIR:tag``)."""
        argv = [SKOPEO or "skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false"]
        if self.user:
            argv += ["--dest-creds", f"{self.user}:{self.password}"]
        if all_images:
            argv.append("--all")
        if self.cert_dir is not None:
            argv += ["--dest-cert-dir", str(self.cert_dir)]
        subprocess.run([*argv, source, f"docker://{self.host}/{dest}"], check=True,
                       capture_output=True, timeout=300)

    def upload(self, repo: str, layout: Path, desc: dict[str, object], tag: str) -> None:
        """Push an image or index of an OCI layout as it is (media types too) through the
        distribution API (plain HTTP, no auth): skopeo would convert or recompress."""
        import httpx

        blobs = layout / "blobs" / "sha256"
        raw = (blobs / str(desc["digest"])[7:]).read_bytes()
        doc = json.loads(raw)
        with httpx.Client(base_url=self.url) as http:
            for child in doc.get("manifests") or []:
                self.upload(repo, layout, child, child["digest"])
            for d in [doc["config"], *doc["layers"]] if "config" in doc else []:
                start = http.post(f"/v2/{repo}/blobs/uploads/")
                start.raise_for_status()
                loc = start.headers["location"]
                loc += ("&" if "?" in loc else "?") + "digest=" + urllib.parse.quote(d["digest"])
                http.put(loc, content=(blobs / d["digest"][7:]).read_bytes()).raise_for_status()
            http.put(f"/v2/{repo}/manifests/{tag}", content=raw,
                     headers={"Content-Type": str(desc["mediaType"])}).raise_for_status()

    def stop(self) -> None:
        terminate(self.process, timeout=10)


def _config(storage: Path, addr: str, *, tls: tuple[Path, Path] | None,
            htpasswd: Path | None, token: TokenServer | None,
            client_ca: Path | None = None) -> str:
    cfg: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": addr, "secret": secrets.token_hex(16)},
    }
    if tls is not None:
        cfg["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}  # type: ignore[index]
        if client_ca is not None:
            cfg["http"]["tls"]["clientcas"] = [str(client_ca)]  # type: ignore[index]
    if htpasswd is not None:
        cfg["auth"] = {"htpasswd": {"realm": "ignitevm-test", "path": str(htpasswd)}}
    elif token is not None:
        cfg["auth"] = {"token": {"realm": token.realm, "service": token.service,
                                 "issuer": token.issuer, "rootcertbundle": str(token.cert)}}
    return json.dumps(cfg)  # JSON is YAML


@contextlib.contextmanager
def running_registry(folder: Path, *, bind: str = "127.0.0.1", tls: tuple[Path, Path] | None = None,
                     ca: Path | None = None, users: dict[str, str] | None = None,
                     token: TokenServer | None = None,
                     client_ca: Path | None = None) -> Iterator[Registry]:
    """Start `docker-registry serve` in ``folder``; stop it (and keep nothing) at exit."""
    folder.mkdir(parents=True, exist_ok=True)
    storage = folder / "storage"
    storage.mkdir(exist_ok=True)
    htpasswd = None
    user = password = None
    if users:
        htpasswd = folder / "htpasswd"
        htpasswd.write_text("".join(htpasswd_line(u, p) for u, p in users.items()))
        user, password = next(iter(users.items()))
    port = free_port(bind)
    cfg = folder / "config.yml"
    cfg.write_text(_config(storage, f"{bind}:{port}", tls=tls, htpasswd=htpasswd, token=token,
                           client_ca=client_ca))
    proc = subprocess.Popen([REGISTRY or "docker-registry", "serve", str(cfg)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ, OTEL_SDK_DISABLED="1"))
    reg = Registry(f"{bind}:{port}", storage, proc, tls=tls is not None, user=user,
                   password=password, ca=ca)
    with serving(proc, "listening on", "docker-registry", reg.log, START_DEADLINE):
        yield reg


# --- pytest fixtures (tests/conftest.py loads this module as a plugin) -------------------

try:
    import pytest
except ImportError:  # imported by the bench, outside pytest
    pytest = None  # type: ignore[assignment]

USER, PASSWORD = "alice", "wonderland"
# A refresh token (a config.json ``identitytoken``) the token server takes for USER
IDENTITY_TOKEN = "idt-" + secrets.token_hex(16)
# Token registry users besides USER: one who may pull public/* only, one the token server
# answers 403 Forbidden.
LIMITED, LIMITED_PASSWORD = "bob", "builder"
BARRED, BARRED_PASSWORD = "mallory", "locked-out"

if pytest is not None:

    @pytest.fixture(scope="session")
    def registry_tools() -> None:
        why = missing_tools()
        if why:
            pytest.skip(why)

    @pytest.fixture(scope="session")
    def test_ca(tmp_path_factory: pytest.TempPathFactory, registry_tools: None) -> TestCA:
        return TestCA(tmp_path_factory.mktemp("ca"))

    @pytest.fixture(scope="session")
    def test_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
        """Skopeo sources of the test images, by name."""
        from tests.helpers.images import OCILayout, busybox_layers, kernel_layers

        layout = OCILayout(tmp_path_factory.mktemp("layout") / "oci")
        layers = busybox_layers()
        box = layout.image(layers, {"Cmd": ["/sbin/init"], "Env": ["PATH=/bin"],
                                    "ExposedPorts": {"80/tcp": {}},
                                    "Labels": {"org.example.role": "test"}})
        arm = layout.image(layers[:1], {"Cmd": ["/bin/sh"]}, arch="arm64")
        amd = layout.image(layers, {"Cmd": ["/sbin/init"]}, arch="amd64")
        return {
            "busybox": layout.tag(box, "busybox"),
            "multi": layout.tag(layout.index([amd, arm]), "multi"),
            "armonly": layout.tag(layout.index([arm]), "armonly"),
            "zstd": layout.tag(layout.image(layers, {"Cmd": ["/sbin/init"]},
                                            compression="zstd"), "zstd"),
            "kernel": layout.tag(layout.image(kernel_layers()), "kernel"),
            "noinit": layout.tag(layout.image(layers[:1]), "noinit"),
        }

    def _push_all(reg: Registry, layout: dict[str, str]) -> Registry:
        reg.push(layout["busybox"], "test/busybox:1")
        reg.push(layout["multi"], "test/multi:1", all_images=True)
        reg.push(layout["armonly"], "test/armonly:1", all_images=True)
        reg.push(layout["kernel"], "test/kernel:1")
        reg.push(layout["noinit"], "test/noinit:1")
        return reg

    @pytest.fixture(scope="session")
    def plain_registry(tmp_path_factory: pytest.TempPathFactory, registry_tools: None,
                       test_layout: dict[str, str]) -> Iterator[Registry]:
        with running_registry(tmp_path_factory.mktemp("reg-plain")) as reg:
            _push_all(reg, test_layout)
            reg.push(test_layout["zstd"], "test/zstd:1")
            yield reg

    @pytest.fixture(scope="session")
    def auth_registry(tmp_path_factory: pytest.TempPathFactory, registry_tools: None,
                      test_layout: dict[str, str]) -> Iterator[Registry]:
        with running_registry(tmp_path_factory.mktemp("reg-auth"),
                              users={USER: PASSWORD}) as reg:
            reg.push(test_layout["busybox"], "test/busybox:1")
            reg.push(test_layout["kernel"], "test/kernel:1")
            yield reg

    @pytest.fixture(scope="session")
    def tls_registry(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA,
                     test_layout: dict[str, str]) -> Iterator[Registry]:
        pair = test_ca.issue("loopback", ["IP:127.0.0.1", "DNS:localhost"])
        with running_registry(tmp_path_factory.mktemp("reg-tls"), tls=pair,
                              ca=test_ca.cert) as reg:
            reg.push(test_layout["busybox"], "test/busybox:1")
            yield reg

    @pytest.fixture(scope="session")
    def tls_auth_registry(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA,
                          test_layout: dict[str, str]) -> Iterator[Registry]:
        """HTTPS (the test CA) and htpasswd, as Ignite's private-registry e2e set-up."""
        pair = test_ca.issue("loopback-auth", ["IP:127.0.0.1", "DNS:localhost"])
        with running_registry(tmp_path_factory.mktemp("reg-tls-auth"), tls=pair,
                              ca=test_ca.cert, users={USER: PASSWORD}) as reg:
            reg.push(test_layout["busybox"], "test/busybox:1")
            reg.push(test_layout["kernel"], "test/kernel:1")
            yield reg

    @pytest.fixture(scope="session")
    def wrong_name_registry(tmp_path_factory: pytest.TempPathFactory,
                            test_ca: TestCA) -> Iterator[Registry]:
        pair = test_ca.issue("elsewhere", ["DNS:registry.elsewhere.example"])
        with running_registry(tmp_path_factory.mktemp("reg-wrong"), tls=pair,
                              ca=test_ca.cert) as reg:
            yield reg

    @pytest.fixture(scope="session")
    def token_registry(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA,
                       test_layout: dict[str, str]) -> Iterator[tuple[Registry, TokenServer]]:
        tokens = TokenServer(test_ca, {USER: PASSWORD, LIMITED: LIMITED_PASSWORD,
                                       BARRED: BARRED_PASSWORD}, public={"public/busybox"},
                             allow={LIMITED: {"public/busybox"}}, deny={BARRED},
                             refresh_tokens={IDENTITY_TOKEN: USER}).start()
        try:
            with running_registry(tmp_path_factory.mktemp("reg-token"), token=tokens) as reg:
                reg.user, reg.password = USER, PASSWORD
                reg.push(test_layout["busybox"], "public/busybox:1")
                reg.push(test_layout["busybox"], "private/busybox:1")
                yield reg, tokens
        finally:
            tokens.stop()
