"""Launch QEMU confined by the jail helper (see ignitevm.providers.sandbox).

The host prepares what QEMU may touch (the VM's disk overlay handed to the
VM's uid; the shared files made readable to the VMs' group), creates the
VM's cgroups and every socket QEMU serves (QMP, console, agent channels:
listening, in the root-only ``run/`` folder, passed as descriptors), then
runs ``ignite-jail … -- qemu …``: the helper detaches, confines and execs
QEMU, reports its pid (the host writes the pid file) and returns at once.
QEMU is up when QMP greets on the socket; if QEMU (or the helper) dies
first, the socket closes, and the reason is the last line of ``qemu.log``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

from ignitevm.errors import IgniteError
from ignitevm.log import log
from ignitevm.providers.sandbox import build, cgroups, ids, jail
from ignitevm.providers.vmm import consolelog
from ignitevm.providers.vmm.base import LaunchSpec
from ignitevm.providers.vmm.qemu import args
from ignitevm.util.proc import spawn, which

READY_TIMEOUT = 60.0  # seconds from exec to QMP's greeting (TCG under load)


def plan(spec: LaunchSpec, qemu: str) -> jail.Plan:
    """Hand the VM's files to its uid and list what its jail holds."""
    d = spec.workdir
    me = jail.identity(ids.allocate(d))
    run_dir = d / args.RUN_DIR
    run_dir.mkdir(exist_ok=True)
    # run/ is the host's alone (QEMU never sees it: its sockets are made by
    # the host and handed over, its pid file written by the host): nothing
    # there is planted by the VM, and a compromised QEMU cannot fill the
    # host's disk with files. It writes only its disk overlay (and a
    # template's RAM file), each bounded by RLIMIT_FSIZE.
    jail.own(run_dir, 0, 0, 0o700)
    for lock in host_locks(d):
        jail.host_file(lock)
    binds, links = jail.system_binds(qemu)
    nodes = jail.base_nodes(spec.accel == "kvm", me.uid)
    shared = [spec.kernel, *([spec.initrd] if spec.initrd else [])]
    for disk in spec.disks:
        mode = os.stat(disk.path).st_mode
        if stat.S_ISBLK(mode):
            nodes.append(jail.device(str(disk.path), me.uid))
        elif disk.path.parent == d:
            if disk.readonly:
                jail.own(disk.path, 0, me.gid, 0o640)
            else:
                jail.own(disk.path, me.uid, me.gid, 0o600)
            binds.append((str(disk.path), "r" if disk.readonly else "w"))
        elif disk.readonly:
            shared.append(disk.path)
        else:
            raise IgniteError(f"disk {disk.path} is outside the VM's folder and writable",
                              hint="only block devices and the VM's own disks can be "
                                   "given to a jailed VM (or use --sandbox=none)")
        if disk.backing is not None:
            shared.extend((disk.backing, *disk.chain))
    own_proc = False
    if spec.memory_file is not None and str(spec.memory_file).startswith("/proc/self/fd/"):
        # A snapshot's shared RAM, a sealed memfd QEMU inherits: it opens it
        # through its own /proc (no one may write it; see operations/sharedram).
        own_proc = True
    elif spec.memory_file is not None:
        # The RAM of a template being made: this VMM's to write.
        jail.own(spec.memory_file, me.uid, me.gid, 0o600)
        binds.append((str(spec.memory_file), "w"))
    jail.shared_readable(shared)
    binds += [(str(p), "r") for p in shared]
    found = cgroups.hierarchies()
    procs = cgroups.create(d.name, cgroups.limits(spec.cpus, spec.memory_mib), found)
    if spec.net is not None and spec.net.plugin == "user":
        _close_loopback(d.name, found)
    if not any(h.controllers for h in found):
        log.warning("no cgroup controllers on this host: the VM runs without memory, "
                    "CPU and task limits")
    private_net = spec.net is None or spec.net.plugin != "user"
    # User-mode networking binds the forwarded host ports inside QEMU.
    low = spec.net is not None and any(
        f.host_port < jail.unprivileged_port_start() for f in spec.net.forwards)
    return jail.Plan(me, binds, nodes, links, procs, private_net, d, low_ports=low,
                     own_proc=own_proc, file_size=file_size_limit(spec))


def file_size_limit(spec: LaunchSpec) -> int:
    """The largest file the jailed QEMU may write (RLIMIT_FSIZE): its qcow2
    overlay grows to the disk's virtual size plus metadata (L2 tables and
    refcounts, under 1/4096 of it with 64 KiB clusters; a sixty-fourth and
    64 MiB are allowed) plus the guest's RAM: a memory file, or a VM state
    saved inside the overlay. The overlay's size comes from the VM's spec,
    never from its header (QEMU writes that)."""
    biggest = max((disk.size or _device_size(disk.path)
                   for disk in spec.disks if not disk.readonly), default=0)
    return biggest + biggest // 64 + (spec.memory_mib << 20) + (64 << 20)


def _close_loopback(name: str, found: list[cgroups.Hierarchy]) -> None:
    """User-mode networking maps the guest's gateway to the host's loopback:
    refuse QEMU's connections there (see ignitevm.providers.sandbox.loopback)."""
    group = cgroups.v2_group(name, found)
    if group is None:
        log.warning("no cgroup v2 hierarchy on this host: a guest with user-mode networking "
                    "can reach the host's loopback services (10.0.2.2)")
        return
    # (here: ctypes, which it needs, is not for an unconfined VM's launch, which
    # imports this module for the console writer)
    from ignitevm.providers.sandbox import loopback

    loopback.close_loopback(group)


def _device_size(path: Path) -> int:
    """A block device's size (a volume: writes to it must not be cut short)."""
    if not stat.S_ISBLK(os.stat(path).st_mode):
        return 0
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def host_locks(d: Path) -> list[Path]:
    """The lock files the agent's host clients take beside the agent sockets."""
    socks = [args.agent_socket(d, k) for k in range(1, args.AGENT_MAX_CHANNELS + 1)]
    return [*(s.with_suffix(".lock") for s in socks), socks[0].parent / "agent-grow.lock"]


def launch(spec: LaunchSpec) -> None:
    if os.geteuid() != 0:
        raise IgniteError("confining QEMU needs root",
                          hint="run as root, or run the VM unconfined with --sandbox=none")
    d = spec.workdir
    if not d.is_absolute():
        raise IgniteError(f"the VM folder {d} must be an absolute path",
                          hint="give --root as an absolute path")
    qemu = which(args.QEMU)
    # ``undo`` runs only if the launch fails (on success its callbacks are
    # dropped: the sockets stay, the cgroups are the VM's); ``always`` holds
    # what is closed either way (ignited launches in its own process: an fd
    # kept per start would add up).
    with contextlib.ExitStack() as always, contextlib.ExitStack() as undo:
        undo.callback(_release, d.name)
        try:
            p = plan(spec, qemu)
        except OSError as exc:
            raise IgniteError(f"cannot prepare the VM's jail: {exc}",
                              hint="VMs are confined as root on a host with cgroups; "
                                   "--sandbox=none runs QEMU unconfined") from None
        helper = build.helper(spec.cache or d.parent.parent / "cache")
        qmp = d / args.QMP
        listener = undo.enter_context(listen(qmp))
        socks = [undo.enter_context(listen(d / args.CONSOLE_SOCK))]
        socks += [undo.enter_context(listen(args.agent_socket(d, k)))
                  for k in range(1, spec.agent_channels + 1)]
        pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
        always.callback(os.close, pid_r)
        with _closing(pid_w):
            given = (listener.fileno(), *(s.fileno() for s in socks), pid_w,
                     *spec.inherited_fds())
            console = console_writer(d, given)
            p = p._replace(console=console, pid_fd=pid_w)
            cmd = [*p.argv(helper), *args.argv(spec, qemu, qmp_fd=listener.fileno(),
                                               console_fd=console[0],
                                               socket_fds=tuple(s.fileno() for s in socks))]
            (d / "qemu.cmdline").write_text("\n".join(cmd) + "\n")
            log_fd = os.open(d / args.QEMU_LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                             | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            always.callback(os.close, log_fd)
            with spawn(cmd, stdout=log_fd, stderr=log_fd, pass_fds=given) as proc:
                if spec.on_spawn is not None:
                    spec.on_spawn()
                rc = proc.wait()
        pid = _read_pid(pid_r)
        if pid is not None:
            # At once, not after the greeting: a CLI killed while QEMU starts
            # must leave a QEMU that ps, stop and kill find.
            _write_pid(d / args.PIDFILE, pid)
            undo.callback(lambda: (d / args.PIDFILE).unlink(missing_ok=True))
        for s in (listener, *socks):
            s.close()
        if rc != 0 or pid is None or not _greeted(qmp):
            _fail(d)
        undo.pop_all()


def console_writer(d: Path, given: tuple[int, ...]) -> tuple[int, int, str]:
    """The console writer of the VM in ``d`` (``ignite-jail -c``), jailed or not:
    QEMU never sees the console log, it writes into a pipe (its fd: the first
    above the fds ``given`` to the helper), and the writer keeps the file
    bounded at every write (see ignitevm.providers.vmm.consolelog)."""
    return (max(given, default=2) + 1, consolelog.limit(), str(d / args.CONSOLE_LOG))


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _write_pid(path: Path, pid: int) -> None:
    """The pid file, whole or not there for readers (no fsync: after a crash
    the launch record's boot id tells that the pid is stale anyway)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with open(fd, "w") as f:
        f.write(f"{pid}\n")
    os.replace(tmp, path)


def _read_pid(fd: int) -> int | None:
    """The pid the jail helper reported (None if it failed before forking)."""
    data = b""
    while chunk := os.read(fd, 32):
        data += chunk
        if len(data) > 32:
            return None
    try:
        return int(data.decode("ascii"))
    except ValueError:
        return None


def listen(path: Path) -> socket.socket:
    """A listening socket at ``path`` in the VM's run/ folder (root's, 0600)
    for QEMU to serve; a socket QEMU left there before is replaced."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(8)
    except BaseException:
        sock.close()
        raise
    return sock


def _greeted(qmp: Path) -> bool:
    """Wait for QMP's greeting: True once QEMU runs, False if it died first."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(READY_TIMEOUT)
        try:
            c.connect(str(qmp))
            return bool(c.recv(16))
        except (ConnectionError, FileNotFoundError):
            return False
        except TimeoutError:
            log.warning("QEMU did not answer within %.0fs", READY_TIMEOUT)
            return False


def _fail(d: Path) -> None:
    try:
        text = (d / args.QEMU_LOG).read_text(errors="replace")
    except OSError:
        text = ""
    lines = text.strip().splitlines()
    why = lines[-1] if lines else "it exited at once"
    why = why.removeprefix(f"{which(args.QEMU)}: ").removeprefix(f"{args.QEMU}: ")
    raise IgniteError(f"QEMU failed to start: {why}", details=text,
                      hint=f"see {d / args.QEMU_LOG}; --sandbox=none runs it unconfined")


def _release(name: str) -> None:
    """Kill whatever a failed launch left in the VM's cgroups, then remove them."""
    with contextlib.suppress(OSError):
        cgroups.clear(name, grace=0)
