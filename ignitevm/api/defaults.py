"""Defaulting and validation: one place that every interface goes through."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from ignitevm.api import refs
from ignitevm.api import validation as v
from ignitevm.api.types import VM, Size, volume_id
from ignitevm.errors import InvalidInput

DEFAULT_CPUS = 1
DEFAULT_MEMORY = 512 << 20
DEFAULT_DISK_SIZE = 4 << 30
DEFAULT_KERNEL = "debian-cloud:latest"
DEFAULT_CMDLINE = "console=ttyS0 reboot=k panic=1"
MIN_MEMORY = v.MIN_MEMORY
MAX_CPUS = v.MAX_CPUS


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
        port.protocol = (port.protocol or "tcp").lower()
    if not vm.status.id_prefix:
        vm.status.id_prefix = "ignite"
    if not vm.metadata.created:
        vm.metadata.created = now()
    return vm


def validate_name(name: str, what: str = "VM") -> None:
    v.check_name(name, what)


def validate_vm(vm: VM) -> None:
    """Check a defaulted VM; raise InvalidInput naming the first problem.

    Every value that reaches QEMU, the kernel command line, the config disk,
    a host path or a terminal is checked here (see ignitevm/api/validation.py).
    """
    spec = vm.spec
    meta = vm.metadata
    if meta.name:
        v.check_name(meta.name)
    if meta.uid and not v.UID.fullmatch(meta.uid):
        raise InvalidInput(f"invalid uid {meta.uid!r}: must be 16 hex characters")
    v.check_text(meta.created, "created time", limit=64)
    v.check_labels(meta.labels)
    v.check_annotations(meta.annotations)
    v.check_id_prefix(vm.status.id_prefix)
    _validate_refs(vm)
    if not 1 <= spec.cpus <= v.MAX_CPUS:
        raise InvalidInput(f"invalid --cpus {spec.cpus}: must be between 1 and {v.MAX_CPUS}")
    if not v.MIN_MEMORY <= spec.memory.bytes <= v.MAX_MEMORY:
        raise InvalidInput(f"invalid --memory {spec.memory}: must be between 64MB and 1TB")
    if spec.memory.bytes % (1 << 20):
        raise InvalidInput(f"invalid --memory {spec.memory}: must be a whole number of MB")
    if not v.MIN_DISK <= spec.disk_size.bytes <= v.MAX_DISK:
        raise InvalidInput(f"invalid --size {spec.disk_size}: must be between 1MB and 64TB")
    v.check_cmdline(spec.kernel.cmd_line)
    _validate_ports(vm)
    validate_networks(vm)
    validate_dns(vm)
    for f in spec.copy_files:
        v.check_abs_path(f.host_path, "copyFiles hostPath")
        v.check_abs_path(f.vm_path, "copyFiles vmPath", guest=True)
    _validate_storage(vm)
    if isinstance(spec.ssh, str) and spec.ssh not in ("", "true"):
        v.check_text(spec.ssh, "ssh public key path")


def _validate_refs(vm: VM) -> None:
    spec = vm.spec
    if not spec.image.oci:
        raise InvalidInput("no image given: the OCI reference is mandatory",
                           hint="name an image: ignite run <image>")
    if spec.image.oci.startswith((".", "/")):
        v.check_text(spec.image.oci, "image path")
    else:
        refs.normalize(spec.image.oci)
    refs.normalize(spec.kernel.oci)
    if spec.sandbox.oci:
        refs.normalize(spec.sandbox.oci)


def _validate_ports(vm: VM) -> None:
    seen_ports: set[tuple[str, int]] = set()
    for p in vm.spec.network.ports:
        if p.protocol not in ("tcp", "udp"):
            raise InvalidInput(f"invalid protocol: {p.protocol!r}", hint="use tcp or udp")
        v.check_port(p.host_port, "hostPort")
        v.check_port(p.vm_port, "vmPort")
        v.check_bind_address(p.bind_address)
        key = (p.protocol, p.host_port)
        if key in seen_ports:
            raise InvalidInput(f"host port {p.host_port}/{p.protocol} is mapped twice")
        seen_ports.add(key)


# (a leading '-' is kept: names of up to 9 letters, digits and '-' were the
# rule before, and manifests that used one must still read)
_VOLUME_NAME = re.compile(r"[-A-Za-z0-9][-A-Za-z0-9_.]{0,252}")


def _validate_storage(vm: VM) -> None:
    storage = vm.spec.storage
    names: dict[str, str] = {}  # short id -> name
    for vol in storage.volumes:
        if not vol.name or vol.name in names.values():
            raise InvalidInput(f"volume names must be unique and not empty: {vol.name!r}")
        # (the name reaches neither QEMU nor the guest: a short id of it does)
        if not _VOLUME_NAME.fullmatch(vol.name):
            raise InvalidInput(f"volume name {vol.name!r}: use letters, digits, '-', '_' "
                               "and '.', not starting with '_' or '.' (at most 253)")
        if volume_id(vol.name) in names:
            raise InvalidInput(f"volume names {names[volume_id(vol.name)]!r} and "
                               f"{vol.name!r} have the same short id: rename one")
        if vol.block_device is None or not vol.block_device.path:
            raise InvalidInput(f"volume {vol.name!r} names no blockDevice.path")
        v.check_abs_path(vol.block_device.path, f"volume {vol.name!r} device path")
        names[volume_id(vol.name)] = vol.name
    for mount in storage.volume_mounts:
        if mount.name not in names.values():
            raise InvalidInput(f"volume mount {mount.name!r} names no volume")
        v.check_abs_path(mount.mount_path, "volume mount path", guest=True)
        if any(c.isspace() or c == ":" for c in mount.mount_path):
            raise InvalidInput(f"volume mount path {mount.mount_path!r} must be absolute, "
                               "without spaces or ':'")


_NET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def validate_networks(vm: VM) -> None:
    """--network NAME, --ip, --mac (the VM's interfaces on CNI networks)."""
    import ipaddress

    for att in vm.spec.network.networks:
        if att.network and not _NET_NAME.fullmatch(att.network):
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
            if not _MAC.fullmatch(mac) or int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
                raise InvalidInput(f"invalid --mac {att.mac!r}",
                                   hint="give a unicast MAC, e.g. 02:42:0a:4d:00:05")
            att.mac = mac
    names = [a.network or "default" for a in vm.spec.network.networks]
    if len(set(names)) != len(names):
        raise InvalidInput("a VM can join each network once", hint="drop the repeated --network")
    if len(names) > MAX_NETWORKS:  # (what the guest's network module takes: guest/net.h)
        raise InvalidInput(f"a VM can join at most {MAX_NETWORKS} networks ({len(names)} given)")


MAX_NETWORKS = v.GUEST_NICS


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
        if len(domain) > 253 or not _DOMAIN.fullmatch(domain):
            raise InvalidInput(f"invalid --dns-search {domain!r}: not a domain name")
    v.check_guest_dns(vm.spec.network.dns, vm.spec.network.dns_search)
