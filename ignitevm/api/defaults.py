"""Defaulting and validation: one place that every interface goes through."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from ignitevm.api import refs
from ignitevm.api.types import VM, Size
from ignitevm.errors import InvalidInput

DEFAULT_CPUS = 1
DEFAULT_MEMORY = 512 << 20
DEFAULT_DISK_SIZE = 4 << 30
DEFAULT_KERNEL = "debian-cloud:latest"
DEFAULT_CMDLINE = "console=ttyS0 reboot=k panic=1"
MIN_MEMORY = 64 << 20
MAX_CPUS = 64

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_vm(vm: VM) -> VM:
    """Fill every field a user may leave out; returns the same object."""
    spec = vm.spec
    if spec.cpus == 0:
        spec.cpus = DEFAULT_CPUS
    if spec.memory.bytes == 0:
        spec.memory = Size(DEFAULT_MEMORY)
    if spec.disk_size.bytes == 0:
        spec.disk_size = Size(DEFAULT_DISK_SIZE)
    if not spec.kernel.oci:
        spec.kernel.oci = DEFAULT_KERNEL
    if not spec.kernel.cmd_line:
        spec.kernel.cmd_line = DEFAULT_CMDLINE
    if spec.image.oci and not spec.image.oci.startswith((".", "/")):
        # (a local archive path is resolved to an image name when it is imported)
        spec.image.oci = refs.normalize(spec.image.oci)
    spec.kernel.oci = refs.normalize(spec.kernel.oci)
    for port in spec.network.ports:
        port.protocol = port.protocol or "tcp"
    if not vm.status.id_prefix:
        vm.status.id_prefix = "ignite"
    if not vm.metadata.created:
        vm.metadata.created = now()
    return vm


def validate_name(name: str, what: str = "VM") -> None:
    if len(name) > 253 or not _DNS1123.match(name):
        raise InvalidInput(
            f"invalid {what} name {name!r}",
            hint="use lower-case letters, digits, '-' and '.', starting and ending "
            "with a letter or digit (at most 253 characters)",
        )


def validate_vm(vm: VM) -> None:
    """Check a defaulted VM; raise InvalidInput naming the first problem."""
    spec = vm.spec
    if vm.metadata.name:
        validate_name(vm.metadata.name)
    if not spec.image.oci:
        raise InvalidInput("no image given: the OCI reference is mandatory",
                           hint="name an image: ignite run <image>")
    if not 1 <= spec.cpus <= MAX_CPUS:
        raise InvalidInput(f"invalid --cpus {spec.cpus}: must be between 1 and {MAX_CPUS}")
    if spec.memory.bytes < MIN_MEMORY:
        raise InvalidInput(f"invalid --memory {spec.memory}: a VM needs at least 64MB")
    if spec.memory.bytes % (1 << 20):
        raise InvalidInput(f"invalid --memory {spec.memory}: must be a whole number of MB")
    seen_ports: set[tuple[str, int]] = set()
    for p in spec.network.ports:
        if p.protocol not in ("tcp", "udp"):
            raise InvalidInput(f"invalid protocol: {p.protocol!r}", hint="use tcp or udp")
        if not (0 < p.host_port < 65536 and 0 < p.vm_port < 65536):
            raise InvalidInput(f"invalid port mapping {p.host_port}:{p.vm_port}")
        key = (p.protocol, p.host_port)
        if key in seen_ports:
            raise InvalidInput(f"host port {p.host_port}/{p.protocol} is mapped twice")
        seen_ports.add(key)
    validate_networks(vm)
    validate_dns(vm)
    for f in spec.copy_files:
        if not f.host_path.startswith("/") or not f.vm_path.startswith("/"):
            raise InvalidInput("--copy-files path arguments must be absolute",
                               hint="write /host/path:/vm/path")
    names = set()
    for vol in spec.storage.volumes:
        if not vol.name or vol.name in names:
            raise InvalidInput(f"volume names must be unique and not empty: {vol.name!r}")
        names.add(vol.name)
    for mount in spec.storage.volume_mounts:
        if mount.name not in names:
            raise InvalidInput(f"volume mount {mount.name!r} names no volume")
        if not mount.mount_path.startswith("/") or any(c.isspace() for c in mount.mount_path):
            raise InvalidInput(f"volume mount path {mount.mount_path!r} must be absolute, "
                               "without spaces")
    for vol in spec.storage.volumes:
        if len(vol.name) > 9 or not vol.name.replace("-", "").isalnum():
            raise InvalidInput(f"volume name {vol.name!r}: use at most 9 letters or digits")
    if vm.metadata.uid and not re.match(r"^[a-z0-9]{16}$", vm.metadata.uid):
        raise InvalidInput(f"invalid uid {vm.metadata.uid!r}: must be 16 hex characters")


_NET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def validate_networks(vm: VM) -> None:
    """--network NAME, --ip, --mac (the VM's interfaces on CNI networks)."""
    import ipaddress

    for att in vm.spec.network.networks:
        if att.network and not _NET_NAME.match(att.network):
            raise InvalidInput(f"invalid network name {att.network!r}",
                               hint="see: ignite network ls")
        if att.ip:
            try:
                ip = ipaddress.ip_address(att.ip)
            except ValueError:
                raise InvalidInput(f"invalid --ip {att.ip!r}: not an IP address") from None
            if ip.version != 4:
                raise InvalidInput(f"invalid --ip {att.ip!r}: an IPv4 address is needed")
        if att.mac:
            mac = att.mac.lower()
            if not _MAC.match(mac) or int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
                raise InvalidInput(f"invalid --mac {att.mac!r}",
                                   hint="give a unicast MAC, e.g. 02:42:0a:4d:00:05")
            att.mac = mac
    names = [a.network or "default" for a in vm.spec.network.networks]
    if len(set(names)) != len(names):
        raise InvalidInput("a VM can join each network once", hint="drop the repeated --network")


_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")


def validate_dns(vm: VM) -> None:
    """--dns (name server addresses) and --dns-search (domains)."""
    import ipaddress

    for server in vm.spec.network.dns:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidInput(f"invalid --dns {server!r}: not an IP address") from None
    for domain in vm.spec.network.dns_search:
        if len(domain) > 253 or not _DOMAIN.match(domain):
            raise InvalidInput(f"invalid --dns-search {domain!r}: not a domain name")
