"""Credentials, tokens and TLS against real docker-registry processes on loopback."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tests.conftest import Ignite
from tests.helpers.faultproxy import FaultProxy, Faults
from tests.helpers.registry import (
    BARRED,
    BARRED_PASSWORD,
    IDENTITY_TOKEN,
    LIMITED,
    LIMITED_PASSWORD,
    PASSWORD,
    USER,
    Registry,
    TestCA,
    TokenServer,
    running_registry,
)
from tests.registry.conftest import creds_dir, fails

pytestmark = pytest.mark.registry


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
    assert "credentials may be needed" in fails(ig, "image", "pull",
                                                f"{reg.host}/private/busybox:1")
    wrong = creds_dir(tmp_path / "wrong", reg.host, USER, "nope")
    assert "refused the credentials" in fails(ig, "image", "pull", "--registry-config-dir",
                                              wrong, f"{reg.host}/private/busybox:1")
    good = creds_dir(tmp_path / "good", reg.host, USER, PASSWORD)
    before = len(tokens.requests)
    ig("image", "pull", "--registry-config-dir", good, f"{reg.host}/private/busybox:1")
    # One token for the scope, reused for the manifest, the config and every layer.
    assert len(tokens.requests) - before == 1


def test_denied_scope(ig: Ignite, token_registry: tuple[Registry, TokenServer],
                      tmp_path: Path) -> None:
    """Good credentials without access to the repository (the registry's second 401 says
    error="insufficient_scope"): not a wrong password."""
    reg, _ = token_registry
    limited = creds_dir(tmp_path / "limited", reg.host, LIMITED, LIMITED_PASSWORD)
    ig("image", "pull", "--registry-config-dir", limited, f"{reg.host}/public/busybox:1")
    for repo in ("private/busybox", "private/nothing"):
        err = fails(ig, "image", "pull", "--registry-config-dir", limited, f"{reg.host}/{repo}:1")
        assert f"registry {reg.host}: {LIMITED} may not pull {repo} (or it does not exist)" \
            in err
        assert "refused the credentials" not in err and LIMITED_PASSWORD not in err
    err = fails(ig, "kernel", "import", "--registry-config-dir", limited,
                f"{reg.host}/private/busybox:1")
    assert f"{LIMITED} may not pull private/busybox" in err
    err = fails(ig, "image", "pull", f"{reg.host}/private/busybox:1")
    assert (f"registry {reg.host} does not let anonymous users pull private/busybox (or it "
            "does not exist): credentials may be needed") in err and "docker login" in err


def test_forbidden(ig: Ignite, token_registry: tuple[Registry, TokenServer],
                   plain_registry: Registry, tmp_path: Path) -> None:
    """403 Forbidden, from the token server or the registry: access denied, said as such."""
    reg, _ = token_registry
    barred = creds_dir(tmp_path / "barred", reg.host, BARRED, BARRED_PASSWORD)
    err = fails(ig, "image", "pull", "--registry-config-dir", barred,
                f"{reg.host}/public/busybox:1")
    assert (f"the token server of registry {reg.host} denies access to public/busybox for "
            f"{BARRED} (403 Forbidden)") in err and BARRED_PASSWORD not in err
    with FaultProxy(plain_registry.host, Faults(forbidden=True)) as proxy:
        err = fails(ig, "image", "pull", f"{proxy.host}/test/busybox:1")
        assert f"registry {proxy.host} denies access to test/busybox (403 Forbidden)" in err
        assert "credentials may be needed" in err
        good = creds_dir(tmp_path / "good", proxy.host, USER, PASSWORD)
        err = fails(ig, "image", "pull", "--registry-config-dir", good,
                    f"{proxy.host}/test/busybox:1")
        assert f"denies access to test/busybox for {USER} (403 Forbidden)" in err


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


def test_secrets_not_logged(ig: Ignite, auth_registry: Registry, tmp_path: Path) -> None:
    good = creds_dir(tmp_path / "good", auth_registry.host, USER, PASSWORD)
    res = ig("--log-level", "debug", "image", "pull", "--registry-config-dir", good,
             f"{auth_registry.host}/test/busybox:1")
    assert PASSWORD not in res.stderr + res.stdout
    assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in res.stderr
    assert os.environ.get("NOT_SET") is None


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


def test_token_refetched_on_401(ig: Ignite, token_registry: tuple[Registry, TokenServer]) -> None:
    """A registry answering 401 to a cached token (expired) gets a fresh one, once."""
    reg, tokens = token_registry
    with FaultProxy(reg.host, Faults(expire=1)) as proxy:
        before = len(tokens.requests)
        ig("image", "pull", f"{proxy.host}/public/busybox:1")
    assert len(tokens.requests) - before == 2


def test_client_certificate(ig: Ignite, home: Path, tmp_path: Path, test_ca: TestCA,
                            test_layout: dict[str, str]) -> None:
    """A registry that wants a client certificate: certs.d's client.cert + client.key."""
    import shutil

    pair = test_ca.issue("mtls", ["IP:127.0.0.1"])
    cert, key = test_ca.issue("client", [], client=True)
    with running_registry(tmp_path / "reg", tls=pair, ca=test_ca.cert,
                          client_ca=test_ca.cert) as reg:
        certs = home / "certs.d" / reg.host
        certs.mkdir()
        shutil.copyfile(test_ca.cert, certs / "ca.crt")
        ref = f"{reg.host}/test/busybox:1"
        err = fails(ig, "image", "pull", ref)
        assert "TLS with registry" in err and "client.cert" in err
        shutil.copyfile(cert, certs / "client.cert")
        shutil.copyfile(key, certs / "client.key")
        reg.cert_dir = certs
        reg.push(test_layout["busybox"], "test/busybox:1")
        ig("image", "pull", ref)


def _command_lines() -> str:
    """Every process's command line on this host, as ``ps`` would show them."""
    lines = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    lines.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return "\n".join(lines)


def test_identity_token(ig: Ignite, token_registry: tuple[Registry, TokenServer],
                        tmp_path: Path) -> None:
    """A config.json ``identitytoken`` is a refresh token: POSTed (OAuth2 form) to the
    token server for an access token. It appears in no log line, error or command line."""
    import json
    import subprocess
    import sys

    from tests.conftest import cli_env

    reg, tokens = token_registry
    ref = f"{reg.host}/private/busybox:1"
    cfg = tmp_path / "idt"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps(
        {"auths": {reg.host: {"identitytoken": IDENTITY_TOKEN}}}))
    before = len(tokens.requests)
    env = {**cli_env(ig.root), **ig.env}
    proc = subprocess.Popen([sys.executable, "-m", "ignitevm", "image", "pull", "--log-level",
                             "debug", "--registry-config-dir", str(cfg), ref], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen_in_ps = False
    while proc.poll() is None:  # (the whole pull long: no process shows the secret)
        seen_in_ps = seen_in_ps or IDENTITY_TOKEN in _command_lines()
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert not seen_in_ps and IDENTITY_TOKEN not in out + err
    asked = tokens.requests[before:]
    assert [r["method"] for r in asked] == ["POST"]  # one token for the whole pull
    post = asked[0]
    assert post["path"] == "/token" and post["auth"] == ""
    assert post["type"].startswith("application/x-www-form-urlencoded")
    assert post["fields"] == "client_id,grant_type,refresh_token,scope,service"
    assert (post["grant_type"], post["service"], post["scope"]) == (
        "refresh_token", tokens.service, "repository:private/busybox:pull")
    assert post["client_id"]
    # A refresh token the server does not know (400 invalid_grant): refused, not shown.
    wrong = "idt-wrong-" + IDENTITY_TOKEN[4:]
    (cfg / "config.json").write_text(json.dumps(
        {"auths": {reg.host: {"identitytoken": wrong}}}))
    ig("image", "rm", ref)
    err = fails(ig, "image", "pull", "--log-level", "debug", "--registry-config-dir",
                str(cfg), ref)
    assert "refused the credentials for the identity token" in err
    assert wrong not in err and IDENTITY_TOKEN not in err
