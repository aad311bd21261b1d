"""Build a VM object from flags, a --config manifest and the Configuration defaults.

Precedence: built-in defaults < Configuration ``vmDefaults`` < ``--config``
file < flags given on the command line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ignitevm.api import codec
from ignitevm.api.types import VM, BlockDevice, FileMapping, PortMapping, Size, Volume, VolumeMount
from ignitevm.errors import InvalidInput

if TYPE_CHECKING:
    import argparse

_PORT_RE = re.compile(
    r"^(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}):)?(?P<host>\d+):(?P<vm>\d+)(?:/(?P<proto>\w+))?$")


def load_vm_manifest(path: str) -> VM:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path} is not UTF-8 text (byte {exc.start + 1})",
                           hint="a manifest is YAML or JSON in UTF-8") from None
    data = codec.load_manifest(text, path)
    if data.get("kind") != "VM":
        raise InvalidInput(f"{path} is a {data.get('kind')}, not a VM")
    vm: VM = codec.decode_object(data, path)
    return vm


def parse_ports(values: list[str]) -> list[PortMapping]:
    out = []
    for value in values:
        for item in filter(None, value.split(",")):
            m = _PORT_RE.match(item.strip())
            if not m:
                raise InvalidInput(f"invalid port mapping {item!r}",
                                   hint="write [hostIP:]hostPort:vmPort[/tcp|udp]")
            out.append(PortMapping(bind_address=m["ip"] or "", host_port=int(m["host"]),
                                   vm_port=int(m["vm"]), protocol=(m["proto"] or "tcp").lower()))
    return out


def parse_copy_files(values: list[str]) -> list[FileMapping]:
    out = []
    for value in values:
        for item in filter(None, value.split(",")):
            parts = item.split(":")
            if len(parts) != 2 or not all(parts):
                raise InvalidInput(f"invalid --copy-files value {item!r}",
                                   hint="write /host/path:/vm/path")
            if not parts[0].startswith("/") or not parts[1].startswith("/"):
                raise InvalidInput("--copy-files path arguments must be absolute",
                                   hint=f"write absolute paths, not {item!r}")
            out.append(FileMapping(host_path=parts[0], vm_path=parts[1]))
    return out


def parse_labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise InvalidInput(f"invalid label value {value!r}",
                               hint="supported syntax: --label <key>=<value>")
        labels[key] = val
    return labels


def parse_volumes(value: str) -> tuple[list[Volume], list[VolumeMount]]:
    import stat

    volumes, mounts = [], []
    for i, item in enumerate(filter(None, value.split(","))):
        host, sep, mount = item.partition(":")
        if not sep or not host.startswith("/") or not mount.startswith("/"):
            raise InvalidInput(f"invalid --volumes value {item!r}",
                               hint="write /dev/hostblockdevice:/vm/mountpoint")
        try:
            is_block = stat.S_ISBLK(Path(host).stat().st_mode)
        except OSError:
            is_block = False
        if not is_block:
            raise InvalidInput(f"--volumes: {host} is not a block device on this host")
        name = f"volume{i}"
        volumes.append(Volume(name=name, block_device=BlockDevice(path=host)))
        mounts.append(VolumeMount(name=name, mount_path=mount))
    return volumes, mounts


def _apply_configuration(args: argparse.Namespace, vm: VM) -> None:
    """The host Configuration: vmDefaults, networkPlugin, idPrefix (runtime: containerd says
    where images come from, see cli.image.containerd_options; VMs run under QEMU)."""
    from ignitevm.api.types import VMSpec
    from ignitevm.cli.config import load_configuration
    from ignitevm.log import log
    from ignitevm.providers.network import PLUGINS

    cfg = load_configuration(getattr(args, "ignite_config", None))
    spec = (cfg or {}).get("spec") or {}
    if spec.get("vmDefaults"):
        vm.spec = codec.from_builtins(spec["vmDefaults"], VMSpec, "Configuration vmDefaults")
    plugin = spec.get("networkPlugin")
    if plugin in PLUGINS:
        vm.status.network.plugin = plugin
    elif plugin:
        log.warning("Configuration networkPlugin %r is not available here; using the default",
                    plugin)
    if spec.get("idPrefix"):
        vm.status.id_prefix = str(spec["idPrefix"])
    if spec.get("runtime") not in (None, "", "qemu", "containerd"):
        log.warning("Configuration runtime %r is ignored: VMs run under QEMU directly",
                    spec["runtime"])


def vm_from_args(args: argparse.Namespace) -> VM:
    vm = VM()
    _apply_configuration(args, vm)
    if args.config:
        manifest = load_vm_manifest(args.config)
        base = codec.to_builtins(vm)
        patch = codec.to_builtins(manifest)
        vm = codec.from_builtins(_merge(base, _strip_empty(patch)), VM, args.config)
    s = vm.spec
    if args.image:
        s.image.oci = args.image
    if args.name:
        vm.metadata.name = args.name
    if args.require_name and not vm.metadata.name:
        raise InvalidInput("must set VM name, flag --require-name set",
                           hint="give one with --name")
    if args.cpus is not None:
        s.cpus = args.cpus
        if args.cpus < 1:
            raise InvalidInput(f"invalid --cpus {args.cpus}: must be at least 1")
    if args.memory is not None:
        s.memory = Size.parse(args.memory, "--memory")
    if args.size is not None:
        s.disk_size = Size.parse(args.size, "--size")
    if args.kernel_image:
        s.kernel.oci = args.kernel_image
    if args.kernel_args:
        s.kernel.cmd_line = args.kernel_args
    if args.ports:
        s.network.ports = parse_ports(args.ports)
    _network_flags(args, vm)
    if args.copy_files:
        s.copy_files = parse_copy_files(args.copy_files)
    if args.volumes:
        s.storage.volumes, s.storage.volume_mounts = parse_volumes(args.volumes)
    if args.ssh is not None:
        # bare --ssh (made --ssh=true when the command line was read): generate keys
        s.ssh = True if args.ssh in (True, "true") else args.ssh
    if args.sandbox_image:
        s.sandbox.oci = args.sandbox_image
    if args.label:
        vm.metadata.labels = {**(vm.metadata.labels or {}), **parse_labels(args.label)}
    if args.id_prefix:
        vm.status.id_prefix = args.id_prefix
    if args.runtime and args.runtime not in ("qemu", "containerd"):
        raise InvalidInput(f"runtime {args.runtime!r} is not available here",
                           hint="VMs run under QEMU directly; --runtime containerd takes "
                           "the image and kernel from containerd's store")
    if args.network_plugin:
        from ignitevm.providers.network import PLUGINS

        if args.network_plugin not in PLUGINS:
            raise InvalidInput(
                f"unknown network plugin {args.network_plugin!r}",
                hint="use --network-plugin cni (the default for root: a bridge, as Ignite), "
                "passt (user-mode networking without root, the default otherwise), user "
                "(QEMU's slirp NAT) or none")
        vm.status.network.plugin = args.network_plugin
    if not s.image.oci:
        raise InvalidInput("no image given", hint="ignite run <image> (see: ignite image ls)")
    return vm


def _network_flags(args: argparse.Namespace, vm: VM) -> None:
    """--network (repeatable: eth0, eth1…), --ip and --mac (of the first),
    --dns, --dns-search (repeatable)."""
    from ignitevm.api.types import NetworkAttachment

    net = vm.spec.network
    if getattr(args, "network", None):
        net.networks = [NetworkAttachment(network=n) for n in args.network]
    if getattr(args, "ip", None) or getattr(args, "mac", None):
        if not net.networks:
            net.networks = [NetworkAttachment(network="default")]
        net.networks[0].ip = args.ip or net.networks[0].ip
        net.networks[0].mac = args.mac or net.networks[0].mac
    if getattr(args, "dns", None):
        net.dns = list(args.dns)
    if getattr(args, "dns_search", None):
        net.dns_search = list(args.dns_search)
    if net.networks and not vm.status.network.plugin:
        vm.status.network.plugin = "cni"  # (asking for a network means CNI)


def _strip_empty(d: Any) -> Any:
    """Drop zero values from a decoded manifest so that they do not override defaults."""
    if isinstance(d, dict):
        return {k: _strip_empty(v) for k, v in d.items()
                if v not in (None, "", 0, "0B", [], {}) and k != "status"}
    return d


def _merge(base: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386) of ``patch`` onto ``base``."""
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return patch
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(base.get(k), v)
    return out
