"""`ignite image pull` and friends against real docker-registry processes on loopback.

Every bad input ends in one `error:` line, exit code 1, and no Image left behind.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from tests.conftest import Ignite
from tests.helpers.faultproxy import FaultProxy, Faults
from tests.helpers.registry import PASSWORD, USER, Registry, TokenServer, running_registry

pytestmark = pytest.mark.registry


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME with no credentials and no certificates (the real ones are never read)."""
    h = tmp_path / "home"
    (h / "certs.d").mkdir(parents=True)
    return h


@pytest.fixture
def ig(tmp_path: Path, home: Path) -> Ignite:
    return Ignite(tmp_path / "root", env={
        "HOME": str(home), "DOCKER_CONFIG": str(home / ".docker"), "XDG_RUNTIME_DIR": str(home),
        "IGNITE_CERTS_DIRS": str(home / "certs.d"), "IGNITE_INSECURE_REGISTRIES": ""})


def fails(ig: Ignite, *args: str) -> str:
    """Run a command that must fail cleanly; return its error line."""
    before = ig("image", "ls", "-q").stdout
    res = ig(*args, check=False)
    assert res.returncode == 1, res
    lines = res.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    assert ig("image", "ls", "-q").stdout == before  # nothing half-made
    assert not list((ig.root / "tmp").glob("*[0-9a-f]"))
    return res.stderr



def creds_dir(path: Path, host: str, user: str, password: str, key: str | None = None) -> str:
    path.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (path / "config.json").write_text(json.dumps({"auths": {key or host: {"auth": auth}}}))
    return str(path)


def test_pull_then_up_to_date(ig: Ignite, plain_registry: Registry) -> None:
    ref = f"{plain_registry.host}/test/busybox:1"
    res = ig("image", "pull", ref)
    assert res.stdout.strip() == ref
    assert "Downloaded newer image" in res.stderr and "Digest: sha256:" in res.stderr
    again = ig("image", "pull", ref)
    assert "Image is up to date" in again.stderr
    assert ig("image", "ls", "-q").stdout.strip().count("\n") == 0
    assert ig("image", "pull", "-q", ref).stdout.strip() == ig("image", "ls", "-q").stdout.strip()


def test_multi_arch(ig: Ignite, plain_registry: Registry) -> None:
    ig("image", "pull", f"{plain_registry.host}/test/multi:1")
    inspect = json.loads(ig("inspect", "image", f"{plain_registry.host}/test/multi:1").stdout)
    amd = inspect["status"]["ociSource"]["id"]
    ig("image", "pull", "--platform", "linux/arm64", "--name", "multi-arm",
       f"{plain_registry.host}/test/multi:1")
    arm = json.loads(ig("inspect", "image", "multi-arm").stdout)["status"]["ociSource"]["id"]
    assert amd != arm and amd.startswith("oci://") and arm.startswith("oci://")


def test_no_platform(ig: Ignite, plain_registry: Registry) -> None:
    err = fails(ig, "image", "pull", f"{plain_registry.host}/test/armonly:1")
    assert "has no image for linux/amd64 (it has: linux/arm64)" in err
    err = fails(ig, "image", "pull", "--platform", "linux/s390x",
                f"{plain_registry.host}/test/multi:1")
    assert "(it has: linux/amd64, linux/arm64)" in err
    assert "invalid platform" in fails(ig, "image", "pull", "--platform", "amd64",
                                       f"{plain_registry.host}/test/multi:1")


def test_zstd_layers(ig: Ignite, plain_registry: Registry) -> None:
    ig("image", "pull", f"{plain_registry.host}/test/zstd:1")


def test_unknown_tag_and_repository(ig: Ignite, plain_registry: Registry) -> None:
    assert "has no tag 2 in test/busybox" in fails(
        ig, "image", "pull", f"{plain_registry.host}/test/busybox:2")
    assert "has no repository test/nothing" in fails(
        ig, "image", "pull", f"{plain_registry.host}/test/nothing:1")


def test_unreachable(ig: Ignite, tmp_path: Path) -> None:
    from tests.helpers.registry import free_port

    assert "connection refused" in fails(ig, "image", "pull", f"127.0.0.1:{free_port()}/x:1")
    assert "unknown registry host" in fails(ig, "image", "pull", "registry.invalid/x:1")


@pytest.mark.parametrize("ref", ["Bad/Name:x", "x:", "app@sha256:12", "a//b"])
def test_malformed(ig: Ignite, ref: str) -> None:
    assert "invalid image reference" in fails(ig, "image", "pull", ref)


def test_basic_auth(ig: Ignite, auth_registry: Registry, tmp_path: Path, home: Path) -> None:
    ref = f"{auth_registry.host}/test/busybox:1"
    err = fails(ig, "image", "pull", ref)
    assert "wants credentials" in err and "--registry-config-dir" in ig(
        "image", "pull", ref, check=False).stderr
    wrong = creds_dir(tmp_path / "wrong", auth_registry.host, USER, "nope")
    err = fails(ig, "image", "pull", "--registry-config-dir", wrong, ref)
    assert f"refused the credentials for {USER}" in err and "nope" not in err
    # Ignite's matrix: the flag, the default config file, an empty dir overriding it.
    good = creds_dir(tmp_path / "good", auth_registry.host, USER, PASSWORD,
                     key=f"https://{auth_registry.host}/v1/")
    ig("image", "pull", "--registry-config-dir", good, ref)
    ig("image", "rm", ref)
    cfg = tmp_path / "config.yaml"  # Ignite's Configuration field
    cfg.write_text("apiVersion: ignite.weave.works/v1alpha4\nkind: Configuration\n"
                   f"spec:\n  registryConfigDir: {good}\n")
    ig("--ignite-config", str(cfg), "image", "pull", ref)
    ig("image", "rm", ref)
    creds_dir(home / ".docker", auth_registry.host, USER, PASSWORD)
    ig("image", "import", ref)
    ig("image", "rm", ref)
    (tmp_path / "empty").mkdir()
    assert "wants credentials" in fails(ig, "image", "pull", "--registry-config-dir",
                                        str(tmp_path / "empty"), ref)


def test_containers_auth_json(ig: Ignite, auth_registry: Registry, home: Path) -> None:
    creds_dir(home / "containers", f"{auth_registry.host}/test", USER, PASSWORD)
    (home / "containers" / "config.json").rename(home / "containers" / "auth.json")
    ig("image", "pull", f"{auth_registry.host}/test/busybox:1")


def test_token_auth(ig: Ignite, token_registry: tuple[Registry, TokenServer],
                    tmp_path: Path) -> None:
    reg, tokens = token_registry
    ig("image", "pull", f"{reg.host}/public/busybox:1")  # an anonymous token
    assert "wants credentials" in fails(ig, "image", "pull", f"{reg.host}/private/busybox:1")
    wrong = creds_dir(tmp_path / "wrong", reg.host, USER, "nope")
    assert "refused the credentials" in fails(ig, "image", "pull", "--registry-config-dir",
                                              wrong, f"{reg.host}/private/busybox:1")
    good = creds_dir(tmp_path / "good", reg.host, USER, PASSWORD)
    before = len(tokens.requests)
    ig("image", "pull", "--registry-config-dir", good, f"{reg.host}/private/busybox:1")
    # One token for the scope, reused for the manifest, the config and every layer.
    assert len(tokens.requests) - before == 1


def test_tls(ig: Ignite, tls_registry: Registry, home: Path) -> None:
    ref = f"{tls_registry.host}/test/busybox:1"
    err = fails(ig, "image", "pull", ref)
    assert "cannot verify the TLS certificate" in err
    certs = home / "certs.d" / tls_registry.host
    certs.mkdir()
    (certs / "ca.crt").write_bytes(Path(str(tls_registry.ca)).read_bytes())
    ig("image", "pull", ref)


def test_tls_wrong_name(ig: Ignite, wrong_name_registry: Registry, home: Path) -> None:
    certs = home / "certs.d" / wrong_name_registry.host
    certs.mkdir()
    (certs / "ca.crt").write_bytes(Path(str(wrong_name_registry.ca)).read_bytes())
    err = fails(ig, "image", "pull", f"{wrong_name_registry.host}/test/busybox:1")
    assert "cannot verify the TLS certificate" in err and "mismatch" in err


def test_http_needs_opt_in(ig: Ignite, tmp_path: Path,
                           test_layout: dict[str, str]) -> None:
    """A plain-HTTP registry on a non-loopback address is refused unless named insecure."""
    addr = _non_loopback_address()
    with running_registry(tmp_path / "reg", bind=addr) as reg:
        reg.push(test_layout["busybox"], "test/busybox:1")
        ref = f"{reg.host}/test/busybox:1"
        err = fails(ig, "image", "pull", ref)
        assert "does not speak HTTPS" in err and "--insecure-registry" in err
        ig("image", "pull", "--insecure-registry", reg.host, ref)
        ig("image", "rm", ref)
        env_ig = Ignite(ig.root, env=dict(ig.env, IGNITE_INSECURE_REGISTRIES=reg.host))
        env_ig("image", "pull", ref)
        ig("image", "rm", ref)
        cfg = tmp_path / "config.yaml"
        cfg.write_text("apiVersion: ignite.weave.works/v1alpha4\nkind: Configuration\n"
                       f"spec:\n  insecureRegistries: ['{reg.host}']\n")
        ig("--ignite-config", str(cfg), "image", "pull", ref)


def _non_loopback_address() -> str:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent
            addr = s.getsockname()[0]
        except OSError:
            addr = ""
    if not addr or addr.startswith("127."):
        pytest.skip("this host has no non-loopback IPv4 address")
    return str(addr)


def test_digest_mismatch(ig: Ignite, plain_registry: Registry, tmp_path: Path) -> None:
    with FaultProxy(plain_registry.host, Faults(corrupt_blobs=True)) as proxy:
        err = fails(ig, "image", "pull", f"{proxy.host}/test/busybox:1")
    assert "does not match its digest" in err
    content = ig.root / "content"
    assert not list((content / "ingest").glob("*[0-9a-f]"))  # nothing cached
    assert len(list((content / "blobs" / "sha256").iterdir())) == 1  # the manifest only


def test_cut_connection_resumes(ig: Ignite, plain_registry: Registry) -> None:
    with FaultProxy(plain_registry.host, Faults(cut_blobs=2, busy=1, too_many=1)) as proxy:
        ig("image", "pull", f"{proxy.host}/test/busybox:1")
        ranges = [s["range"] for s in proxy.faults.seen if s["range"]]
    assert ranges and all(r.startswith("bytes=") for r in ranges)


def test_truncated_blob(ig: Ignite, plain_registry: Registry) -> None:
    """A registry that always cuts a blob short: the pull fails; the next one resumes."""
    with FaultProxy(plain_registry.host, Faults(cut_always=True)) as proxy:
        err = fails(ig, "image", "pull", f"{proxy.host}/test/busybox:1")
    assert "truncated" in err and "the download resumes" in err
    assert not list((ig.root / "content" / "blobs" / "sha256").glob("*"))[1:]  # manifest only
    # (parts are kept by digest: any registry that serves the blob can finish it)
    with FaultProxy(plain_registry.host) as proxy:
        ig("image", "pull", f"{proxy.host}/test/busybox:1")
        assert any(s["range"] for s in proxy.faults.seen)


def test_busy_registry(ig: Ignite, plain_registry: Registry) -> None:
    with FaultProxy(plain_registry.host, Faults(busy=10)) as proxy:
        err = fails(ig, "image", "pull", f"{proxy.host}/test/busybox:1")
    assert "503" in err


def test_redirect_drops_authorization(ig: Ignite,
                                      token_registry: tuple[Registry, TokenServer]) -> None:
    reg, _ = token_registry
    with FaultProxy(reg.host, Faults(redirect_blobs=True)) as proxy:
        ig("image", "pull", f"{proxy.host}/public/busybox:1")
        seen = proxy.faults.seen
    redirected = [s for s in seen if s["host"].startswith("localhost")]
    assert redirected and not any(s["auth"] for s in redirected)
    assert any(s["auth"].startswith("Bearer ") for s in seen if s["host"].startswith("127."))


def test_schema1_refused(ig: Ignite, plain_registry: Registry) -> None:
    body = json.dumps({"schemaVersion": 1, "name": "test/busybox", "tag": "1",
                       "fsLayers": [], "history": []}).encode()
    with FaultProxy(plain_registry.host, Faults(manifest_body=body)) as proxy:
        err = fails(ig, "image", "pull", f"{proxy.host}/test/busybox:1")
    assert "schema 1" in err


def test_secrets_not_logged(ig: Ignite, auth_registry: Registry, tmp_path: Path) -> None:
    good = creds_dir(tmp_path / "good", auth_registry.host, USER, PASSWORD)
    res = ig("--log-level", "debug", "image", "pull", "--registry-config-dir", good,
             f"{auth_registry.host}/test/busybox:1")
    assert PASSWORD not in res.stderr + res.stdout
    assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in res.stderr
    assert os.environ.get("NOT_SET") is None


def test_kernel_import_from_registry(ig: Ignite, plain_registry: Registry) -> None:
    ref = f"{plain_registry.host}/test/kernel:1"
    ig("kernel", "import", ref)
    listing = ig("kernel", "ls").stdout
    assert ref in listing and "5.10.51" in listing
    inspect = json.loads(ig("inspect", "kernel", ref).stdout)
    assert inspect["status"]["ociSource"]["id"].startswith(f"oci://{plain_registry.host}/")
    err = fails(ig, "kernel", "import", f"{plain_registry.host}/test/busybox:1")
    assert "kernel" in err


def test_kernel_registry_auth_matrix(ig: Ignite, auth_registry: Registry, tmp_path: Path,
                                     home: Path) -> None:
    """Ignite's registry e2e matrix for kernels: no auth, the flag, the config, an empty dir."""
    ref = f"{auth_registry.host}/test/kernel:1"
    assert "wants credentials" in fails(ig, "kernel", "import", ref)
    good = creds_dir(tmp_path / "good", auth_registry.host, USER, PASSWORD)
    ig("kernel", "import", "--registry-config-dir", good, ref)
    ig("kernel", "rm", ref)
    creds_dir(home / ".docker", auth_registry.host, USER, PASSWORD)
    ig("kernel", "import", ref)
    ig("kernel", "rm", ref)
    (tmp_path / "empty").mkdir()
    assert "wants credentials" in fails(ig, "kernel", "import", "--registry-config-dir",
                                        str(tmp_path / "empty"), ref)


def test_create_pulls_missing(ig: Ignite, plain_registry: Registry) -> None:
    """`create` pulls the image and the kernel it names; --pull never refuses to."""
    image, kernel = (f"{plain_registry.host}/test/busybox:1",
                     f"{plain_registry.host}/test/kernel:1")
    res = ig("create", image, "--kernel-image", kernel, "--pull", "never", "--name", "a",
             check=False)
    assert res.returncode == 1 and "can't find image" in res.stderr
    ig("create", image, "--kernel-image", kernel, "--name", "vm1")
    assert ig("image", "ls", "-q").stdout.count("\n") == 1
    ig("create", image, "--kernel-image", kernel, "--name", "vm2", "--pull", "always")
    assert ig("image", "ls", "-q").stdout.count("\n") == 1  # same digest: nothing new


def test_mirrors_first_then_upstream(ig: Ignite, plain_registry: Registry, tmp_path: Path) -> None:
    """registries.conf v2: a dead mirror is skipped, a live one serves; blocked refuses."""
    from tests.helpers.registry import free_port

    conf = tmp_path / "registries.conf"
    conf.write_text(f"""
[[registry]]
prefix = "upstream.invalid/test"
location = "upstream.invalid/test"
[[registry.mirror]]
location = "127.0.0.1:{free_port()}/test"
[[registry.mirror]]
location = "{plain_registry.host}/test"

[[registry]]
location = "blocked.invalid"
blocked = true
""")
    mig = Ignite(ig.root, env=dict(ig.env, CONTAINERS_REGISTRIES_CONF=str(conf)))
    res = mig("image", "pull", "upstream.invalid/test/busybox:1")
    assert "trying the next place" in res.stderr
    inspect = json.loads(mig("inspect", "image", "upstream.invalid/test/busybox:1").stdout)
    assert inspect["status"]["ociSource"]["id"].startswith("oci://upstream.invalid/test/busybox@")
    assert "blocked" in fails(mig, "image", "pull", "blocked.invalid/x:1")
    # the mirrors are all tried, then upstream, whose error is the one shown
    assert "unknown registry host upstream.invalid" in fails(
        mig, "image", "pull", "upstream.invalid/test/nothing:1")


def test_disk_full_mid_pull(ig: Ignite, plain_registry: Registry) -> None:
    """Files may not grow past 300 kB (prlimit; Python gets EFBIG as on a full disk):
    one error line, no image, no blob under its final name; the next pull completes."""
    import shutil
    import subprocess
    import sys

    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    ref = f"{plain_registry.host}/test/busybox:1"
    env = {**os.environ, **ig.env, "IGNITE_ROOT": str(ig.root)}
    res = subprocess.run(["prlimit", "--fsize=300000", sys.executable, "-m", "ignitevm", "image",
                          "pull", ref], env=env, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "error: cannot write blob" in res.stderr and "free some space" in res.stderr
    assert ig("image", "ls", "-q").stdout == ""
    blobs = ig.root / "content" / "blobs" / "sha256"
    assert all(p.stat().st_size < 300000 for p in blobs.iterdir())
    ig("image", "pull", ref)


def test_image_that_cannot_run(ig: Ignite, plain_registry: Registry) -> None:
    err = fails(ig, "image", "pull", f"{plain_registry.host}/test/noinit:1")
    assert "no /sbin/init and no Entrypoint or Cmd" in err


def test_progress_on_a_terminal(ig: Ignite, plain_registry: Registry) -> None:
    """On a terminal: bars (per layer and a total) that vanish, then docker pull's lines;
    stdout keeps only the reference."""
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    env = {**os.environ, **ig.env, "IGNITE_ROOT": str(ig.root), "COLUMNS": "100"}
    ref = f"{plain_registry.host}/test/busybox:1"
    proc = subprocess.Popen([sys.executable, "-m", "ignitevm", "image", "pull", ref],
                            stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL,
                            env=env)
    os.close(follower)
    shown = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal's other end closed
            break
        if not data:
            break
        shown += data
    os.close(leader)
    assert proc.wait() == 0
    assert proc.stdout is not None and proc.stdout.read().decode().strip() == ref
    text = shown.decode(errors="replace")
    assert "total" in text and "Download complete" in text and "Status: Downloaded" in text


def test_token_refetched_on_401(ig: Ignite, token_registry: tuple[Registry, TokenServer]) -> None:
    """A registry answering 401 to a cached token (expired) gets a fresh one, once."""
    reg, tokens = token_registry
    with FaultProxy(reg.host, Faults(expire=1)) as proxy:
        before = len(tokens.requests)
        ig("image", "pull", f"{proxy.host}/public/busybox:1")
    assert len(tokens.requests) - before == 2


def test_shared_layers_fetched_once(ig: Ignite, plain_registry: Registry) -> None:
    """Two images with the same layers, pulled at the same time and then again by another
    name: every layer crosses the wire once."""
    import subprocess
    import sys

    with FaultProxy(plain_registry.host) as proxy:
        env = {**os.environ, **ig.env, "IGNITE_ROOT": str(ig.root)}
        procs = [subprocess.Popen([sys.executable, "-m", "ignitevm", "image", "pull", "-q",
                                   f"{proxy.host}/test/{name}:1"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL)
                 for name in ("busybox", "multi")]
        for p in procs:
            assert p.wait() == 0, p.stderr.read() if p.stderr else ""
        ig("image", "pull", "--name", "again", f"{proxy.host}/test/busybox:1")
        blobs = [s["path"] for s in proxy.faults.seen if "/blobs/" in s["path"]]
    digests = [b.rsplit("/", 1)[1] for b in blobs]
    layers = {d for d in digests if digests.count(d) > 1}
    assert not layers, f"fetched more than once: {layers}"
    assert len(ig("image", "ls", "-q").stdout.split()) == 3


def test_missing_image_or_kernel_says_both(ig: Ignite, plain_registry: Registry) -> None:
    """Not here and not pullable: the error names both (as `ignite run no-such-image` did)."""
    err = fails(ig, "create", "no-such-image")
    assert "can't find image 'no-such-image:latest' here, and pulling " \
           "docker.io/library/no-such-image:latest failed" in err
    ig("image", "pull", f"{plain_registry.host}/test/busybox:1")
    err = fails(ig, "create", f"{plain_registry.host}/test/busybox:1", "--kernel-image",
                f"{plain_registry.host}/test/nokernel:1")
    assert "can't find kernel" in err and "has no repository test/nokernel" in err
