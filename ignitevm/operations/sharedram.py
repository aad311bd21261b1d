"""A snapshot's RAM, shared by its clones' QEMUs.

Each clone maps the RAM privately (``share=off``): they all read the same
pages and copy only the pages they write. QEMU 7.2 opens the RAM file
read-write even for a private mapping (8.1 falls back to read-only, 8.2 has
``rom=off``), so whoever may open it may also write it, and with it every
other clone's memory.

- Unconfined clones (``--sandbox=none``: QEMU is root anyway) map the
  snapshot's ``memory`` file: its page-cache pages are shared.
- A jailed clone gets a *sealed memfd* holding the RAM (``F_SEAL_WRITE``,
  ``SHRINK``, ``GROW``, ``SEAL``: it may be opened read-write and mapped
  privately, never written) as an inherited descriptor, which it opens as
  ``/proc/self/fd/N`` (its jail then has a /proc showing only itself). All
  running clones of a snapshot share one memfd: a new clone's host takes it
  from a running clone's QEMU (``/proc/PID/fd/N``, the number recorded by the
  host in the clone's folder), and accepts it only if it is the very inode
  the host made (recorded in the snapshot's folder) and still sealed: a
  compromised QEMU can put another file at that number, not that inode. When
  no clone runs, a new memfd is filled from ``memory``.

The memory file's digest is checked once, as the snapshot's other files are
(then again only if the file's inode, size, mtime or ctime change:
snapshots.verified).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.errors import InvalidInput

if TYPE_CHECKING:
    from ignitevm.api.types import Snapshot
    from ignitevm.operations.context import Context
    from ignitevm.util.background import Background

MEMORY = "memory"
MEMFD_RECORD = ".memfd"  # in the snapshot's folder: "<dev> <ino>" of the live memfd
CLONE_FD = "ram-fd"  # in a clone's folder: the memfd's number in its QEMU
SEALS = 0
try:
    import fcntl as _fcntl

    SEALS = _fcntl.F_SEAL_WRITE | _fcntl.F_SEAL_SHRINK | _fcntl.F_SEAL_GROW | _fcntl.F_SEAL_SEAL
except AttributeError:  # (not Linux)
    pass


def template(ctx: Context, snap: Snapshot) -> Path:
    """The RAM file clones of ``snap`` map privately, its digest checked."""
    from ignitevm.operations.snapshots import check_files, folder

    path = folder(ctx, snap) / MEMORY
    if not path.exists():
        raise InvalidInput(f"snapshot {snap.metadata.name!r} is damaged: its RAM file is "
                           "missing", hint=f"remove it (ignite snapshot rm "
                           f"{snap.metadata.name}) and save the VM again")
    check_files(ctx, snap, (MEMORY,))  # (hashed once: snapshots.verified)
    return path


def release(snapdir: Path) -> None:
    """Nothing is held for a snapshot's RAM outside its folder (a memfd lives as
    long as the clones that map it)."""


def _is_ours(fd: int, record: str, size: int) -> bool:
    import fcntl

    try:
        st = os.fstat(fd)
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        return False
    return (f"{st.st_dev} {st.st_ino}" == record and st.st_size == size
            and seals & SEALS == SEALS)


def fill(fd: int, path: Path) -> None:
    """Copy the file ``path`` into ``fd`` (as long, all zeros), leaving out its
    holes and the chunks that hold only zeros (pages never written stay
    unallocated). The holes are found with SEEK_DATA, not read: the RAM
    file is mostly holes (~80 of 256 MiB written), read whole ~75 ms."""
    import errno

    chunk_size, zeros = 1 << 20, bytes(1 << 20)
    with open(path, "rb", buffering=0) as f:
        size, pos = os.fstat(f.fileno()).st_size, 0
        while pos < size:
            try:
                start = os.lseek(f.fileno(), pos, os.SEEK_DATA)
                end = min(os.lseek(f.fileno(), start, os.SEEK_HOLE), size)
                if end <= start:
                    end = size  # (never so; read on rather than loop)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    return  # (only a hole from here on)
                start, end = pos, size  # (no SEEK_DATA on this file system)
            f.seek(start)
            pos = start
            while pos < end and (chunk := f.read(min(chunk_size, end - pos))):
                if chunk != zeros[:len(chunk)]:
                    os.pwrite(fd, chunk, pos)
                pos += len(chunk)
            pos = max(pos, end)


class Filling:
    """A clone's memfd of a snapshot's RAM (``fd``), perhaps still being
    filled and sealed by a thread of its own: ``wait()`` returns once the
    memfd is whole and sealed, or raises what stopped it.

    ``fd`` may be given to the clone's QEMU before then: QEMU maps the RAM
    privately as it starts (no prealloc, no mem-lock: args.memory) and
    touches none of it before the saved state is loaded (for an incoming VM
    it loads no ROM into RAM), and the host waits for the memfd before it
    loads the state. Until then QEMU has read only the host's command line
    and the snapshot's disk layer, which the source VM's QEMU wrote as it
    wrote the RAM file itself; the seals are on before the state is loaded
    and the guest runs, and they hold against every descriptor, QEMU's too.
    ``fd`` is closed only once the thread has ended (close, settle)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.work: Background | None = None

    def wait(self) -> None:
        if self.work is not None:
            self.work.wait()

    def settle(self) -> None:
        """Return once the thread (if any) has ended; its error is not said
        (the caller's is)."""
        if self.work is not None:
            self.work.settle()
            self.work = None

    def close(self) -> None:
        """Close ``fd``, once the thread (if any) has ended."""
        self.settle()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _fill_and_seal(fd: int, path: Path, record: Path) -> None:
    import fcntl

    from ignitevm.util.fs import atomic_write

    fill(fd, path)
    os.fchmod(fd, 0o666)  # (sealed below: open read-write, never written)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    st = os.fstat(fd)
    atomic_write(record, f"{st.st_dev} {st.st_ino}\n".encode())


def start(ctx: Context, snap: Snapshot) -> Filling:
    """The memfd holding ``snap``'s RAM for a new clone: the one running
    clones map (whole already), else a new one, made here and filled from
    the snapshot's ``memory`` file by a thread (see Filling). Until that
    memfd is whole and recorded, the snapshot's memfd lock stays taken:
    another clone's host waits for it, then shares the memfd of a running
    clone if it finds one (a clone is found once its state is loaded), else
    makes its own."""
    from ignitevm.operations.snapshots import clones_of, folder
    from ignitevm.util.background import Background, signals_held
    from ignitevm.util.files import lock

    d = folder(ctx, snap)
    rec = next((f for f in snap.status.files if f.name == MEMORY), None)
    if rec is None:
        raise InvalidInput(f"snapshot {snap.metadata.name!r} has no RAM file")
    lock_fd = lock(d / ".memfd.lock")
    held = True  # (until a filling thread takes the lock over)
    try:
        try:
            record = (d / MEMFD_RECORD).read_text().strip()
        except OSError:
            record = ""
        from ignitevm.operations.spares import spares_of

        for vm in [*clones_of(ctx, snap), *spares_of(ctx, snap)] if record else ():
            vd = ctx.store.dir(vm)
            pid = ctx.vmm.pid(vd)
            try:
                n = int((vd / CLONE_FD).read_text())
                # (the clone's QEMU decides what its fd N is: a FIFO would
                # block this open for good; only the very memfd is opened)
                st = os.stat(f"/proc/{pid}/fd/{n}")
                if not stat.S_ISREG(st.st_mode) or f"{st.st_dev} {st.st_ino}" != record:
                    continue
                fd = os.open(f"/proc/{pid}/fd/{n}",
                             os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            except (OSError, ValueError, TypeError):
                continue
            if _is_ours(fd, record, rec.size):
                return Filling(fd)
            os.close(fd)
        path = template(ctx, snap)  # (its digest checked)
        fd = os.memfd_create(f"ignite-{snap.metadata.uid}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, rec.size)
            filling = Filling(fd)

            def fill_and_seal() -> None:
                try:
                    _fill_and_seal(fd, path, d / MEMFD_RECORD)
                finally:
                    os.close(lock_fd)  # (held until the memfd is whole and recorded)

            with signals_held():  # (the lock is the thread's once it runs: no interrupt between)
                filling.work = Background(fill_and_seal)
                held = False
        except BaseException:
            os.close(fd)
            raise
        return filling
    finally:
        if held:
            os.close(lock_fd)
