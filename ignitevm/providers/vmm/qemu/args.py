"""QEMU's command line as data: one small function per concern, joined by ``argv``."""

from __future__ import annotations

from pathlib import Path

from ignitevm.errors import InvalidInput
from ignitevm.providers.vmm.qemu.running import AGENT_MAX_CHANNELS, PIDFILE, QMP, RUN_DIR
from ignitevm.providers.vmm.qemu.running import CONSOLE_LOG as CONSOLE_LOG
from ignitevm.providers.vmm.qemu.running import PIDSTART as PIDSTART

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without typing: see cli/fastpull.py)
if TYPE_CHECKING:  # (exec's fast path reads this module)
    from ignitevm.providers.network.base import NetPlan
    from ignitevm.providers.vmm.base import Disk, LaunchSpec

QEMU = "qemu-system-x86_64"

# Files kept in the VM's folder while it runs. The sockets and pid file live
# in RUN_DIR. Jailed, the host makes them all (the sockets listening, handed
# to QEMU as descriptors) and QEMU cannot write there, nor anywhere else but
# its disk overlay; unconfined, QEMU makes them itself.
# (running.py, which the fast paths read, holds those it needs)
CONSOLE_SOCK = f"{RUN_DIR}/console.sock"
QEMU_LOG = "qemu.log"
# QEMU's own seccomp filter for a jailed VM: no obsolete syscalls, no
# set*id/setsid, no fork/exec, no scheduler or rlimit changes.
SECCOMP = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
# The guest agent's channels: one virtio-serial port per concurrent host
# client. A VM boots with one (each port costs the guest ~35 ms of boot under
# TCG); clients hot-plug more while it runs, up to this many.
AGENT_PORT_NAME = "org.ignitevm.agent"
AGENT_BUS = "agentbus"


def agent_socket(workdir: Path, k: int) -> Path:
    return workdir / RUN_DIR / f"agent-{k}.sock"


def machine(accel: str) -> list[str]:
    # microvm: virtio-mmio devices, no PCI, no firmware; ACPI stays on so the
    # guest finds the virtio-mmio devices and gets a power button.
    args = ["-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on", "-nodefaults",
            "-no-user-config", "-display", "none", "-vga", "none", "-no-reboot"]
    if accel == "kvm":
        args += ["-accel", "kvm", "-cpu", "host"]
    else:
        # A capped translation cache keeps the host RSS down; see TCG_CPU.
        args += ["-accel", "tcg,tb-size=64", "-cpu", TCG_CPU]
    return args


# The guest's CPU under TCG: -cpu max gives it RDRAND (no stall on the first
# /dev/urandom read). Without ERMS (nor FSRM, which a later QEMU's max has
# and a later kernel takes as the same hint) the guest's kernel and C
# library copy and clear memory with 8-byte string moves or vector loops
# instead of ``rep movsb``/``rep stosb``: TCG runs a string move one element
# per pass, so a byte-wise one is ~8 times the passes. Measured on this
# machine: a 64 MiB pipe copy in the guest 0.74 s -> 0.24 s, a cold boot to
# exec -15 %, iperf3 through any network path ~2x. (Under KVM the host's CPU
# is given as it is: there ERMS is the fast way.) A snapshot saved with the
# earlier "max" still restores (snapshots.same_machine).
TCG_CPU = "max,-erms,-fsrm"


def resources(cpus: int, memory_mib: int) -> list[str]:
    return ["-smp", str(cpus), "-m", f"{memory_mib}M"]


# The RAM block's name when guest RAM comes from a file: the same as QEMU's
# own for `-m` alone, so that state saved by either restores in the other.
RAM_ID = "microvm.ram"


def memory(spec: LaunchSpec) -> list[str]:
    """Guest RAM mapped from a file (a snapshot's), and waiting for the state."""
    out: list[str] = []
    if spec.memory_file is not None:
        # (the template, filled in RAM at once: faulting page by page while
        # loading costs ~10x more)
        share = "on,prealloc=on" if spec.memory_shared else "off"
        out += ["-object", f"memory-backend-file,id={RAM_ID},size={spec.memory_mib}M,"
                f"mem-path={_escape(spec.memory_file)},share={share},"
                "x-use-canonical-path-for-ramblock-id=off",
                "-M", f"memory-backend={RAM_ID}"]
    if spec.incoming:
        out += ["-incoming", "defer"]
    return out


def kernel(path: Path, initrd: Path | None, cmdline: str) -> list[str]:
    args = ["-kernel", str(path), "-append", cmdline]
    if initrd is not None:
        args += ["-initrd", str(initrd)]
    return args


def disks(items: tuple[Disk, ...]) -> list[str]:
    args: list[str] = []
    for i, d in enumerate(items):
        drive = f"id=disk{i},file={_escape(d.path)},format={d.format},if=none,discard=unmap"
        if d.readonly:
            drive += ",readonly=on"
        layers = (d.backing, *d.chain) if d.backing is not None else ()
        for depth, layer in enumerate(layers, 1):
            fmt = "raw" if depth == len(layers) else "qcow2"
            key = "backing." * depth
            drive += f",{key}driver={fmt},{key}file.filename={_escape(layer)}"
        args += ["-drive", drive,
                 "-device", f"virtio-blk-device,drive=disk{i},serial={_escape(d.serial)}"]
    return args


def network(net: NetPlan | None) -> list[str]:
    if net is None:
        return []
    if net.plugin == "cni":
        # The taps in the VM's namespace, opened by the launcher and inherited.
        args = []
        for i, nic in enumerate((net, *net.more)):
            args += ["-netdev", f"tap,id=net{i},fd={nic.tap_fd}",
                     "-device", f"virtio-net-device,netdev=net{i},mac={nic.mac}"]
        return args
    if net.plugin == "passt":
        # (its end of the socket pair to passt, inherited)
        return ["-netdev", f"stream,id=net0,server=off,addr.type=fd,addr.str={net.tap_fd}",
                "-device", f"virtio-net-device,netdev=net0,mac={net.mac}"]
    if net.plugin != "user":
        raise ValueError(f"QEMU cannot set up network plugin {net.plugin!r} by itself")
    netdev = "user,id=net0"
    if net.ssh_port:
        netdev += f",hostfwd=tcp:127.0.0.1:{int(net.ssh_port)}-:22"
    for f in net.forwards:
        if f.proto not in ("tcp", "udp"):
            raise InvalidInput(f"invalid port forward protocol {f.proto!r}")
        ip = _ipv4(f.host_ip)
        netdev += f",hostfwd={f.proto}:{ip}:{int(f.host_port)}-:{int(f.guest_port)}"
    mac = _escape(net.mac)
    return ["-netdev", netdev, "-device", f"virtio-net-device,netdev=net0,mac={mac}"]


def _ipv4(text: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise InvalidInput(f"invalid port forward address {text!r}: not an IPv4 address"
                           ) from None


CONSOLE_FDSET = 7


def console(workdir: Path, log_fd: int, sock_fd: int | None = None) -> list[str]:
    # A socket for `attach`, with everything the guest prints also logged for
    # `logs`, whether or not anyone is attached: into the pipe ``log_fd`` of
    # the console writer (``ignite-jail -c``, jailed or not), which keeps the
    # log bounded; QEMU never opens the log itself.
    # ``sock_fd``: the socket, made by the host at CONSOLE_SOCK and listening.
    sock = workdir / CONSOLE_SOCK
    where = f"path={_escape(sock)}" if sock_fd is None else f"fd={int(sock_fd)}"
    return ["-add-fd", f"fd={int(log_fd)},set={CONSOLE_FDSET}", "-chardev",
            f"socket,id=console,{where},server=on,wait=off,"
            f"logfile=/dev/fdset/{CONSOLE_FDSET},logappend=on",
            "-serial", "chardev:console"]


def agent(workdir: Path, channels: int = 1, fds: tuple[int, ...] = ()) -> list[str]:
    """The agent's bus and its first ``channels`` ports; ``fds``: their sockets,
    made by the host and listening (else QEMU makes them)."""
    args = ["-device", f"virtio-serial-device,id={AGENT_BUS},max_ports={AGENT_MAX_CHANNELS + 1}"]
    for k in range(1, channels + 1):
        where = (f"fd={int(fds[k - 1])}" if fds
                 else f"path={_escape(agent_socket(workdir, k))}")
        args += ["-chardev", f"socket,id=agent{k},{where},server=on,wait=off",
                 "-device", f"virtserialport,{agent_port(k)}"]
    return args


def agent_port(k: int) -> str:
    """The virtserialport properties of agent channel ``k`` (also used to hot-plug)."""
    return f"id=agentport{k},chardev=agent{k},name={AGENT_PORT_NAME}.{k},nr={k}"


def control(workdir: Path, fd: int | None = None) -> list[str]:
    if fd is not None:  # a listening socket made by the host at workdir / QMP
        return ["-chardev", f"socket,id=qmp,fd={fd},server=on,wait=off",
                "-mon", "chardev=qmp,mode=control"]
    return ["-qmp", f"unix:{_escape(workdir / QMP)},server=on,wait=off"]


def process(spec: LaunchSpec) -> list[str]:
    # Jailed, the jail helper detaches QEMU (-daemonize forks and calls
    # setsid, which the seccomp filter forbids) and reports its pid to the
    # host, which writes the pid file.
    uid = _escape(spec.uid)
    own = ["-pidfile", str(spec.workdir / PIDFILE), "-daemonize"] if spec.sandbox == "none" else []
    return ["-name", f"ignite-{uid},process=ignite-{uid}", *own]


def sandbox(mode: str) -> list[str]:
    return [] if mode == "none" else ["-sandbox", SECCOMP]


def argv(spec: LaunchSpec, qemu: str = QEMU, qmp_fd: int | None = None, *,
         console_fd: int, socket_fds: tuple[int, ...] = ()) -> list[str]:
    """``console_fd``: the console writer's pipe; ``socket_fds``: listening
    sockets made by the host, the console's then one per agent channel
    (jailed); none: QEMU makes its sockets."""
    return checked([
        qemu,
        *machine(spec.accel),
        *resources(spec.cpus, spec.memory_mib),
        *memory(spec),
        *kernel(spec.kernel, spec.initrd, spec.cmdline),
        *disks(spec.disks),
        *network(spec.net),
        *console(spec.workdir, console_fd, socket_fds[0] if socket_fds else None),
        *agent(spec.workdir, spec.agent_channels, socket_fds[1:]),
        *control(spec.workdir, qmp_fd),
        *sandbox(spec.sandbox),
        *process(spec),
    ])


def _escape(value: Path | str) -> str:
    """One value inside a QEMU option string (``key=VALUE,...``).

    QEMU separates options with ',' and reads a literal comma as ',,'; a
    newline or NUL can never be part of one. Every value that did not come
    from this module goes through here."""
    text = str(value)
    if any(ord(c) < 0x20 for c in text):
        raise InvalidInput(f"refusing QEMU option value {text!r}: it holds a control character")
    return text.replace(",", ",,")


def checked(words: list[str]) -> list[str]:
    """The last line of defence before exec: no argument holds a NUL, newline or
    other control character (the API layer refuses them first)."""
    for word in words:
        if any(ord(c) < 0x20 for c in word):
            raise InvalidInput(f"refusing to start QEMU: argument {word!r} holds a "
                               "control character")
    return words
