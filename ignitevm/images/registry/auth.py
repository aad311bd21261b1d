"""Registry authentication: Basic, and Bearer tokens (anonymous or with credentials).

The registry says what it wants in its ``WWW-Authenticate`` challenge. Bearer
tokens are fetched from the challenge's realm for one scope
(``repository:NAME:pull``), cached per scope until they expire, and fetched
again when the registry answers 401 to a cached one.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from ignitevm.errors import IgniteError
from ignitevm.images.registry.credentials import Credentials
from ignitevm.log import log

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
EARLY = 10  # seconds: a token this close to expiry is fetched again


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` -> ("bearer", {"realm": …, "service": …})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _PARAM.finditer(rest)}
    return scheme.lower(), params


class Unauthorized(IgniteError):
    """The registry wants (other) credentials."""


class Auth:
    """The Authorization header for each request to one registry."""

    def __init__(self, host: str, creds: Credentials, fetch: Callable[..., Any],
                 login_hint: str):
        self.host = host
        self.creds = creds
        self._fetch = fetch  # the client's send, for token requests
        self.login_hint = login_hint
        self.scheme: str | None = None
        self.params: dict[str, str] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def challenge(self, header: str | None) -> None:
        if not header:
            return
        self.scheme, self.params = parse_challenge(header)

    def header(self, scope: str) -> str | None:
        if self.scheme == "basic":
            if not self.creds.username:
                return None
            raw = f"{self.creds.username}:{self.creds.password}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        if self.scheme == "bearer":
            with self._lock:
                cached = self._tokens.get(scope)
                if cached is None or cached[1] < time.monotonic():
                    cached = self._token(scope)
                    self._tokens[scope] = cached
            return "Bearer " + cached[0]
        return None

    def forget(self, scope: str) -> None:
        with self._lock:
            self._tokens.pop(scope, None)

    def _token(self, scope: str) -> tuple[str, float]:
        realm = self.params.get("realm")
        if not realm or not realm.startswith(("https://", "http://")):
            raise IgniteError(f"registry {self.host} asks for a token from an invalid realm "
                              f"{realm!r}")
        query = {"scope": scope}
        if self.params.get("service"):
            query["service"] = self.params["service"]
        headers = {}
        log.debug("fetching a token for %s from %s", scope, realm)
        if self.creds.identity_token:
            form = dict(query, grant_type="refresh_token", client_id="ignitevm",
                        refresh_token=self.creds.identity_token)
            resp = self._fetch("POST", realm, data=form)
        else:
            if self.creds.username:
                raw = f"{self.creds.username}:{self.creds.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
            query["client_id"] = "ignitevm"
            resp = self._fetch("GET", realm, params=query, headers=headers)
        if resp.status_code == 403:
            raise self.denied(_repository(scope), by="the token server of ")
        if resp.status_code == 401 or (resp.status_code == 400 and self.creds.identity_token
                                       and _oauth_error(resp.content) == "invalid_grant"):
            raise self.refused()  # (400 invalid_grant: OAuth2's word for a bad refresh token)
        if resp.status_code != 200:
            raise IgniteError(f"the token server of {self.host} answered {resp.status_code} "
                              f"{resp.reason_phrase}")
        try:
            body: Any = json.loads(resp.content)
            token = body.get("token") or body.get("access_token")
            lifetime = int(body.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError, OverflowError):  # (1e999: inf)
            token = None
        if not isinstance(token, str) or not token:
            raise IgniteError(f"the token server of {self.host} sent no token")
        return token, time.monotonic() + max(lifetime - EARLY, 1)

    def refused(self, challenge: str | None = None, scope: str | None = None) -> Unauthorized:
        """The error for a request the registry still answers 401 to. ``challenge`` is that
        answer's ``WWW-Authenticate``: ``error="insufficient_scope"`` means the credentials
        (or anonymous access) are good, but not for this repository."""
        error = parse_challenge(challenge)[1].get("error") if challenge else None
        if error == "insufficient_scope" and scope:
            repo = _repository(scope)
            if self.creds:
                who = self.creds.username or "the identity token's user"
                return Unauthorized(
                    f"registry {self.host}: {who} may not pull {repo} (or it does not exist)",
                    hint=f"check the name, and that {who} (credentials from "
                         f"{self.creds.origin}) has pull access to {repo}")
            return Unauthorized(
                f"registry {self.host} does not let anonymous users pull {repo} (or it "
                "does not exist): credentials may be needed",
                hint=f"check the name; {self.login_hint}, or give --registry-config-dir DIR "
                     "holding a config.json with its auths")
        if self.creds:
            return Unauthorized(
                f"registry {self.host} refused the credentials for "
                f"{self.creds.username or 'the identity token'} (from {self.creds.origin})",
                hint=f"check the password stored there, or log in again: {self.login_hint}")
        return Unauthorized(
            f"registry {self.host} wants credentials (401 Unauthorized) and none were found",
            hint=f"{self.login_hint}, or give --registry-config-dir DIR holding a config.json "
                 "with its auths")

    def denied(self, repository: str, by: str = "") -> Unauthorized:
        """The error for a 403 Forbidden (from the registry, or ``by`` its token server)."""
        if self.creds:
            who = self.creds.username or "the identity token's user"
            return Unauthorized(
                f"{by}registry {self.host} denies access to {repository} for {who} "
                "(403 Forbidden)",
                hint=f"check that {who} (credentials from {self.creds.origin}) may pull it")
        return Unauthorized(
            f"{by}registry {self.host} denies access to {repository} (403 Forbidden)",
            hint=f"credentials may be needed: {self.login_hint}, or give "
                 "--registry-config-dir DIR holding a config.json with its auths")


def _oauth_error(body: bytes) -> str | None:
    """The ``error`` of an OAuth2 error answer (RFC 6749 5.2), or None."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return error if isinstance(error, str) else None


def _repository(scope: str) -> str:
    """``repository:team/app:pull`` -> ``team/app``."""
    return scope.partition(":")[2].rpartition(":")[0] or scope
