"""What one VM's jail holds, and the ``ignite-jail`` command line that builds it.

Inside, the VMM sees a read-only tmpfs root with, each at its host path:
the VMM binary and the host's library folders (read-only, executable), its
firmware folders (read-only), the VM's own files (its writable disk and
read-only config disk; not its ``run/`` folder: the host makes the VMM's
sockets there and hands them over as descriptors, and keeps its pid record),
the shared image, kernel and initramfs (read-only), and device nodes made
for it (null, zero, random, urandom, kvm when used, the VM's block volumes
owned by the VM's uid). Nothing else of the host: not the store, not /etc,
not /proc, not the other VMs.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from ignitevm.providers.sandbox import ids

# Library folders the VMM's loader and its loadable modules come from.
LIBRARY_DIRS = ("/lib64", "/usr/lib64", "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu")
ROOT_LINKS = ("/lib", "/lib64", "/bin", "/sbin")  # merged-/usr links, recreated inside
FIRMWARE_DIRS = ("/usr/share/qemu",)
DEVICES = {"/dev/null": (1, 3), "/dev/zero": (1, 5), "/dev/random": (1, 8),
           "/dev/urandom": (1, 9)}
KVM = "/dev/kvm"


class Identity(NamedTuple):
    uid: int
    gid: int
    groups: tuple[int, ...]


class Plan(NamedTuple):
    identity: Identity
    binds: list[tuple[str, str]]  # (path, flags: r | w | rx)
    nodes: list[tuple[str, str, int, int, int, int]]  # path, c|b, major, minor, mode, owner
    links: list[tuple[str, str]]  # (target, path)
    cgroups: list[Path]
    private_net: bool
    workdir: Path
    low_ports: bool = False  # keep CAP_NET_BIND_SERVICE (and no other capability)
    own_proc: bool = False  # a /proc showing only itself (to open /proc/self/fd/N)
    # The console writer: (the VMM's fd for the pipe, the most bytes kept, the log).
    console: tuple[int, int, str] | None = None
    foreground: bool = False  # no detaching; killed when the caller dies
    file_size: int = 0  # RLIMIT_FSIZE of the VMM: no file it writes grows past it (0: none)
    pid_fd: int | None = None  # where the helper writes the detached VMM's pid (a pipe)

    def argv(self, helper: Path) -> list[str]:
        me = self.identity
        out = [str(helper), "-u", str(me.uid), "-g", str(me.gid),
               "-G", ",".join(map(str, me.groups)), "-w", str(self.workdir)]
        for procs in self.cgroups:
            out += ["-C", str(procs)]
        for path, flags in self.binds:
            out += ["-b", path, path, flags]
        for path, kind, major, minor, mode, owner in self.nodes:
            out += ["-d", path, kind, str(major), str(minor), f"{mode:o}",
                    str(owner), str(owner)]
        for target, path in self.links:
            out += ["-l", target, path]
        if self.private_net:
            out.append("-N")
        if self.low_ports:
            out.append("-P")
        if self.own_proc:
            out.append("-p")
        if self.console is not None:
            out += console_options(self.console)
        if self.foreground:
            out.append("-f")
        if self.file_size:
            out += ["-s", str(self.file_size)]
        if self.pid_fd is not None:
            out += ["-i", str(self.pid_fd)]
        return [*out, "--"]


def console_options(console: tuple[int, int, str]) -> list[str]:
    """``-c``: the console writer (the VMM's fd for the pipe, the most bytes kept, the log)."""
    fd, most, log = console
    return ["-c", str(fd), str(most), log]


def unconfined_argv(helper: Path, console: tuple[int, int, str]) -> list[str]:
    """``ignite-jail -n``: no jail, only the console writer, for a VMM run as
    the caller (``--sandbox=none``; no privilege needed) that detaches itself."""
    return [str(helper), "-n", *console_options(console), "--"]


def probe_plan(qemu: str, files: list[Path], kvm: bool) -> Plan:
    """The jail of a short-lived VMM that boots ``files`` (a kernel and its
    initramfs) and prints to its stdout: the KVM probe. It runs as the id of
    slot 0 (never a VM's uid), in the foreground (it dies with its caller),
    with no network and no file to write."""
    me = Identity(ids.SHARED_GID, ids.SHARED_GID, ())
    binds, links = system_binds(qemu)
    shared_readable(files)
    binds += [(str(p), "r") for p in files]
    return Plan(me, binds, base_nodes(kvm, me.uid), links, [], True, Path("/"),
                foreground=True, file_size=1 << 20)


def unprivileged_port_start() -> int:
    """The first port a process without CAP_NET_BIND_SERVICE may bind."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def identity(ident: int) -> Identity:
    return Identity(ident, ident, (ids.SHARED_GID,))


def system_binds(binary: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The VMM binary, library and firmware folders (binds), and root links."""
    binds: dict[str, str] = {os.path.realpath(binary): "rx"}
    links: list[tuple[str, str]] = []
    for path in ROOT_LINKS:
        if os.path.islink(path):
            links.append((os.readlink(path), path))
    for path in LIBRARY_DIRS:
        real = os.path.realpath(path)
        if os.path.isdir(real):
            binds.setdefault(real, "rx")
    for path in FIRMWARE_DIRS:
        if not os.path.isdir(path):
            continue
        binds.setdefault(os.path.realpath(path), "r")
        # Firmware files are often links into other packages' folders.
        for entry in os.scandir(path):
            if entry.is_symlink():
                target = os.path.dirname(os.path.realpath(entry.path))
                if os.path.isdir(target):
                    binds.setdefault(target, "r")
    return _outermost(binds), links


def _outermost(binds: dict[str, str]) -> list[tuple[str, str]]:
    """Drop binds inside another bind (their parent already shows them)."""
    keep = []
    for path, flags in sorted(binds.items()):
        if not any(path.startswith(p.rstrip("/") + "/") for p, _ in keep):
            keep.append((path, flags))
    return keep


def device(path: str, owner: int, mode: int = 0o600) -> tuple[str, str, int, int, int, int]:
    st = os.stat(path)
    kind = "b" if stat.S_ISBLK(st.st_mode) else "c"
    if not (stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode)):
        raise OSError(errno.ENODEV, "not a device node", path)
    return (path, kind, os.major(st.st_rdev), os.minor(st.st_rdev), mode, owner)


def base_nodes(kvm: bool, owner: int) -> list[tuple[str, str, int, int, int, int]]:
    nodes = [(p, "c", major, minor, 0o666, 0) for p, (major, minor) in DEVICES.items()]
    if kvm:
        nodes.append(device(KVM, owner))
    return nodes


def shared_readable(paths: Iterable[Path]) -> None:
    """Let the VMs' shared group read files every VM uses (image, kernel,
    initramfs); they are bound read-only into the jails, and the store's
    folders keep everyone else out on the host."""
    for p in paths:
        st = os.stat(p)
        if st.st_gid != ids.SHARED_GID:
            os.chown(p, -1, ids.SHARED_GID)
        if not st.st_mode & stat.S_IRGRP:
            os.chmod(p, stat.S_IMODE(st.st_mode) | stat.S_IRGRP)


def own(path: Path, uid: int, gid: int, mode: int) -> None:
    """Set owner and mode of a file or folder of the VM's root-owned folder,
    never through a symbolic link."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.ELOOP, "a symbolic link where a file should be", str(path))
        os.chown(f"/proc/self/fd/{fd}", uid, gid)
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


def host_file(path: Path) -> None:
    """Make ``path`` an empty root-owned regular file (0600) unless it is one:
    a link or a file of another owner found there is replaced."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, 0o600)
        except OSError:  # a link (ELOOP), a socket or fifo (ENXIO), a folder…
            _remove(path)
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_uid == 0:
                os.fchmod(fd, 0o600)
                return
        finally:
            os.close(fd)
        _remove(path)
    raise OSError(f"cannot make {path} a host file")


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except IsADirectoryError:
        import shutil

        shutil.rmtree(path)
    except FileNotFoundError:
        pass
