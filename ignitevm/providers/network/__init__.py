"""Network providers behind one small interface: ``cni`` (real bridges,
addresses and port maps through the CNI plugins; root), ``user`` (QEMU
user-mode networking, no root needed) and ``none``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.errors import InvalidInput
from ignitevm.providers.network.base import Forward, NetPlan

if TYPE_CHECKING:
    from ignitevm.api.types import VM, NetworkSpec

PLUGINS = ("cni", "passt", "user", "none")
RECORD = "network.json"  # a VM's CNI attachment (see cni/vm.py)


def default_plugin() -> str:
    """cni for root, as Ignite; passt otherwise (user if passt is not
    installed, or cannot serve IPv4 here). IGNITE_NETWORK_PLUGIN overrides."""
    import shutil

    env = os.environ.get("IGNITE_NETWORK_PLUGIN", "")
    if env in PLUGINS:
        return env
    if os.geteuid() == 0:
        return "cni"
    if shutil.which("passt", path=os.environ.get("PATH", "") + ":/usr/bin") is None:
        return "user"
    from ignitevm.providers.network.passt import ipv4_routable

    return "passt" if ipv4_routable() else "user"


def plan(plugin: str, ports: list[tuple[str, str, int, int]], ssh: bool) -> NetPlan | None:
    """The network of one VM start; ports are (proto, host ip, host port, guest port)."""
    if plugin in ("", "user"):
        from ignitevm.providers.network.usermode import plan as user_plan

        return user_plan(ports, ssh)
    if plugin == "none":
        if ports or ssh:
            raise InvalidInput("--network-plugin none: port forwards (-p) and --ssh need a "
                           "network",
                           hint="use --network-plugin user, passt or cni, or leave out -p "
                           "and --ssh")
        return None
    raise InvalidInput(f"network plugin {plugin!r} is not available on this host",
                       hint=f"use --network-plugin {' or '.join(PLUGINS)}")


@contextlib.contextmanager
def attached(plugin: str, ports: list[tuple[str, str, int, int]], ssh: bool, *,
             root: Path, workdir: Path, prefix: str, uid: str, name: str = "",
             spec: NetworkSpec | None = None) -> Iterator[NetPlan | None]:
    """The network of one VM start, for the body that launches the VM: a CNI
    attachment is released if the body fails."""
    dns = tuple(spec.dns) if spec is not None else ()
    search = tuple(spec.dns_search) if spec is not None else ()
    if plugin in ("", "user", "passt"):
        check_host_ports(ports, root)
    if plugin == "passt":
        from ignitevm.providers.network.passt import attached as passt_attached

        with passt_attached(ports, ssh) as net:
            yield net._replace(dns=" ".join(dns) or net.dns, dns_search=" ".join(search))
        return
    if plugin != "cni":
        net = plan(plugin, ports, ssh)
        if net is not None and (dns or search):
            net = net._replace(dns=" ".join(dns) or net.dns, dns_search=" ".join(search))
        yield net
        return
    if os.geteuid() != 0:
        raise InvalidInput("--network-plugin cni needs root",
                           hint="run as root, or use --network-plugin user")
    from ignitevm.providers.network.cni.vm import Want
    from ignitevm.providers.network.cni.vm import attached as cni_attached

    wants = tuple(Want(a.network or "default", a.ip, a.mac)
                  for a in (spec.networks if spec is not None else ())) or (Want(),)
    with cni_attached(root, workdir, prefix, uid, _forwards(ports), wants, dns, search,
                      name=name) as net:
        yield net._replace(ssh_port=22 if ssh else 0)  # (sshd on the VM's own address)


def _forwards(ports: list[tuple[str, str, int, int]]) -> tuple[Forward, ...]:
    return tuple(Forward(proto, ip or "0.0.0.0", hp, gp) for proto, ip, hp, gp in ports)


def preflight(vm: VM, root: Path) -> None:
    """What can be checked before a VM is even made (start checks again): its
    networks exist and hold the addresses asked for, its host ports are free
    and on the host's own addresses, and it has a network if it maps ports."""
    net = vm.spec.network
    plugin = vm.status.network.plugin
    ports = [(p.protocol or "tcp", p.bind_address, p.host_port, p.vm_port) for p in net.ports]
    if plugin != "cni":
        if net.networks:
            raise InvalidInput("--network, --ip and --mac need --network-plugin cni")
        if plugin == "none":
            plan(plugin, ports, bool(vm.spec.ssh))  # (refuses -p and --ssh)
        else:
            check_host_ports(ports, root)
        return
    from ignitevm.providers.network.cni.vm import check_ports as cni_check_ports
    from ignitevm.providers.network.cni.vm import check_wants

    check_wants(root, [(a.network or "default", a.ip) for a in net.networks])
    if net.ports:
        cni_check_ports(root, None, _forwards(ports))


def check_host_ports(ports: list[tuple[str, str, int, int]], root: Path) -> None:
    """User mode and passt: QEMU or passt will listen on these host ports. The
    checks a CNI VM's ports get (cni/vm.check_ports): another VM's port map on
    one of them would take its connections (a DNAT rule does not listen, so a
    bind test alone misses it), and a bind test says now, in a line, what they
    would fail on at launch."""
    if not ports:
        return
    from ignitevm.providers.network.cni.vm import check_ports

    check_ports(root, None, _forwards(ports))


def switch(vm: VM, plugin: str, root: Path) -> None:
    """Give a stopped VM another network plugin (its old attachment, if any,
    was released when it stopped)."""
    if plugin not in PLUGINS:
        raise InvalidInput(f"unknown network plugin {plugin!r}",
                           hint=f"use --network-plugin {' or '.join(PLUGINS)}")
    vm.status.network.plugin = plugin
    preflight(vm, root)


def release(workdir: Path) -> None:
    """Release a VM's network, if it holds one (safe to repeat)."""
    if (workdir / RECORD).exists():
        from ignitevm.providers.network.cni.vm import release as cni_release

        cni_release(workdir)


def release_if_dead(workdir: Path, running: Callable[[], bool]) -> bool:
    """Release the network of a VM whose VMM is gone (died, host rebooted)."""
    if not (workdir / RECORD).exists():
        return False
    from ignitevm.providers.network.cni.vm import release_if_dead as cni_release_if_dead

    return cni_release_if_dead(workdir, running)
