"""Launch, find, power off and kill detached QEMU processes."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
from collections.abc import Iterator
from pathlib import Path

from ignitevm.errors import IgniteError
from ignitevm.providers.vmm import consolelog
from ignitevm.providers.vmm.qemu import args, running
from ignitevm.providers.vmm.qemu.running import (  # (for those who import them from here)
    QMP_TIMEOUT,
    is_our_qemu,
    process_start,
)
from ignitevm.util.fs import atomic_write

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:  # (exec's fast path reads this module: not the VMM's types)
    import socket

    from ignitevm.providers.vmm.base import Disk, LaunchSpec
    from ignitevm.providers.vmm.qemu.qmp import Monitor

LAUNCH_TIMEOUT = 60.0  # s: an unconfined QEMU's first process returns once it is set up

RUNTIME_FILES = (args.PIDFILE, args.PIDSTART, args.QMP, args.CONSOLE_SOCK,
                 *(str(args.agent_socket(Path(), k)) + new
                   for k in range(1, args.AGENT_MAX_CHANNELS + 1) for new in ("", ".new")))




class QemuVMM:
    name = "qemu"

    # --- disks ------------------------------------------------------------
    def create_disk(self, image: Path, workdir: Path, size: int) -> Disk:
        """A qcow2 overlay backed by the shared image: nothing is copied."""
        from ignitevm.util.proc import run

        disk = workdir / "disk.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
             "-b", str(image), "-o", "cluster_size=65536", str(disk), str(size)])
        from ignitevm.providers.vmm.base import Disk

        return Disk(disk, "ignite-root", "qcow2")

    # --- accelerator --------------------------------------------------------
    def choose_accel(self, kernel: Path, initrd: Path | None, cache: Path,
                     force: str | None = None, sandbox: str = "jail") -> str:
        from ignitevm.providers.vmm.qemu import accel as accel_mod

        return accel_mod.choose(kernel, initrd, cache, force, sandbox)

    def kernel_args(self, accel: str) -> list[str]:
        from ignitevm.providers.vmm.qemu import accel as accel_mod

        return accel_mod.kernel_args(accel)

    # --- lifecycle ----------------------------------------------------------
    def launch(self, spec: LaunchSpec) -> int:
        from ignitevm.providers.vmm.qemu import qcow2

        qcow2.check_disks(spec.disks)  # (a VM's QEMU wrote them: see qcow2.py)
        self.cleanup(spec.workdir)
        # Made here so that it is private (QEMU would make it group-readable).
        os.close(os.open(spec.workdir / args.CONSOLE_LOG,
                         os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
        if spec.sandbox != "none":
            from ignitevm.providers.vmm.qemu import jailed

            jailed.launch(spec)
        else:
            self._launch_unconfined(spec)
        pid = self.pid(spec.workdir)
        if pid is None:
            raise IgniteError("QEMU started but exited at once",
                              hint=f"see {spec.workdir / args.CONSOLE_LOG}")
        started = process_start(pid)
        if started is not None:  # (no fsync: after a crash the boot id differs anyway)
            atomic_write(spec.workdir / args.PIDSTART, f"{pid} {started}\n".encode())
        return pid

    def _launch_unconfined(self, spec: LaunchSpec) -> None:
        """QEMU as the caller, detaching itself (-daemonize); what the guest
        prints goes through the same console writer as a jailed VM's
        (``ignite-jail -n``: no jail, no privilege needed), which keeps the
        log bounded at every write, whether or not anyone looks."""
        import subprocess

        from ignitevm.providers.sandbox import build, jail
        from ignitevm.providers.vmm.qemu import jailed
        from ignitevm.util.proc import spawn, which

        d = spec.workdir
        (d / args.RUN_DIR).mkdir(exist_ok=True)
        qemu = which(args.QEMU)
        helper = build.helper(spec.cache or d.parent.parent / "cache")
        # An fd QEMU takes over (the tap of a CNI attachment) survives -daemonize.
        given = spec.inherited_fds()
        console = jailed.console_writer(d, given)
        cmd = [*jail.unconfined_argv(helper, console),
               *args.argv(spec, qemu, console_fd=console[0])]
        (d / "qemu.cmdline").write_text("\n".join(cmd) + "\n")
        # (QEMU's first process returns once the one it leaves running is set up)
        with spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=given) as proc:
            try:
                if spec.on_spawn is not None:
                    spec.on_spawn()
                out, err = (b.decode(errors="replace")
                            for b in proc.communicate(timeout=LAUNCH_TIMEOUT))
            except subprocess.TimeoutExpired:
                raise IgniteError(f"QEMU did not start within {LAUNCH_TIMEOUT:g} s",
                                  hint="--log-level debug shows QEMU's full command line"
                                  ) from None
            finally:  # (ignited launches in its own process: no pipe kept on a failure)
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
        if proc.returncode != 0:
            msg = (err or out).strip().splitlines()
            why = msg[-1] if msg else f"exit code {proc.returncode}"
            why = why.removeprefix(f"{qemu}: ").removeprefix(f"{args.QEMU}: ")
            raise IgniteError(f"QEMU failed to start: {why}", details=err,
                              hint="--log-level debug shows QEMU's full command line")

    def pid(self, workdir: Path) -> int | None:
        pid = running.pid(workdir, is_our_qemu)  # (the launch record's checks)
        if pid is None:
            return None
        # (One stat. The console writer keeps the log bounded; this trims the
        # log of an unconfined VM launched by an older version, whose QEMU
        # appends to it itself, and never one a writer holds: see consolelog.)
        log = workdir / args.CONSOLE_LOG
        if consolelog.over_limit(log) and qemu_writes_log(pid):
            consolelog.trim(log)
        return pid

    def connect_socket(self, workdir: Path, path: Path) -> socket.socket:
        """Connect to one of the sockets QEMU serves in the VM's run/ folder, and
        make sure QEMU is what answers (QEMU listens on them itself, so their
        peer is QEMU's uid): an unconfined VM's QEMU made them, and a link
        found there must not lead a root client to another socket of the
        host. The peer must run as the VM's QEMU does, or be the host itself
        for a socket in a folder only the host may write (a jailed VM's run/:
        the host made the socket and handed it to QEMU, and a QEMU older than
        6.1 does not listen() on it again, which makes it name QEMU)."""
        import socket

        pid = self.pid(workdir)
        if pid is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "the VM is not running")
        return socket.socket(fileno=running.connect(pid, path).detach())

    @contextlib.contextmanager
    def monitor(self, workdir: Path) -> Iterator[Monitor]:
        """A QMP connection to the VM's QEMU (one client at a time: QEMU queues others)."""
        from ignitevm.providers.vmm.qemu import qmp

        mon = qmp.connect(str(workdir / args.QMP), QMP_TIMEOUT)
        try:
            yield mon
        finally:
            mon.close()

    def qmp(self, workdir: Path, command: str, **arguments: object) -> object:
        with self.monitor(workdir) as mon:
            return mon.cmd(command, **arguments)

    def run_state(self, workdir: Path) -> str:
        """What QEMU says of the guest's CPUs: "running", "paused", "shutdown",
        "internal-error", "guest-panicked", ... (QMP query-status)."""
        status = self.qmp(workdir, "query-status")
        return str(status.get("status", "")) if isinstance(status, dict) else ""

    def pause(self, workdir: Path) -> str:
        """Stop the guest's CPUs if they run; the state found before (QMP stop)."""
        return running.pause(workdir)

    def resume(self, workdir: Path) -> str:
        """Let a paused guest's CPUs run again; the state found before (QMP cont).
        Only a guest paused by `stop` is resumed (not one QEMU stopped on an
        error or a panic)."""
        return running.resume(workdir)

    def powerdown(self, workdir: Path) -> bool:
        try:
            self.qmp(workdir, "system_powerdown")
        except Exception as exc:  # any failure to reach QMP means: not reachable
            from ignitevm.log import log

            log.debug("QMP system_powerdown failed: %s", exc)
            return False
        return True

    def kill(self, workdir: Path) -> None:
        pid = self.pid(workdir)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_gone(self, workdir, 5.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone(self, workdir, 5.0)
        consolelog.wait_writer(workdir / args.CONSOLE_LOG)  # its last lines, for `logs`

    def cleanup(self, workdir: Path) -> None:
        for name in RUNTIME_FILES:
            with contextlib.suppress(FileNotFoundError):
                (workdir / name).unlink()
        # The VM's cgroups, and with them any process of the VM still in them.
        from ignitevm.log import log
        from ignitevm.providers.sandbox import cgroups

        try:
            if not cgroups.clear(workdir.name):
                log.warning("the cgroups of VM %s could not be removed", workdir.name)
        except OSError as exc:
            log.warning("removing the cgroups of VM %s: %s", workdir.name, exc)

    def agent_sockets(self, workdir: Path) -> list[Path]:
        return [Path(p) for p in running.agent_sockets(workdir)]

    def add_agent_channel(self, workdir: Path) -> Path | None:
        """Hot-plug one more agent port (chardev + virtserialport) into the running
        VM; the guest agent opens it when the kernel announces it. The caller
        holds the channel-growing lock."""
        k = len(self.agent_sockets(workdir)) + 1
        if k > args.AGENT_MAX_CHANNELS or self.pid(workdir) is None:
            return None
        path = args.agent_socket(workdir, k)
        # The host makes the socket and hands it over (a jailed QEMU cannot
        # write in run/); QEMU takes the descriptor named by getfd.
        backend = {"type": "socket", "data": {
            "addr": {"type": "fd", "data": {"str": f"agent{k}"}},
            "server": True, "wait": False}}
        port = dict(item.split("=", 1) for item in args.agent_port(k).split(","))
        # (made beside, and named only once its port is there: no client finds
        # a socket that leads to no port, where it would wait for nothing)
        new = path.with_name(path.name + ".new")
        with self.monitor(workdir) as mon:
            if new.exists():  # a client killed before the rename...
                if _has_port(mon, k):      # ... after device_add: the channel is whole
                    os.rename(new, path)
                    return path
                with contextlib.suppress(Exception):  # ... before: its chardev has no port
                    mon.cmd("chardev-remove", id=f"agent{k}")
            self._plug_channel(mon, k, new, path, backend, port)
        return path

    @staticmethod
    def _plug_channel(mon: Monitor, k: int, new: Path, path: Path,
                      backend: dict[str, object], port: dict[str, str]) -> None:
        from ignitevm.providers.vmm.qemu.jailed import listen

        with listen(new) as sock:
            try:
                mon.cmd("getfd", fd=sock.fileno(), fdname=f"agent{k}")
                mon.cmd("chardev-add", id=f"agent{k}", backend=backend)
            except BaseException:
                new.unlink(missing_ok=True)
                with contextlib.suppress(Exception):
                    mon.cmd("closefd", fdname=f"agent{k}")
                with contextlib.suppress(Exception):
                    mon.cmd("chardev-remove", id=f"agent{k}")
                raise
            try:
                mon.cmd("device_add", driver="virtserialport", bus=f"{args.AGENT_BUS}.0",
                        **{**port, "nr": k})
            except BaseException:  # (also Ctrl-C: no socket may stay without a port)
                with contextlib.suppress(Exception):
                    mon.cmd("chardev-remove", id=f"agent{k}")
                new.unlink(missing_ok=True)
                raise
            os.rename(new, path)

    def agent_ports(self, workdir: Path) -> int:
        """How many agent ports the VM's QEMU has (1..N, in order): the channels
        a restore must give it, whether or not a client got to name each one's
        socket. The caller holds the channel-growing lock."""
        with self.monitor(workdir) as mon:
            names = {d.get("name") for d in mon.cmd("qom-list", path="/machine/peripheral")}
        n = 0
        while f"agentport{n + 1}" in names:
            n += 1
        return n

    def pending_agent_channel(self, workdir: Path) -> Path | None:
        """The socket of the channel being added, still under its ``.new`` name
        (a client killed before it named it), if there is one."""
        new = args.agent_socket(workdir, len(self.agent_sockets(workdir)) + 1)
        new = new.with_name(new.name + ".new")
        return new if os.path.lexists(new) else None

    def repair_agent_channel(self, workdir: Path, path: Path) -> None:
        """Undo a channel a client killed between chardev-add and device_add left
        half-made: a socket with no port behind it (its chardev and socket go;
        the next client adds the channel anew). Nothing if the port is there.
        (This host names a socket only once its port is there; one that an
        older one named before may lead to no port.) A socket still named
        ``.new`` (see :meth:`pending_agent_channel`) is named if its port is
        there (the client was killed after device_add), else undone."""
        pending = path.name.endswith(".new")
        name = path.name.removesuffix(".new")                  # agent-K.sock
        k = int(name.removesuffix(".sock").rsplit("-", 1)[1])
        with self.monitor(workdir) as mon:
            if _has_port(mon, k):
                if pending:
                    os.rename(path, path.with_name(name))
                return
            with contextlib.suppress(Exception):     # (gone already, or never made)
                mon.cmd("chardev-remove", id=f"agent{k}")
            if pending:
                with contextlib.suppress(Exception):  # (getfd done, chardev-add not)
                    mon.cmd("closefd", fdname=f"agent{k}")
        path.unlink(missing_ok=True)

    def console_socket(self, workdir: Path) -> Path:
        return workdir / args.CONSOLE_SOCK

    def console_log(self, workdir: Path) -> Path:
        return workdir / args.CONSOLE_LOG


def _has_port(mon: Monitor, k: int) -> bool:
    """Is agent port ``k`` (its virtserialport) in the VM?"""
    devices = mon.cmd("qom-list", path="/machine/peripheral")
    return any(d.get("name") == f"agentport{k}" for d in devices)


def qemu_writes_log(pid: int) -> bool:
    """Does QEMU ``pid`` append to the console log itself (an unconfined VM
    launched before the console writer: its chardev's ``logfile=`` is the
    file, not the writer's pipe ``/dev/fdset/N``)?"""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(a.startswith(b"socket,id=console,") and b",logfile=" in a
               and b",logfile=/dev/fdset/" not in a for a in argv)


def wait_gone(vmm: QemuVMM, workdir: Path, timeout: float) -> bool:
    """Wait until the VM's QEMU has exited; True if it did within ``timeout``."""
    pid = vmm.pid(workdir)
    if pid is None:
        return True
    return wait_pid(pid, timeout)


def wait_pid(pid: int, timeout: float) -> bool:
    """Wait for any process (not only a child) to exit, via a pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(timeout, 0) * 1000))
    finally:
        os.close(fd)
