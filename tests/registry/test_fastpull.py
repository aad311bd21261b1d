"""The lean second pull (cli/fastpull.py) against real registries: the same output as the
full path when a recorded tag has not moved, and the full path (``None``) for everything
else, with nothing changed first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Ignite
from tests.helpers.registry import PASSWORD, USER, Registry, serve_once
from tests.registry.conftest import creds_dir

pytestmark = pytest.mark.registry


def _fast(
    ig: Ignite,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *words: str,
    env: dict[str, str] | None = None,
) -> tuple[int | None, str, str]:
    """``fastpull.run`` in this process, in ``ig``'s environment: (code, stdout, stderr)."""
    from ignitevm.cli import fastpull

    for key, value in {**ig.env, "IGNITE_ROOT": str(ig.root), **(env or {})}.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = fastpull.run(list(words))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_same_output_as_the_full_path(
    ig: Ignite,
    plain_registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("busybox", "multi"):  # an image manifest; an index (this host's entry)
        ref = f"{plain_registry.host}/test/{name}:1"
        ig("image", "pull", ref)
        full = ig("image", "pull", "--log-level", "info", ref)  # (a flag: the full path)
        assert "Image is up to date" in full.stderr
        assert _fast(ig, monkeypatch, capsys, ref) == (0, full.stdout, full.stderr)
        quiet = ig("image", "pull", "-q", "--log-level", "warning", ref)
        assert _fast(ig, monkeypatch, capsys, "-q", ref) == (0, quiet.stdout, "")
        assert ig("image", "pull", ref).stderr == full.stderr  # (the CLI takes it too)


def test_anything_else_takes_the_full_path(
    ig: Ignite,
    plain_registry: Registry,
    auth_registry: Registry,
    test_layout: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = f"{plain_registry.host}/test/busybox:1"

    def full(*words: str, **env: str) -> None:
        assert _fast(ig, monkeypatch, capsys, *words, env=env) == (None, "", "")
        monkeypatch.undo()

    full(ref)  # not pulled yet
    ig("image", "pull", ref)
    full("--name", "other", ref)
    full("--platform", "linux/arm64", ref)
    full(f"{plain_registry.host}/test/busybox@sha256:{'0' * 64}")
    full(ref, HTTPS_PROXY="http://127.0.0.1:9")
    full(ref, IGNITE_INSECURE_REGISTRIES="example.org")
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{plain_registry.host}"\ninsecure = true\n')
    full(ref, CONTAINERS_REGISTRIES_CONF=str(conf))
    conf.write_text("# only comments\n\n  # here\n")
    assert (
        _fast(ig, monkeypatch, capsys, "-q", ref, env={"CONTAINERS_REGISTRIES_CONF": str(conf)})[0]
        == 0
    )
    monkeypatch.undo()
    # A registry not known to speak plain HTTP (the full path tries TLS first).
    (ig.root / "content" / "http-registries").write_text("")
    full(ref)
    ig("image", "pull", ref)  # (it learns again)
    assert _fast(ig, monkeypatch, capsys, "-q", ref)[0] == 0
    monkeypatch.undo()
    # The tag moved: the full path pulls it (the image is replaced).
    moving = f"{plain_registry.host}/test/fastmoving:1"
    plain_registry.push(test_layout["busybox"], "test/fastmoving:1")
    ig("image", "pull", moving)
    plain_registry.push(test_layout["zstd"], "test/fastmoving:1")
    full(moving)
    assert "Downloaded newer image" in ig("image", "pull", moving).stderr
    # Credentials needed: 401 (no credentials are read or sent here).
    private = f"{auth_registry.host}/test/busybox:1"
    ig.env["DOCKER_CONFIG"] = creds_dir(tmp_path / "docker", auth_registry.host, USER, PASSWORD)
    ig("image", "pull", private)
    full(private)
    assert "Image is up to date" in ig("image", "pull", private).stderr


def test_tls_registry_takes_the_full_path(
    ig: Ignite,
    tls_registry: Registry,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A loopback registry over TLS, its CA in certs.d: only the full path reads that."""
    ref = f"{tls_registry.host}/test/busybox:1"
    certs = home / "certs.d" / tls_registry.host
    certs.mkdir()
    (certs / "ca.crt").write_bytes(Path(str(tls_registry.ca)).read_bytes())
    ig("image", "pull", ref)
    assert _fast(ig, monkeypatch, capsys, ref) == (None, "", "")
    assert "Image is up to date" in ig("image", "pull", ref).stderr


# --- the pull record (cli/fastpull.py write, forget) --------------------------------------


def _record_path(ig: Ignite, text: str) -> Path:
    from ignitevm.cli.fastpull import record_file

    return Path(record_file(str(ig.root), text))


def _fields(path: Path) -> dict[str, str]:
    from ignitevm.cli.fastpull import _FIELDS, FORMAT

    lines = path.read_text().split("\n")
    assert lines[0] == FORMAT and lines[-1] == ""
    return dict(zip(_FIELDS, lines[1:-1], strict=True))


def _write_fields(path: Path, rec: dict[str, str]) -> None:
    from ignitevm.cli.fastpull import _FIELDS, FORMAT

    path.write_text("\n".join([FORMAT, *(rec[k] for k in _FIELDS), ""]))


def _served(reg: Registry, repo: str, tag: str) -> tuple[bytes, str]:
    """The tag's manifest as the registry serves it: (body, media type)."""
    import urllib.request

    from ignitevm.images.registry.manifests import ACCEPT

    req = urllib.request.Request(f"http://{reg.host}/v2/{repo}/manifests/{tag}",
                                 headers={"Accept": ACCEPT})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read(), resp.headers.get("content-type", "").split(";")[0].strip()


def test_a_pull_leaves_a_record(ig: Ignite, plain_registry: Registry) -> None:
    import hashlib
    import json
    import stat

    for name in ("busybox", "multi"):  # an image manifest; an index (this host's entry)
        ref = f"{plain_registry.host}/test/{name}:1"
        uid = ig("image", "pull", "-q", ref).stdout.strip()
        path = _record_path(ig, ref)
        rec = _fields(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        body, media = _served(plain_registry, f"test/{name}", "1")
        meta_file = ig.root / "image" / uid / "metadata.json"
        meta = json.loads(meta_file.read_text())
        st = meta_file.stat()
        assert rec == {
            "text": ref, "shown": ref, "tag": "1", "name": f"{plain_registry.host}/test/{name}",
            "image": ref, "host": plain_registry.host,
            "address": plain_registry.host.partition(":")[0],
            "port": plain_registry.host.partition(":")[2], "path": f"test/{name}",
            "top": "sha256:" + hashlib.sha256(body).hexdigest(), "media": media,
            "digest": meta["status"]["ociSource"]["id"].rpartition("@")[2],
            "machine": os.uname().machine, "scheme": "http", "uid": uid,
            "stat": f"{st.st_ino} {st.st_size} {st.st_mtime_ns}",
        }
        assert (rec["top"] != rec["digest"]) == (name == "multi")
        before = path.stat()
        ig("image", "pull", "--log-level", "info", ref)  # (the full path: confirmed)
        assert path.stat().st_mtime_ns == before.st_mtime_ns
    # Not the plain form: no record (the fast path would not answer for it anyway).
    other = f"{plain_registry.host}/test/zstd:1"
    ig("image", "pull", "--name", "other", other)
    assert not _record_path(ig, other).exists()


def test_the_answer_loads_no_parser(ig: Ignite, plain_registry: Registry) -> None:
    """Through the installed script's source (bin/ignite): the up-to-date answer without
    re, json, enum, socket or the command tree (the interpreter's own imports aside)."""
    import subprocess
    import sys

    from tests.conftest import REPO, cli_env

    ref = f"{plain_registry.host}/test/multi:1"
    uid = ig("image", "pull", "-q", ref).stdout.strip()
    proc = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "bin" / "ignite"),
                           "image", "pull", "-q", ref], env={**cli_env(ig.root), **ig.env},
                          capture_output=True, text=True, check=True)
    assert proc.stdout == f"{uid}\n"
    loaded = {line.rpartition("|")[2].strip() for line in proc.stderr.splitlines()
              if line.startswith("import time:")}
    assert "ignitevm.cli.fastpull" in loaded
    assert not loaded & {"re", "json", "enum", "socket", "typing", "argparse", "httpx",
                         "ignitevm.api.refs", "ignitevm.cli.parser"}


def test_a_record_not_as_written_takes_the_full_path(
    ig: Ignite,
    plain_registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = f"{plain_registry.host}/test/busybox:1"
    uid = ig("image", "pull", "-q", ref).stdout.strip()
    path = _record_path(ig, ref)
    good = path.read_bytes()
    rec = _fields(path)

    def full(changed: dict[str, str] | None = None, raw: bytes | None = None) -> None:
        if raw is None:
            _write_fields(path, {**rec, **(changed or {})})
        else:
            path.write_bytes(raw)
        assert _fast(ig, monkeypatch, capsys, "-q", ref) == (None, "", "")
        monkeypatch.undo()
        path.write_bytes(good)

    assert _fast(ig, monkeypatch, capsys, "-q", ref) == (0, f"{uid}\n", "")
    monkeypatch.undo()
    full({"top": "sha256:" + "0" * 64})  # another manifest
    full({"media": "application/vnd.oci.image.index.v1+json"})
    full({"text": ref + "x"})  # another reference's
    full({"machine": "m68k"})  # chosen for another machine
    full({"scheme": "ftp"})
    full({"port": "x"})
    full({"port": "\u00b2"})
    full({"port": "99999999999999999999"})
    full({"uid": uid + "\r"})
    full({"uid": "../" + uid})
    full({"stat": "1 2 3"})
    full(raw=good.replace(b"\n", b"\r\n"))
    full(raw=b"garbage")
    full(raw=b"\xff" * 100)
    full(raw=good[:-1])
    full(raw=good + b"more\n")
    # The image changed (its metadata.json written again): the full path, which
    # records it again.
    meta = ig.root / "image" / uid / "metadata.json"
    os.utime(meta, ns=(meta.stat().st_atime_ns, meta.stat().st_mtime_ns + 1))
    assert _fast(ig, monkeypatch, capsys, "-q", ref) == (None, "", "")
    monkeypatch.undo()
    ig("image", "pull", ref)
    assert _fast(ig, monkeypatch, capsys, "-q", ref) == (0, f"{uid}\n", "")
    monkeypatch.undo()
    # Removed: the record goes with it; one left over (stale) is harmless.
    stale = path.read_bytes()
    ig("image", "rm", ref)
    assert not path.exists()
    path.write_bytes(stale)
    assert _fast(ig, monkeypatch, capsys, "-q", ref) == (None, "", "")
    monkeypatch.undo()
    new = ig("image", "pull", "-q", ref).stdout.strip()  # pulled again: another image
    assert new != uid and _fields(path)["uid"] == new
    path.write_bytes(stale)
    assert _fast(ig, monkeypatch, capsys, "-q", ref) == (None, "", "")
    monkeypatch.undo()


@pytest.mark.parametrize("lie", ["", "media", "digest header", "no digest", "body", "garbage",
                                 "status"])
def test_only_the_recorded_manifest_is_up_to_date(
    ig: Ignite,
    plain_registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    lie: str,
) -> None:
    """A registry (here one that stands in for it, on the recorded host) answers the
    HEAD request with the recorded manifest's digest and type, or lies: a lie takes the
    full path, whatever else it says."""
    ref = f"{plain_registry.host}/test/multi:1"
    uid = ig("image", "pull", "-q", ref).stdout.strip()
    rec = _fields(_record_path(ig, ref))
    body, media = _served(plain_registry, "test/multi", "1")
    head = {"Content-Type": media, "Docker-Content-Digest": rec["top"]}
    if lie == "media":
        head["Content-Type"] = "application/vnd.oci.image.manifest.v1+json"
    elif lie == "digest header":
        head["Docker-Content-Digest"] = "sha256:" + "1" * 64
    elif lie == "no digest":
        del head["Docker-Content-Digest"]
    status = b"HTTP/1.1 404 Not Found" if lie == "status" else b"HTTP/1.1 200 OK"
    answer = (status + b"\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in head.items())
              + f"Content-Length: {len(body)}\r\n\r\n".encode())
    if lie == "body":  # (a body after the headers: not an answer to a HEAD)
        answer += body
    if lie == "garbage":
        answer = b"\x00garbage\r\n\r\n"
    host, t = serve_once(answer)
    text = f"{host}/test/multi:1"
    _write_fields(_record_path(ig, text), {**rec, "text": text, "host": host,
                                           "port": host.partition(":")[2]})
    (ig.root / "content" / "http-registries").write_text(f"{plain_registry.host}\n{host}\n")
    want = (0, f"{uid}\n", "") if not lie else (None, "", "")
    assert _fast(ig, monkeypatch, capsys, "-q", text) == want
    t.join(5)


def test_the_registry_is_asked_with_head() -> None:
    """What the stand-in above is told: one HEAD of the tag's manifest, no credentials."""
    from ignitevm.cli import fastpull
    from tests.helpers.registry import serve_once

    seen: list[bytes] = []
    host, t = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", seen)
    port = int(host.partition(":")[2])
    got = fastpull._get("127.0.0.1", port, f"127.0.0.1:{port}", False, "/v2/a/manifests/1",
                        {"Accept": fastpull.ACCEPT}, head=True)
    t.join(5)
    assert got == ({"content-length": "5"}, b"")
    request = seen[0].decode()
    assert request.startswith("HEAD /v2/a/manifests/1 HTTP/1.1\r\n")
    assert "authorization" not in request.lower()


def test_https_get_is_verified(
    tls_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HTTPS form of the one GET: answered when the registry's certificate is one
    the system's trust (here its CA given as SSL_CERT_FILE), refused otherwise."""
    from ignitevm.cli.fastpull import _get

    name, _, port = tls_registry.host.partition(":")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    assert _get(name, int(port), tls_registry.host, True, "/v2/", {}) is None
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_registry.ca))
    got = _get(name, int(port), tls_registry.host, True, "/v2/", {})
    assert got is not None and got[1] == b"{}"
