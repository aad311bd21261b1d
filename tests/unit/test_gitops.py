"""ignited gitops with real git: file:// and smart HTTP (git http-backend behind a
small Basic-auth server in the test). The password never appears on any
process's command line, and GIT_SSH_COMMAND survives paths with spaces and
shell characters."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ignitevm.daemon.gitops import GitSource, split_credentials
from ignitevm.errors import IgniteError, InvalidInput
from tests.conftest import cli_env
from tests.helpers.daemon import read_until

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

HTTP_BACKEND = Path("/usr/lib/git-core/git-http-backend")
SECRET = "s3cr3t-Pa55-token"
MANIFEST = """apiVersion: ignite.weave.works/v1alpha4
kind: VM
metadata:
  name: from-git
  uid: 00000000000000ab
spec:
  image:
    oci: not-imported
status:
  running: true
"""


def _git(*args: str, cwd: Path | None = None) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    repo, work = tmp_path / "repo.git", tmp_path / "work"
    _git("init", "--quiet", "--bare", "--initial-branch=master", str(repo))
    _git("init", "--quiet", "--initial-branch=master", str(work))
    (work / "vm.yaml").write_text(MANIFEST)
    _git("add", "vm.yaml", cwd=work)
    _git("commit", "--quiet", "-m", "one VM", cwd=work)
    _git("push", "--quiet", str(repo), "master", cwd=work)
    return repo


def test_file_url_clone_and_update(bare: Path, tmp_path: Path) -> None:
    src = GitSource(f"file://{bare}", "master", tmp_path / "cache", 60)
    checkout = src.update()
    assert (checkout / "vm.yaml").read_text() == MANIFEST
    first = src.head
    work = tmp_path / "work"
    (work / "second.yaml").write_text(MANIFEST.replace("ab", "ac"))
    _git("add", "second.yaml", cwd=work)
    _git("commit", "--quiet", "-m", "two", cwd=work)
    _git("push", "--quiet", str(bare), "master", cwd=work)
    assert (src.update() / "second.yaml").exists() and src.head != first


@pytest.mark.parametrize(("url", "branch", "message"), [
    ("--upload-pack=touch /tmp/x", "master", "unsupported endpoint scheme"),
    ("ext::sh -c touch% /tmp/x", "master", "unsupported endpoint scheme"),
    ("file:///srv/repo", "--upload-pack=touch /tmp/x", "invalid branch"),
    ("file:///srv/repo", "a b", "invalid branch"),
])
def test_hostile_urls_and_branches(url: str, branch: str, message: str,
                                   tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=message):
        GitSource(url, branch, tmp_path, 60)


def test_credentials_in_the_url_move_to_the_helper(tmp_path: Path) -> None:
    assert split_credentials("https://me:p%40ss@example.com/r.git") == (
        "https://example.com/r.git", "me", "p@ss")
    src = GitSource("https://me:tok@example.com/r.git", "master", tmp_path, 60)
    assert src.url == "https://example.com/r.git" and "tok" not in src.display_url
    assert src.env["IGNITED_GIT_PASSWORD"] == "tok"


def test_ssh_command_is_quoted(tmp_path: Path) -> None:
    """git runs GIT_SSH_COMMAND through a shell: a key path with a space and shell
    syntax reaches ssh as one argument and runs nothing. ``ssh`` here is a stand-in
    on PATH that records its argv (no SSH server in the unit layer)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv"
    fake = bin_dir / "ssh"
    fake.write_text(f"#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > {record}\n"
                    "exit 1\n")
    fake.chmod(0o755)
    key = tmp_path / "my key;touch pwned;$(touch pwned2)"
    key.write_text("")
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}:{old_path}"
    try:
        src = GitSource("git@example.invalid:team/vms.git", "master", tmp_path / "cache", 60,
                        identity_file=str(key))
        with contextlib.chdir(tmp_path), pytest.raises(IgniteError):
            src.update()
    finally:
        os.environ["PATH"] = old_path
    args = record.read_text().splitlines()
    assert args[args.index("-i") + 1] == str(key)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


# ---- smart HTTP with Basic auth -------------------------------------------------------

def _cmdlines_holding(secret: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if secret.encode() in raw:
                text = raw.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry}: {text}")
    return found


class _Server(ThreadingHTTPServer):
    root: Path
    seen: list[str]  # Authorization results, and command lines found holding the secret
    leaks: list[str]


class _GitHandler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def _serve(self) -> None:
        # While git waits for this answer, none of its processes may show the password.
        self.server.leaks += _cmdlines_holding(SECRET)
        want = "Basic " + base64.b64encode(f"robot:{SECRET}".encode()).decode()
        if self.headers.get("Authorization") != want:
            self.server.seen.append("challenge")
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="vms"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.seen.append("authorized")
        path, _, query = self.path.partition("?")
        env = dict(os.environ, GIT_PROJECT_ROOT=str(self.server.root), GIT_HTTP_EXPORT_ALL="1",
                   REQUEST_METHOD=self.command, PATH_INFO=path, QUERY_STRING=query,
                   CONTENT_TYPE=self.headers.get("Content-Type", ""), REMOTE_USER="robot",
                   REMOTE_ADDR="127.0.0.1")
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        out = subprocess.run([str(HTTP_BACKEND)], input=body, env=env, capture_output=True,
                             check=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(": ")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _serve
    do_POST = _serve


@contextlib.contextmanager
def git_http(root: Path) -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _GitHandler)
    server.root, server.seen, server.leaks = root, [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


needs_backend = pytest.mark.skipif(not HTTP_BACKEND.exists(),
                                   reason="git-http-backend is not installed")


@needs_backend
def test_https_password_through_the_askpass_helper(bare: Path, tmp_path: Path) -> None:
    with git_http(bare.parent) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/{bare.name}"
        src = GitSource(url, "master", tmp_path / "cache", 60, username="robot",
                        password=SECRET)
        assert (src.update() / "vm.yaml").exists()
        src.update()  # a fetch authenticates the same way
    assert "authorized" in server.seen and server.leaks == []
    with git_http(bare.parent) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/{bare.name}"
        src = GitSource(url, "master", tmp_path / "cache2", 60, username="robot",
                        password="wrong")
        with pytest.raises(IgniteError):
            src.update()


@needs_backend
@pytest.mark.parametrize("how", ["flag", "file", "env"])
def test_ignited_gitops_password_is_in_no_command_line(bare: Path, tmp_path: Path,
                                                       how: str) -> None:
    """The real ignited: given with --https-password (ignited runs itself again
    without it), --https-password-file or $IGNITED_HTTPS_PASSWORD, the password
    is on no command line while git talks to the server, and the clone works."""
    env = cli_env(tmp_path / "root")
    extra: list[str] = []
    if how == "flag":
        extra = ["--https-password", SECRET]
    elif how == "file":
        (tmp_path / "pw").write_text(SECRET + "\n")
        extra = ["--https-password-file", str(tmp_path / "pw")]
    else:
        env["IGNITED_HTTPS_PASSWORD"] = SECRET
    code = "from ignitevm.daemon.main import main; raise SystemExit(main())"
    with git_http(bare.parent) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/{bare.name}"
        proc = subprocess.Popen([sys.executable, "-c", code, "gitops", url,
                                 "--https-username", "robot", *extra, "--interval", "30s"],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            lines = read_until(proc, "not-imported")  # the manifest was read from the clone
            own = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        finally:
            proc.terminate()
            proc.wait()
    assert "authorized" in server.seen
    assert server.leaks == [], server.leaks
    assert SECRET.encode() not in own
    if how == "flag":
        assert any("visible to every user" in line for line in lines)


def test_ignited_gitops_refuses_a_hostile_manifest(tmp_path: Path) -> None:
    """The bindAddress injection, pushed to a repository that the real ignited
    follows: refused with a clear line, nothing created, ignited still running."""
    repo, work = tmp_path / "repo.git", tmp_path / "work"
    _git("init", "--quiet", "--bare", "--initial-branch=master", str(repo))
    _git("init", "--quiet", "--initial-branch=master", str(work))
    evil = ("127.0.0.1:1-:1,guestfwd=tcp:10.0.2.100:9-cmd:touch /tmp/x,"
            "hostfwd=tcp:127.0.0.1")
    (work / "vm.yaml").write_text(MANIFEST.replace(
        "status:", f"  network:\n    ports:\n    - bindAddress: '{evil}'\n      hostPort: 8080\n"
        "      vmPort: 80\nstatus:"))
    _git("add", "vm.yaml", cwd=work)
    _git("commit", "--quiet", "-m", "hostile", cwd=work)
    _git("push", "--quiet", str(repo), "master", cwd=work)
    root = tmp_path / "root"
    env = cli_env(root)
    code = "from ignitevm.daemon.main import main; raise SystemExit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, "gitops", f"file://{repo}"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = read_until(proc, "bindAddress")
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait()
    assert "invalid port bindAddress" in lines[-1] and "from-git" in lines[-1]
    assert not (root / "vm").exists() or not any((root / "vm").iterdir())
