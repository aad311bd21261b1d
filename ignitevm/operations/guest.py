"""Reaching into a running VM through its agent: exec, copy in and out, shutdown."""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from ignitevm.agent import session
from ignitevm.agent.client import AgentError, Channel
from ignitevm.api.types import VM
from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.operations import vms
from ignitevm.operations.context import Context

DEFAULT_TIMEOUT = 30.0


def channel(ctx: Context, vm: VM, timeout: float = DEFAULT_TIMEOUT) -> Channel:
    d = vms.workdir(ctx, vm)
    if ctx.vmm.pid(d) is None:
        raise IgniteError(f"VM {vm.metadata.name!r} is not running",
                          hint=f"start it with: ignite start {vm.metadata.name}")
    try:
        return Channel.connect(vms.AgentPorts(ctx, d), timeout, f"VM {vm.metadata.name!r}")
    except AgentError as exc:
        # Say what the guest last said about its agent, or the console's last line.
        from ignitevm.providers.vmm.consolelog import tail

        lines = tail(ctx.vmm.console_log(d)).decode(errors="replace").splitlines()
        said = [ln for ln in lines if "ignitevm-" in ln] or lines
        if said:
            exc.hint = f"the console's last word: {said[-1].strip()[:200]!r} (ignite logs)"
        raise


def copy_in(ctx: Context, vm: VM, src: Path, dest: str, timeout: float = DEFAULT_TIMEOUT,
            progress: Callable[[int], None] | None = None) -> None:
    """Copy a host file or folder to ``dest`` in the guest (host symlinks followed).

    ``dest`` ending in ``/`` names a folder to copy into; otherwise it is the
    new path of the copy, as with ``cp``.
    """
    if not src.exists():
        raise InvalidInput(f"{src}: no such file or folder on the host")
    if not dest.startswith("/"):
        raise InvalidInput(f"guest path {dest!r} must be absolute")
    if dest.endswith("/") or dest in ("/", "/."):
        folder, name = dest.rstrip("/") or "/", src.resolve().name
    else:
        folder, name = os.path.dirname(dest) or "/", os.path.basename(dest)

    def write_tar(fileobj: object) -> None:
        with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          dereference=True) as tar:
            tar.add(src.resolve(), arcname=name)

    with channel(ctx, vm, timeout) as ch:
        session.put(ch, folder, write_tar, progress)


def copy_out(ctx: Context, vm: VM, src: str, dest: Path, timeout: float = DEFAULT_TIMEOUT,
             progress: Callable[[int], None] | None = None) -> None:
    """Copy a guest file or folder to ``dest`` on the host.

    The copy is unpacked beside its destination first and moved into place
    only when complete: a dropped channel leaves no half-written file.
    """
    if not src.startswith("/"):
        raise InvalidInput(f"guest path {src!r} must be absolute")
    into_dir = dest.is_dir()
    target = dest / os.path.basename(src.rstrip("/")) if into_dir else dest
    if not target.parent.is_dir():
        raise InvalidInput(f"{target.parent}: no such folder on the host")
    with channel(ctx, vm, timeout) as ch, tempfile.TemporaryDirectory(
            dir=target.parent, prefix=".ignite-cp-") as work:
        reader = session.get(ch, src, progress)
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            tar.extractall(work, filter="tar")
        reader.finish()
        entries = os.listdir(work)
        if len(entries) != 1:
            raise IgniteError(f"the guest sent {len(entries)} top entries for {src}")
        got = Path(work) / entries[0]
        if target.is_dir() and not target.is_symlink() and got.is_dir():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
        os.rename(got, target)
