"""The interface every VMM provider fills (QEMU now, Firecracker later).

A provider knows how to make a VM's writable disk over the shared image
file, launch a VM detached from the CLI, tell whether it still runs, ask it
to power off, and kill it. Everything it keeps for a VM lives in the VM's
folder, so any later CLI process (or the daemon) can act on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from ignitevm.providers.network.base import NetPlan

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable


class Disk(NamedTuple):
    path: Path
    serial: str
    format: str = "raw"  # "raw" | "qcow2"
    readonly: bool = False
    # The shared image a qcow2 overlay reads through: named to QEMU by the
    # host (the overlay's own header, written by the VMM, is not trusted).
    backing: Path | None = None
    # Below ``backing`` (then a qcow2 layer, e.g. a snapshot's disk state),
    # further layers down to the shared raw image.
    chain: tuple[Path, ...] = ()
    size: int = 0  # a writable overlay's virtual size: what bounds the VMM's writes to it


class LaunchSpec(NamedTuple):
    uid: str
    workdir: Path
    kernel: Path
    initrd: Path | None
    cmdline: str
    cpus: int
    memory_mib: int
    disks: tuple[Disk, ...]
    accel: str  # "kvm" | "tcg"
    net: NetPlan | None = None
    sandbox: str = "jail"  # "jail" | "none" (see ignitevm.providers.sandbox)
    pass_fds: tuple[int, ...] = ()  # open fds the VMM inherits (e.g. a tap)
    cache: Path | None = None  # where the jail helper is built
    # Restoring a snapshot: QEMU waits for its state (-incoming defer), which
    # the host then feeds from a file; RAM may come from a file it maps.
    incoming: bool = False
    memory_file: Path | None = None
    memory_shared: bool = False  # map it shared (the snapshot's template) or private
    agent_channels: int = 1
    # Called once QEMU's process is started, while it sets itself up: work
    # that needs nothing of it (a clone's host key) runs beside its start.
    on_spawn: Callable[[], None] | None = None

    def inherited_fds(self) -> tuple[int, ...]:
        """Every fd the VMM takes over: ``pass_fds`` and the network's (a CNI
        tap, passt's end of a socket pair)."""
        nics = (self.net, *self.net.more) if self.net is not None else ()
        return (*self.pass_fds, *(n.tap_fd for n in nics if n.tap_fd >= 0))


class VMM(Protocol):
    name: str

    def create_disk(self, image: Path, workdir: Path, size: int) -> Disk:
        """A writable copy-on-write disk of ``size`` bytes over the read-only ``image``."""
        ...

    def choose_accel(self, kernel: Path, initrd: Path | None, cache: Path,
                     force: str | None = None, sandbox: str = "jail") -> str:
        """The accelerator to use for this kernel on this host (probed and cached)."""
        ...

    def kernel_args(self, accel: str) -> list[str]:
        """Kernel command-line words this VMM needs the guest to have."""
        ...

    def launch(self, spec: LaunchSpec) -> int:
        """Start the VM detached; return its VMM process id."""
        ...

    def pid(self, workdir: Path) -> int | None:
        """The VMM's process id if the VM runs, else None."""
        ...

    def powerdown(self, workdir: Path) -> bool:
        """Ask the guest to power off; False if the VMM could not be reached."""
        ...

    def pause(self, workdir: Path) -> str:
        """Stop the guest's CPUs if they run; return the state found ("running",
        "paused", ...)."""
        ...

    def resume(self, workdir: Path) -> str:
        """Run a paused guest's CPUs again; return the state found."""
        ...

    def run_state(self, workdir: Path) -> str:
        """The guest's CPU state: "running", "paused", or another the VMM reports."""
        ...

    def kill(self, workdir: Path) -> None:
        """End the VMM process now (no guest shutdown)."""
        ...

    def cleanup(self, workdir: Path) -> None:
        """Remove runtime files (sockets, pid file) of a VM that is not running."""
        ...

    def agent_sockets(self, workdir: Path) -> list[Path]:
        """The host ends of the guest agent's channels, one client each at a time."""
        ...

    def add_agent_channel(self, workdir: Path) -> Path | None:
        """Give the running VM one more agent channel; None if it cannot have more."""
        ...

    def pending_agent_channel(self, workdir: Path) -> Path | None:
        """The socket of a channel a client killed half-way left not yet named
        (None if there is none)."""
        ...

    def repair_agent_channel(self, workdir: Path, path: Path) -> None:
        """Finish or undo the adding of channel ``path`` (a named socket, or the
        pending one) that a client killed half-way left."""
        ...

    def console_socket(self, workdir: Path) -> Path:
        ...

    def connect_socket(self, workdir: Path, path: Path) -> socket.socket:
        """Connect to a socket of the running VMM (console, agent channel),
        refusing one that another process serves."""
        ...

    def console_log(self, workdir: Path) -> Path:
        ...
