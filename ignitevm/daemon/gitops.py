"""A Git repository as the source of VM manifests: cloned once, then fetched
and reset to the branch's head every interval (the repository is the truth;
nothing is written back to it)."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.log import log
from ignitevm.util.proc import run


def ssh_command(identity_file: str, hosts_file: str) -> list[str]:
    """ssh's argv for GIT_SSH_COMMAND (which git runs through a shell: quote it)."""
    ssh = ["ssh", "-o", "BatchMode=yes"]
    if identity_file:
        ssh += ["-i", str(Path(identity_file).expanduser().absolute())]
    if hosts_file:
        hosts = Path(hosts_file).expanduser().absolute()
        if not hosts.is_file():
            raise InvalidInput(f"known hosts file {hosts} does not exist",
                               hint="give one with --hosts-file")
        ssh += ["-o", f"UserKnownHostsFile={hosts}", "-o", "StrictHostKeyChecking=yes"]
    return ssh


def check_url(url: str) -> str:
    """The URL's scheme (ssh, https, http, file); refuse others."""
    if "://" not in url and ":" in url and "@" in url.split(":", 1)[0]:
        return "ssh"  # git@host:owner/repo.git
    scheme = urlparse(url).scheme
    if scheme not in ("ssh", "https", "http", "file"):
        raise InvalidInput(f"unsupported endpoint scheme {scheme or '(none)'!r} in {url!r}",
                           hint="use an ssh://, git@host:path, https:// or file:// URL")
    return scheme


def split_credentials(url: str) -> tuple[str, str, str]:
    """``https://user:secret@host/x`` -> (``https://host/x``, user, secret): what
    sits in a URL is seen by ``ps`` in every git command, so it goes to the
    askpass helper instead."""
    parts = urlparse(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url, "", ""
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return parts._replace(netloc=host).geturl(), unquote(user), unquote(password)


PASSWORD_ENV = "IGNITED_HTTPS_PASSWORD"


def rerun_without_password(secret: str) -> None:
    """A password on the command line (``--https-password``) is readable by every
    user through ``ps``: run this program again without it, the password moved
    into the environment. Nothing happens when it is not on this process's
    command line (e.g. when called from Python)."""
    import sys

    if not secret:
        return
    argv, out, skip = list(getattr(sys, "orig_argv", [])), [], False
    for tok in argv:
        if skip:
            skip = False
            continue
        flag, eq, _ = tok.partition("=")
        if flag == "--https-password":  # (no abbreviation: --https-password-file exists)
            skip = not eq
            continue
        out.append(tok)
    if secret not in argv and not any(t.endswith("=" + secret) for t in argv):
        return
    log.warning("--https-password is visible to every user of this host in `ps`; give it "
                "with $%s or --https-password-file instead", PASSWORD_ENV)
    sys.stderr.flush()
    os.execve(sys.executable, out, {**os.environ, PASSWORD_ENV: secret})


def https_password(flag: str, path: str) -> str:
    """The https password: from the file, the flag or the environment (which is
    cleared, so that no child of ignited, QEMU included, inherits it)."""
    from_env = os.environ.pop(PASSWORD_ENV, "")
    if path:
        try:
            with open(path) as f:
                return f.readline().rstrip("\r\n")
        except OSError as exc:
            raise InvalidInput(f"cannot read --https-password-file {path}: {exc.strerror}"
                               ) from None
    return flag or from_env


class GitSource:
    def __init__(self, url: str, branch: str, cache: Path, timeout: float,
                 identity_file: str = "", hosts_file: str = "",
                 username: str = "", password: str = ""):
        self.scheme = check_url(url)
        if url.startswith("-") or any(ord(c) < 0x20 for c in url):
            raise InvalidInput(f"invalid repository URL {url!r}")
        if not branch or branch.startswith("-") or any(ord(c) <= 0x20 for c in branch):
            raise InvalidInput(f"invalid branch name {branch!r}")
        url, url_user, url_password = split_credentials(url)
        username, password = username or url_user, password or url_password
        self.url, self.branch, self.timeout = url, branch, timeout
        self.display_url = url
        key = hashlib.sha256(f"{url}#{branch}".encode()).hexdigest()[:16]
        self.checkout = cache / "gitops" / key
        self.head = ""
        # Only the transports check_url allows, also for submodules and redirects.
        self.env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": "file:http:https:ssh"}
        if self.scheme == "ssh":
            self.env["GIT_SSH_COMMAND"] = shlex.join(ssh_command(identity_file, hosts_file))
        if username or password:
            # git asks the helper for the user name and the password; the answers
            # travel in its environment, never on a command line.
            self.env.update(IGNITED_GIT_USERNAME=username, IGNITED_GIT_PASSWORD=password,
                            GIT_ASKPASS=str(self._askpass(cache)))

    def _askpass(self, cache: Path) -> Path:
        folder = cache / "gitops"
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / "askpass.sh"
        text = ('#!/bin/sh\ncase "$1" in\n  Username*) printf \'%s\\n\' "$IGNITED_GIT_USERNAME";;\n'
                '  *) printf \'%s\\n\' "$IGNITED_GIT_PASSWORD";;\nesac\n')
        tmp = folder / f".askpass.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, script)
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
            self._git("fetch", "--quiet", "--depth", "1", "origin", "--", self.branch,
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
                          "--single-branch", "--", self.url, str(tmp))
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
