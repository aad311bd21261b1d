"""A Git repository as the source of VM manifests: cloned once, then fetched
and reset to the branch's head every interval (the repository is the truth;
nothing is written back to it)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.log import log
from ignitevm.util.proc import run


def check_url(url: str) -> str:
    """The URL's scheme (ssh, https, http, file); refuse others."""
    if "://" not in url and ":" in url and "@" in url.split(":", 1)[0]:
        return "ssh"  # git@host:owner/repo.git
    scheme = urlparse(url).scheme
    if scheme not in ("ssh", "https", "http", "file"):
        raise InvalidInput(f"unsupported endpoint scheme {scheme or '(none)'!r} in {url!r}",
                           hint="use an ssh://, git@host:path, https:// or file:// URL")
    return scheme


class GitSource:
    def __init__(self, url: str, branch: str, cache: Path, timeout: float,
                 identity_file: str = "", hosts_file: str = "",
                 username: str = "", password: str = ""):
        self.url, self.branch, self.timeout = url, branch, timeout
        self.scheme = check_url(url)
        key = hashlib.sha256(f"{url}#{branch}".encode()).hexdigest()[:16]
        self.checkout = cache / "gitops" / key
        self.head = ""
        self.env = {"GIT_TERMINAL_PROMPT": "0"}
        if self.scheme == "ssh":
            ssh = ["ssh", "-o", "BatchMode=yes"]
            if identity_file:
                ssh += ["-i", str(Path(identity_file).expanduser())]
            if hosts_file:
                hosts = Path(hosts_file).expanduser()
                if not hosts.is_file():
                    raise InvalidInput(f"known hosts file {hosts} does not exist",
                                       hint="give one with --hosts-file")
                ssh += ["-o", f"UserKnownHostsFile={hosts}", "-o", "StrictHostKeyChecking=yes"]
            self.env["GIT_SSH_COMMAND"] = " ".join(ssh)
        if username or password:
            self.env.update(IGNITED_GIT_USERNAME=username, IGNITED_GIT_PASSWORD=password,
                            GIT_ASKPASS=str(self._askpass(cache)))

    def _askpass(self, cache: Path) -> Path:
        # git asks "Username for ...:" then "Password for ...:"; the answers
        # come from the environment, never from the command line.
        script = cache / "gitops" / "askpass.sh"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text('#!/bin/sh\ncase "$1" in\n  Username*) echo "$IGNITED_GIT_USERNAME";;\n'
                          '  *) echo "$IGNITED_GIT_PASSWORD";;\nesac\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        return script

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        return run(["git", *args], cwd=cwd, env=self.env, timeout=self.timeout,
                   hint=f"check that `git clone {self.url}` works from this host"
                   ).stdout.strip()

    def update(self) -> Path:
        """Bring the checkout to the branch's head; return its folder."""
        if not (self.checkout / ".git").is_dir():
            self._clone()
        else:
            self._git("fetch", "--quiet", "--depth", "1", "origin", self.branch,
                      cwd=self.checkout)
            self._git("reset", "--quiet", "--hard", "FETCH_HEAD", cwd=self.checkout)
        head = self._git("rev-parse", "HEAD", cwd=self.checkout)
        if head != self.head:
            log.info("New commit observed on branch %r: %s", self.branch, head)
            self.head = head
        return self.checkout

    def _clone(self) -> None:
        self.checkout.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="clone-", dir=self.checkout.parent))
        try:
            try:
                self._git("clone", "--quiet", "--depth", "1", "--branch", self.branch,
                          "--single-branch", self.url, str(tmp))
            except IgniteError as exc:
                text = f"{exc.brief} {getattr(exc, 'details', '')}"
                if "not found in upstream" in text or "empty repository" in text:
                    raise InvalidInput(f"{self.url} has no branch {self.branch!r} "
                                       "(is the repository empty?)",
                                       hint="push a commit, or pick a branch with --branch"
                                       ) from None
                raise
            shutil.rmtree(self.checkout, ignore_errors=True)
            os.replace(tmp, self.checkout)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
