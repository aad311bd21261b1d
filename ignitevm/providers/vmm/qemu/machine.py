"""Launch, find, power off and kill detached QEMU processes."""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.errors import IgniteError
from ignitevm.log import log
from ignitevm.providers.vmm.base import Disk, LaunchSpec
from ignitevm.providers.vmm.qemu import accel as accel_mod
from ignitevm.providers.vmm.qemu import args
from ignitevm.util.proc import run

if TYPE_CHECKING:
    from qemu.qmp.legacy import QEMUMonitorProtocol

RUNTIME_FILES = (args.PIDFILE, args.QMP, args.CONSOLE_SOCK,
                 *(args.agent_socket(Path(), k).name
                   for k in range(1, args.AGENT_MAX_CHANNELS + 1)))


QMP_TIMEOUT = 10.0  # seconds for one QMP exchange (QEMU serves one client at a time)


class QemuVMM:
    name = "qemu"

    # --- disks ------------------------------------------------------------
    def create_disk(self, image: Path, workdir: Path, size: int) -> Disk:
        """A qcow2 overlay backed by the shared image: nothing is copied."""
        disk = workdir / "disk.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
             "-b", str(image), "-o", "cluster_size=65536", str(disk), str(size)])
        return Disk(disk, "ignite-root", "qcow2")

    # --- accelerator --------------------------------------------------------
    def choose_accel(self, kernel: Path, initrd: Path | None, cache: Path,
                     force: str | None = None) -> str:
        return accel_mod.choose(kernel, initrd, cache, force)

    def kernel_args(self, accel: str) -> list[str]:
        return accel_mod.kernel_args(accel)

    # --- lifecycle ----------------------------------------------------------
    def launch(self, spec: LaunchSpec) -> int:
        self.cleanup(spec.workdir)
        cmd = args.argv(spec)
        (spec.workdir / "qemu.cmdline").write_text("\n".join(cmd) + "\n")
        # An fd QEMU takes over (the tap of a CNI attachment) survives -daemonize.
        nics = (spec.net, *spec.net.more) if spec.net is not None else ()
        fds = tuple(n.tap_fd for n in nics if n.tap_fd >= 0)
        result = run(cmd, check=False, timeout=60, pass_fds=fds)
        if result.returncode != 0:
            msg = (result.stderr or result.stdout).strip().splitlines()
            why = msg[-1] if msg else f"exit code {result.returncode}"
            why = why.removeprefix(f"{args.QEMU}: ")
            raise IgniteError(f"QEMU failed to start: {why}", details=result.stderr,
                              hint="--log-level debug shows QEMU's full command line")
        pid = self.pid(spec.workdir)
        if pid is None:
            raise IgniteError("QEMU started but exited at once",
                              hint=f"see {spec.workdir / args.CONSOLE_LOG}")
        return pid

    def pid(self, workdir: Path) -> int | None:
        try:
            pid = int((workdir / args.PIDFILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        # Guard against pid reuse: the process must be the QEMU of this VM.
        if str(workdir).encode() not in cmdline:
            return None
        with contextlib.suppress(FileNotFoundError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return None
        return pid

    @contextlib.contextmanager
    def monitor(self, workdir: Path) -> Iterator[QEMUMonitorProtocol]:
        """A QMP connection to the VM's QEMU (one client at a time: QEMU queues others)."""
        from qemu.qmp.legacy import QEMUMonitorProtocol

        mon = QEMUMonitorProtocol(str(workdir / args.QMP))
        mon.settimeout(QMP_TIMEOUT)
        try:
            mon.connect(negotiate=True)
            yield mon
        finally:
            mon.close()

    def qmp(self, workdir: Path, command: str, **arguments: object) -> object:
        with self.monitor(workdir) as mon:
            return mon.cmd(command, **arguments)

    def powerdown(self, workdir: Path) -> bool:
        try:
            self.qmp(workdir, "system_powerdown")
        except Exception as exc:  # any failure to reach QMP means: not reachable
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

    def cleanup(self, workdir: Path) -> None:
        for name in RUNTIME_FILES:
            with contextlib.suppress(FileNotFoundError):
                (workdir / name).unlink()

    def agent_sockets(self, workdir: Path) -> list[Path]:
        # Channels are numbered from 1 and added in order.
        found = []
        for k in range(1, args.AGENT_MAX_CHANNELS + 1):
            path = args.agent_socket(workdir, k)
            if not path.exists():
                break
            found.append(path)
        return found

    def add_agent_channel(self, workdir: Path) -> Path | None:
        """Hot-plug one more agent port (chardev + virtserialport) into the running
        VM; the guest agent opens it when the kernel announces it. The caller
        holds the channel-growing lock."""
        k = len(self.agent_sockets(workdir)) + 1
        if k > args.AGENT_MAX_CHANNELS or self.pid(workdir) is None:
            return None
        path = args.agent_socket(workdir, k)
        backend = {"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": str(path)}},
            "server": True, "wait": False}}
        port = dict(item.split("=", 1) for item in args.agent_port(k).split(","))
        with self.monitor(workdir) as mon:
            mon.cmd("chardev-add", id=f"agent{k}", backend=backend)
            try:
                mon.cmd("device_add", driver="virtserialport", bus=f"{args.AGENT_BUS}.0",
                        **{**port, "nr": k})
            except BaseException:  # (also Ctrl-C: no socket may stay without a port)
                with contextlib.suppress(Exception):
                    mon.cmd("chardev-remove", id=f"agent{k}")
                path.unlink(missing_ok=True)
                raise
        return path

    def console_socket(self, workdir: Path) -> Path:
        return workdir / args.CONSOLE_SOCK

    def console_log(self, workdir: Path) -> Path:
        return workdir / args.CONSOLE_LOG


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
