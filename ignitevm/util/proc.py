"""The one door for running host programs.

Every child process goes through :func:`run` or :func:`spawn`: argv lists
only (never a shell), the command line logged at debug level, stdin closed by
default, and a failure raised as one :class:`CommandError` that carries the
command, its exit code and the end of its stderr.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, Any, NamedTuple

from ignitevm.errors import CommandError, MissingTool
from ignitevm.log import log

# Which Debian package installs a host program, for error hints.
PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mkfs.ext4": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "resize2fs": "e2fsprogs",
    "depmod": "kmod",
    "busybox": "busybox-static",
    "mmdebstrap": "mmdebstrap",
    "apt-get": "apt",
    "dpkg-deb": "dpkg",
    "gcc": "gcc",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
    "skopeo": "skopeo",
    "umoci": "umoci",
    "ip": "iproute2",
    "passt": "passt",
    "tc": "iproute2",
    "iptables": "iptables",
    "iptables-save": "iptables",
}


def which(prog: str) -> str:
    """Return the path of ``prog`` or raise an error that names its package."""
    path = shutil.which(prog, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        pkg = PACKAGES.get(prog)
        hint = f"install it with: apt-get install {pkg}" if pkg else None
        raise MissingTool(f"{prog} is not installed on this host", hint=hint)
    return path


class Result(NamedTuple):
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def _text(data: str | bytes | None) -> str:
    if isinstance(data, str):
        return data
    return (data or b"").decode(errors="replace")


def _argv(argv: Sequence[str | os.PathLike[str]]) -> list[str]:
    out = [os.fspath(a) for a in argv]
    if out and "/" not in out[0]:
        out[0] = which(out[0])
    return out


def _full_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    """The environment a program gets: ours with ``env`` over it (None: ours as is)."""
    return None if env is None else {**os.environ, **env}


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    input: str | bytes | None = None,
    stdout: int | IO[Any] | None = subprocess.PIPE,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    hint: str | None = None,
    text: bool = True,
    pass_fds: Sequence[int] = (),
) -> Result:
    """Run a program to completion; raise CommandError if it fails and ``check``."""
    cmd = _argv(argv)
    log.debug("+ %s", shlex.join(cmd))
    try:
        proc = subprocess.run(
            cmd,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=_full_env(env),
            cwd=cwd,
            timeout=timeout,
            text=text,
            check=False,
            pass_fds=pass_fds,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(cmd, -9, f"timed out after {timeout}s", hint=hint) from exc
    except OSError as exc:  # (exec failed: the program never ran)
        raise CommandError.not_started(cmd, exc, hint=hint) from exc
    err, out = _text(proc.stderr), _text(proc.stdout)
    if check and proc.returncode != 0:
        raise CommandError(cmd, proc.returncode, err or out, hint=hint)
    return Result(cmd, proc.returncode, out, err)


@contextmanager
def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    pass_fds: Sequence[int] = (),
    env: Mapping[str, str] | None = None,
    start_new_session: bool = False,
    die_with_parent: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a program; on an exception in the body, terminate it and always wait.

    ``die_with_parent``: the kernel kills the program if this process dies
    first, even by SIGKILL (which runs no cleanup here)."""
    cmd = _argv(argv)
    log.debug("+ %s", shlex.join(cmd))
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            pass_fds=pass_fds,
            env=_full_env(env),
            start_new_session=start_new_session,
            preexec_fn=_death_signal(os.getpid()) if die_with_parent else None,
        )
    except OSError as exc:  # (exec failed: the program never ran)
        raise CommandError.not_started(cmd, exc) from exc
    try:
        yield proc
    except BaseException:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    finally:
        proc.wait()


def _death_signal(parent: int) -> Callable[[], None]:
    """A child's first step: ask for SIGKILL when the parent dies (and die now if
    it already has)."""
    import ctypes
    import signal

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    PR_SET_PDEATHSIG = 1

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return arm


@contextmanager
def alongside(argv: Sequence[str | os.PathLike[str]], *, hint: str | None = None) -> Iterator[None]:
    """Run a program while the body runs; at the end wait for it and raise
    CommandError if it failed (if the body fails, the program is stopped)."""
    with spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        yield
        err = proc.stderr.read() if proc.stderr else b""
        if proc.wait() != 0:
            raise CommandError(list(map(os.fspath, proc.args)), proc.returncode,  # type: ignore[arg-type]
                               _text(err), hint=hint)


def pids_where(what: str, match: Callable[[bytes], bool]) -> list[int]:
    """The processes whose ``/proc/PID/<what>`` (``cmdline``, ``environ``: NUL
    separated) satisfies ``match``; those that vanish or may not be read are left
    out."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/{what}", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if match(data):
            out.append(int(entry))
    return out


def kill_and_wait(pid: int, timeout: float | None = 5.0) -> bool:
    """SIGKILL ``pid`` (any process, not only a child) and wait until it is gone;
    True if it is gone within ``timeout`` (None: wait for ever)."""
    import select
    import signal

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN)  # a pidfd is readable once its process exited
        return bool(poller.poll(None if timeout is None else int(timeout * 1000)))
    finally:
        os.close(fd)
