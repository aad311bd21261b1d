"""Registry credentials from where users keep them.

With ``--registry-config-dir DIR`` only ``DIR/config.json`` is read (an empty
folder means no credentials, as Ignite did). Otherwise the first file that
names the registry wins: ``$DOCKER_CONFIG/config.json``,
``~/.docker/config.json``, ``$REGISTRY_AUTH_FILE`` and containers'
``${XDG_RUNTIME_DIR}/containers/auth.json``.

Keys may carry a scheme and a path (``https://index.docker.io/v1/``) or a
repository (``registry.example/team``: the longest match wins). ``credHelpers``
and ``credsStore`` run ``docker-credential-NAME get``. Secrets are kept out of
``repr``, logs and error messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ignitevm.errors import CommandError, InvalidInput, MissingTool
from ignitevm.log import log

HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    origin: str = ""  # where they came from, for messages

    def __bool__(self) -> bool:
        return bool(self.username or self.identity_token)


def config_files(config_dir: str | None) -> list[Path]:
    if config_dir is not None:
        return [Path(config_dir).expanduser() / "config.json"]
    files = []
    if os.environ.get("DOCKER_CONFIG"):
        files.append(Path(os.environ["DOCKER_CONFIG"]) / "config.json")
    files.append(Path.home() / ".docker" / "config.json")
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    files.append(Path(runtime) / "containers" / "auth.json")
    return files


def _key(text: str) -> str:
    """A config key reduced to ``host[/path]``: no scheme, no trailing ``/v1/`` or ``/v2/``."""
    key = text.split("://", 1)[-1].rstrip("/")
    for suffix in ("/v1", "/v2"):
        key = key.removesuffix(suffix)
    host, sep, path = key.partition("/")
    if host in HUB_KEYS:
        host = "docker.io"
    return host + sep + path


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read registry credentials from {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} is not a registry credentials file (not a JSON object)")
    return data


def lookup(domain: str, repository: str, config_dir: str | None = None) -> Credentials:
    """Credentials for ``repository`` (``host/path``) on the registry ``domain``."""
    domain_key = "docker.io" if domain in HUB_KEYS else domain
    wanted = domain_key + "/" + repository.split("/", 1)[1] if "/" in repository else domain_key
    for path in config_files(config_dir):
        data = _read(path)
        if data is None:
            continue
        helpers = data.get("credHelpers") or {}
        if isinstance(helpers, dict):
            for key, helper in helpers.items():
                if _key(key) == domain_key and isinstance(helper, str):
                    return _helper(helper, domain, path)
        auths = data.get("auths") or {}
        best: tuple[int, Any] | None = None
        if isinstance(auths, dict):
            for key, entry in auths.items():
                k = _key(key)
                matches = k == wanted or wanted.startswith(k + "/")
                if matches and (best is None or len(k) > best[0]):
                    best = (len(k), entry)
        if best is not None:
            creds = _entry(best[1], path)
            if creds:
                return creds
        store = data.get("credsStore")
        if isinstance(store, str) and store:
            creds = _helper(store, domain, path, missing_ok=True)
            if creds:
                return creds
    return Credentials()


def _entry(entry: Any, path: Path) -> Credentials:
    if not isinstance(entry, dict):
        raise InvalidInput(f"{path}: a registry entry under 'auths' is not an object")
    token = entry.get("identitytoken") or ""
    user, password = entry.get("username") or "", entry.get("password") or ""
    if entry.get("auth"):
        try:
            user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, TypeError):
            sep = ""
        if not sep:
            raise InvalidInput(f"{path}: an 'auth' entry is not base64 of user:password")
    return Credentials(str(user), str(password), str(token), str(path))


def _helper(name: str, domain: str, path: Path, *, missing_ok: bool = False) -> Credentials:
    from ignitevm.util import proc

    prog = f"docker-credential-{name}"
    server = "https://index.docker.io/v1/" if domain == "docker.io" else domain
    try:
        result = proc.run([prog, "get"], input=server, timeout=60)
    except MissingTool:
        if missing_ok:
            log.debug("%s names the credential store %s, which is not installed", path, prog)
            return Credentials()
        raise MissingTool(f"{path} names the credential helper {prog}, which is not installed",
                          hint=f"install {prog}, or remove it from {path}") from None
    except CommandError as exc:
        if "not found" in (exc.stderr or "").lower():
            return Credentials()
        raise CommandError(exc.argv, exc.returncode, "", hint=f"check {prog}") from None
    try:
        data = json.loads(result.stdout)
        user, secret = str(data.get("Username") or ""), str(data.get("Secret") or "")
    except (ValueError, AttributeError):
        raise InvalidInput(f"{prog} get answered something that is not credentials") from None
    if user == "<token>":
        return Credentials(identity_token=secret, origin=prog)
    return Credentials(user, secret, origin=prog)
