"""Reaching into a running VM through its agent: exec, copy in and out, shutdown."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.agent import session
from ignitevm.agent.client import AgentError, Channel
from ignitevm.api.types import VM
from ignitevm.errors import Conflict, IgniteError, InvalidInput
from ignitevm.operations import vms
from ignitevm.operations.context import Context
from ignitevm.util import beneath

if TYPE_CHECKING:
    from ignitevm.agent import untar
    from ignitevm.agent.untar import Limits

DEFAULT_TIMEOUT = 30.0


def channel(ctx: Context, vm: VM, timeout: float = DEFAULT_TIMEOUT) -> Channel:
    d = vms.workdir(ctx, vm)
    if ctx.vmm.pid(d) is None:
        raise IgniteError(f"VM {vm.metadata.name!r} is not running",
                          hint=f"start it with: ignite start {vm.metadata.name}")
    if vm.status.paused:
        raise vms.paused_error(vm)
    try:
        return Channel.connect(vms.AgentPorts(ctx, d), timeout, f"VM {vm.metadata.name!r}")
    except AgentError as exc:
        explain(ctx, vm, exc)
        raise


def explain(ctx: Context, vm: VM, exc: AgentError) -> None:
    """Why the agent of ``vm`` did not answer: a Conflict if the VM turns out to
    be paused, else ``exc`` gets the guest's last word on the console as hint."""
    vms.check_not_paused(ctx, vm)  # (paused behind the store's back, or by an error)
    # Say what the guest last said about its agent, or the console's last line.
    from ignitevm.providers.vmm.consolelog import tail

    lines = tail(ctx.vmm.console_log(vms.workdir(ctx, vm))).decode(errors="replace").splitlines()
    said = [ln for ln in lines if "ignitevm-" in ln] or lines
    if said:
        exc.hint = f"the console's last word: {said[-1].strip()[:200]!r} (ignite logs)"


def copy_in(ctx: Context, vm: VM, src: Path, dest: str, timeout: float = DEFAULT_TIMEOUT,
            progress: Callable[[int], None] | None = None) -> None:
    """Copy a host file or folder to ``dest`` in the guest.

    ``src`` itself is followed if it is a symbolic link; links inside a copied
    folder are copied as links (as ``cp -r`` and ``docker cp`` do). ``dest``
    ending in ``/`` names a folder to copy into; otherwise it is the new path
    of the copy, as with ``cp``. ``timeout`` also bounds how long the guest may
    make no progress.
    """
    if not src.exists():
        raise InvalidInput(f"{src}: no such file or folder on the host")
    if not dest.startswith("/"):
        raise InvalidInput(f"guest path {dest!r} must be absolute")
    if dest.endswith("/") or dest in ("/", "/."):
        folder, name = dest.rstrip("/") or "/", src.resolve().name
    else:
        folder, name = os.path.dirname(dest) or "/", os.path.basename(dest)
    with channel(ctx, vm, timeout) as ch:
        send(ch, src, folder, name, timeout, progress)


def send(ch: Channel, src: Path, folder: str, name: str, idle: float | None = DEFAULT_TIMEOUT,
         progress: Callable[[int], None] | None = None) -> None:
    """Copy ``src`` (followed if a link) to ``folder/name`` in the guest."""

    import tarfile

    def write_tar(fileobj: object) -> None:
        with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          dereference=False) as tar:
            tar.add(src.resolve(), arcname=name)

    session.put(ch, folder, write_tar, progress, idle=idle)


def copy_out(ctx: Context, vm: VM, src: str, dest: Path | str,
             timeout: float = DEFAULT_TIMEOUT, progress: Callable[[int], None] | None = None,
             limits: Limits | None = None) -> Path:
    """Copy a guest file or folder to ``dest`` on the host (see :func:`receive`)."""
    if not src.startswith("/"):
        raise InvalidInput(f"guest path {src!r} must be absolute")
    with channel(ctx, vm, timeout) as ch:
        return receive(ch, src, str(dest), timeout, progress, limits)


def receive(ch: Channel, src: str, dest: str, idle: float | None = DEFAULT_TIMEOUT,
            progress: Callable[[int], None] | None = None,
            limits: Limits | None = None) -> Path:
    """Copy the guest's ``src`` to the host's ``dest`` as ``cp -r`` would; the
    path written is returned.

    ``src`` ending in ``/.`` copies a folder's contents: into ``dest``, merged
    with what is there. Otherwise ``dest`` (or ``dest/<name>`` when ``dest`` is
    a folder) becomes the copy: a file replaces a file, a folder is merged
    into a folder. The guest's archive is unpacked into a work folder beside
    where it lands (untar.py says what is accepted) and moved into place only
    when complete: a refused or dropped copy leaves nothing behind.
    """
    import tempfile

    from ignitevm.agent import untar

    limits = limits or untar.Limits()
    contents = src == "/" or src.endswith("/.")
    name = os.path.basename(src.rstrip("/"))
    if not contents and name in (".", ".."):
        raise InvalidInput(f"guest path {src!r} ends in {name!r}",
                           hint="name the folder itself, or end it with /. for its contents")
    dest_is_dir = os.path.isdir(dest)
    if contents:
        target = Path(dest)
        if os.path.lexists(dest) and not dest_is_dir:
            raise InvalidInput(f"{dest}: not a folder, cannot copy a folder's contents into it")
    elif dest_is_dir:
        target = Path(dest) / name
    elif dest.endswith("/"):
        raise InvalidInput(f"{dest}: no such folder on the host")
    else:
        target = Path(dest)
    if not target.parent.is_dir():
        raise InvalidInput(f"{target.parent}: no such folder on the host")
    reader = session.get(ch, src, progress, idle, limits.max_bytes)
    stream = untar.TarStream(reader.read, limits)
    try:
        first = stream.next()
        if first is None:
            raise untar.Refused("an empty archive")
        try:
            st: os.stat_result | None = os.lstat(target)
        except FileNotFoundError:
            st = None
        target_dir = st is not None and (stat.S_ISDIR(st.st_mode)
                                          or (contents and dest_is_dir))
        top_is_dir = first.kind == "dir" or len(first.parts) > 1
        merge = target_dir and (contents or top_is_dir)
        if target_dir and not merge:
            raise Conflict(f"cannot overwrite folder {str(target)!r} with a non-folder")
        if st is not None and not target_dir and top_is_dir and not contents:
            raise Conflict(f"cannot overwrite non-folder {str(target)!r} with a folder")
        with contextlib.ExitStack() as stack:
            home = str(target) if merge else str(target.parent)
            work = tempfile.mkdtemp(prefix=".ignite-cp-", dir=home)
            home_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            stack.callback(os.close, home_fd)
            # (also after success: what is left of the work folder)
            stack.callback(_remove, home_fd, os.path.basename(work))
            work_fd = beneath.open_dir(home_fd, [os.path.basename(work)])
            stack.callback(os.close, work_fd)
            unpacker = untar.Unpacker(work_fd, 0 if contents else 1, umask=_umask())
            stack.callback(unpacker.close)
            entry: untar.Entry | None = first
            while entry is not None:
                unpacker.add(entry, stream)
                entry = stream.next()
            unpacker.finish()
            reader.finish()
            _place(unpacker, home_fd, os.path.basename(work), work_fd, target, merge, contents)
    except untar.Refused as exc:
        raise untar.Refused(f"refused what the guest sent for {src}: {exc}",
                            hint=exc.hint or "nothing was written on the host") from None
    except OSError as exc:
        raise IgniteError(f"cannot write the copy of {src} to {target}: {exc.strerror}"
                          + (f" ({exc.filename})" if exc.filename else "")) from None
    return target


def _place(unpacker: untar.Unpacker, home_fd: int, work: str, work_fd: int, target: Path,
           merge: bool, contents: bool) -> None:
    """Move the unpacked copy from the work folder to ``target``."""
    if merge:
        if contents:
            beneath.merge(work_fd, home_fd, skip=work, where=str(target))
        else:
            assert unpacker.top is not None
            with beneath.opened_dir(work_fd, [unpacker.top]) as top_fd:
                os.fchmod(top_fd, 0o700)
                beneath.merge(top_fd, home_fd, skip=work, where=str(target))
        return
    if contents:
        mode = unpacker.root_mode if unpacker.root_mode is not None else 0o777
        os.fchmod(work_fd, mode & 0o777 & ~unpacker.umask)
        os.rename(work, target.name, src_dir_fd=home_fd, dst_dir_fd=home_fd)
    else:
        assert unpacker.top is not None
        os.rename(unpacker.top, target.name, src_dir_fd=work_fd, dst_dir_fd=home_fd)


def _remove(dir_fd: int, name: str) -> None:
    with contextlib.suppress(OSError):
        beneath.remove_tree(dir_fd, name)


def _umask() -> int:
    from ignitevm.util.umask import user_umask

    return user_umask()
