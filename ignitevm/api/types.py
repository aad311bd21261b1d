"""Typed records for the API objects, in the v1alpha4 JSON shape.

Field names are snake_case here and camelCase on the wire (``disk_size`` ->
``diskSize``). Sizes are :class:`Size` values serialised as ``512MB``.
"""

from __future__ import annotations

from typing import Any

# isort: off
from ignitevm.api import msgspec_import  # noqa: F401  (first: see there)
import msgspec
# isort: on

from ignitevm.api.platform import checked_platform
from ignitevm.util.sizes import format_size, human_size, parse_size

GROUP = "ignite.weave.works"
VERSION = "v1alpha4"
API_VERSION = f"{GROUP}/{VERSION}"


class Size:
    """A byte count that serialises in Ignite's ``512MB`` form."""

    __slots__ = ("bytes",)

    def __init__(self, n: int = 0):
        self.bytes = int(n)

    @classmethod
    def parse(cls, text: str | int, what: str = "size") -> Size:
        return cls(parse_size(text, what))

    def __str__(self) -> str:  # the template/display form
        return human_size(self.bytes)

    def __repr__(self) -> str:
        return f"Size({format_size(self.bytes)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Size) and other.bytes == self.bytes

    def __hash__(self) -> int:
        return hash(self.bytes)

    @property
    def mib(self) -> int:
        return self.bytes >> 20


class _Base(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    pass


class ObjectMeta(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    name: str = ""
    uid: str = ""
    created: str = ""
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class OCIRef(_Base):
    oci: str = ""


class KernelRef(_Base):
    oci: str = ""
    cmd_line: str = ""


class PortMapping(_Base):
    bind_address: str = ""
    host_port: int = 0
    vm_port: int = 0
    protocol: str = ""


class NetworkAttachment(_Base):
    """One interface of a CNI VM: eth0 on the first, eth1 on the next…"""

    network: str = ""  # a network's name ("" or "default": Ignite's)
    ip: str = ""  # the address to ask for
    mac: str = ""


class NetworkSpec(_Base):
    ports: list[PortMapping] = []
    # Ours, not in Ignite's v1alpha4 (left out when empty, so its files read
    # and write unchanged):
    networks: list[NetworkAttachment] = []
    dns: list[str] = []
    dns_search: list[str] = []


class BlockDevice(_Base):
    path: str = ""


class Volume(_Base):
    name: str = ""
    block_device: BlockDevice | None = None


# A volume's disk serial in the guest: a virtio disk's serial holds at most
# 20 bytes, too few for the names manifests give volumes, so it carries a
# short stable id of the name, which the config disk's mount list names too.
VOLUME_SERIAL = "ignite-vol-{}"


def volume_id(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()[:8]


class VolumeMount(_Base):
    name: str = ""
    mount_path: str = ""


class StorageSpec(_Base):
    volumes: list[Volume] = []
    volume_mounts: list[VolumeMount] = []


class FileMapping(_Base):
    host_path: str = ""
    vm_path: str = ""


class VMSpec(_Base):
    image: OCIRef = msgspec.field(default_factory=OCIRef)
    sandbox: OCIRef = msgspec.field(default_factory=OCIRef)
    kernel: KernelRef = msgspec.field(default_factory=KernelRef)
    cpus: int = 0
    memory: Size = msgspec.field(default_factory=Size)
    disk_size: Size = msgspec.field(default_factory=Size)
    network: NetworkSpec = msgspec.field(default_factory=NetworkSpec)
    storage: StorageSpec = msgspec.field(default_factory=StorageSpec)
    copy_files: list[FileMapping] = []
    # True = generate a key pair; a string = path of a public key to install.
    ssh: bool | str | None = None


class Runtime(_Base):
    id: str = ""
    name: str = ""
    # Which accelerator the VMM used on its last start (kvm or tcg); ours, not Ignite's.
    accel: str = ""


class NetworkStatus(_Base):
    plugin: str = ""
    ip_addresses: list[str] | None = None


class OCISource(msgspec.Struct, rename="camel", kw_only=True):
    id: str | None = None
    size: Size = msgspec.field(default_factory=Size)


class VMStatus(msgspec.Struct, rename="camel", kw_only=True):
    running: bool = False
    paused: bool = False  # running, its CPUs stopped by `ignite pause`
    runtime: Runtime = msgspec.field(default_factory=Runtime)
    start_time: str | None = None
    network: NetworkStatus = msgspec.field(default_factory=NetworkStatus)
    image: OCISource = msgspec.field(default_factory=OCISource)
    kernel: OCISource = msgspec.field(default_factory=OCISource)
    id_prefix: str = ""


class VM(msgspec.Struct, rename="camel", kw_only=True):
    kind: str = "VM"
    api_version: str = API_VERSION
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: VMSpec = msgspec.field(default_factory=VMSpec)
    status: VMStatus = msgspec.field(default_factory=VMStatus)


class ImageSpec(_Base):
    oci: str = ""


class ImageStatus(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    oci_source: OCISource = msgspec.field(default_factory=OCISource)
    # Ours, not Ignite's: "os/arch[/variant]" from the image config ("" when unknown, as
    # in records made before it was kept; omitted then). Read as anything (a damaged
    # record, a later form), then checked: what is not a platform reads as unknown.
    platform: Any = ""

    def __post_init__(self) -> None:
        if self.platform != "":
            self.platform = checked_platform(self.platform)


class Image(msgspec.Struct, rename="camel", kw_only=True):
    kind: str = "Image"
    api_version: str = API_VERSION
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: ImageSpec = msgspec.field(default_factory=ImageSpec)
    status: ImageStatus = msgspec.field(default_factory=ImageStatus)


class KernelSpec(_Base):
    oci: str = ""


class KernelStatus(msgspec.Struct, rename="camel", kw_only=True):
    version: str = ""  # (always written, as Ignite does: so is platform then)
    oci_source: OCISource = msgspec.field(default_factory=OCISource)
    platform: Any = ""  # (as ImageStatus.platform; "" for a kernel file or Debian's)

    def __post_init__(self) -> None:
        if self.platform != "":
            self.platform = checked_platform(self.platform)


class Kernel(msgspec.Struct, rename="camel", kw_only=True):
    kind: str = "Kernel"
    api_version: str = API_VERSION
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: KernelSpec = msgspec.field(default_factory=KernelSpec)
    status: KernelStatus = msgspec.field(default_factory=KernelStatus)


class SnapshotFile(_Base):
    """One file of a snapshot's folder and its digest, checked before use."""

    name: str = ""
    size: int = 0
    digest: str = ""  # sha256:<hex>


class SnapshotSpec(_Base):
    """What a restore needs exactly as it was (ours; Ignite had no snapshots)."""

    vm: str = ""  # the source VM's name and UID, for people
    vm_uid: str = ""
    vm_spec: VMSpec = msgspec.field(default_factory=VMSpec)
    network_plugin: str = ""
    nics: int = 0  # network interfaces the machine has
    agent_channels: int = 1
    image: OCISource = msgspec.field(default_factory=OCISource)
    kernel: OCISource = msgspec.field(default_factory=OCISource)
    qemu_version: str = ""
    machine: str = ""  # the VMM's machine and device configuration, as a digest
    accel: str = ""
    cmd_line: str = ""  # the guest kernel's command line
    # The initramfs the source booted (for people: its code is in the saved
    # RAM, so a restore does not read it; a clone's cold restart uses the
    # current one).
    initramfs: str = ""
    shared_memory: bool = False  # RAM in a file the clones map (state holds no RAM)
    # Clones kept started and paused, for `run --from-snapshot` to take
    # (operations/spares.py; a setting, not part of what a restore needs).
    spares: int = 0
    spares_sandbox: str = ""  # how they are confined ("jail" | "none"): a run must match


class SnapshotStatus(msgspec.Struct, rename="camel", kw_only=True):
    files: list[SnapshotFile] = []
    size: Size = msgspec.field(default_factory=Size)


class Snapshot(msgspec.Struct, rename="camel", kw_only=True):
    kind: str = "Snapshot"
    api_version: str = API_VERSION
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: SnapshotSpec = msgspec.field(default_factory=SnapshotSpec)
    status: SnapshotStatus = msgspec.field(default_factory=SnapshotStatus)


Object = VM | Image | Kernel | Snapshot
KINDS: dict[str, type[VM] | type[Image] | type[Kernel] | type[Snapshot]] = {
    "VM": VM, "Image": Image, "Kernel": Kernel, "Snapshot": Snapshot,
}
