"""``ignite network ...``: create, ls, inspect, rm, prune (CNI networks)."""

from __future__ import annotations

import argparse
import json

from ignitevm.api.types import VM
from ignitevm.cli.common import context, emit, table
from ignitevm.operations.context import Context


def _users(ctx: Context) -> dict[str, list[str]]:
    """Network name -> the VMs that ask for it or hold an attachment on it."""
    from ignitevm.operations.spares import spares_of
    from ignitevm.providers.network.cni import vm as cnivm

    out: dict[str, list[str]] = {}
    for vm in [*ctx.store.list(VM), *spares_of(ctx, None)]:
        names = {a.network or "default" for a in vm.spec.network.networks}
        if vm.status.network.plugin == "cni" and not names:
            names = {"default"}
        rec = cnivm.read(ctx.store.dir(vm)) or {}
        names |= {a.get("network", "default") for a in rec.get("attachments") or []}
        for n in names:
            out.setdefault(n, []).append(vm.metadata.name)
    return out


def cmd_create(args: argparse.Namespace) -> int:
    from ignitevm.log import log
    from ignitevm.providers.network.cni import networks

    ctx = context(args)
    net = networks.create(ctx.root, args.name, args.subnet, args.gateway or "", args.internal)
    log.info("Created network %r (%s, bridge %s%s)", net.name, net.subnet, net.bridge,
             ", internal" if net.internal else "")
    if args.quiet:
        emit(net.name)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from ignitevm.providers.network.cni import networks

    ctx = context(args)
    nets = networks.listing(ctx.root)
    if args.quiet:
        for n in nets:
            emit(n.name)
        return 0
    users = _users(ctx)
    if args.output == "json":
        emit(json.dumps([_info(n, users) for n in nets], indent=2))
        return 0
    emit(table(["NAME", "SUBNET", "GATEWAY", "BRIDGE", "INTERNAL", "VMS", "OWN"],
               [[n.name, n.subnet, n.gateway, n.bridge, "yes" if n.internal else "no",
                 str(len(users.get(n.name, []))), "yes" if n.own else "no"] for n in nets]))
    return 0


def _info(net: object, users: dict[str, list[str]]) -> dict[str, object]:
    from ignitevm.providers.network.cni.networks import Network

    assert isinstance(net, Network)
    return {"name": net.name, "subnet": net.subnet, "gateway": net.gateway,
            "bridge": net.bridge, "internal": net.internal, "own": net.own,
            "vms": sorted(users.get(net.name, [])), "conflist": net.conf}


def cmd_inspect(args: argparse.Namespace) -> int:
    from ignitevm.providers.network.cni import networks

    ctx = context(args)
    emit(json.dumps(_info(networks.get(ctx.root, args.network), _users(ctx)), indent=2))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from ignitevm.log import log
    from ignitevm.providers.network.cni import networks

    ctx = context(args)
    from ignitevm.operations.spares import prune_all

    prune_all(ctx)  # (a dead spare's lease is no use)
    users = _users(ctx)
    for name in args.networks:  # all checked first: one refusal changes nothing
        networks.remove_check(ctx.root, name, users.get(name, []))
    for name in args.networks:
        networks.remove(ctx.root, name, users.get(name, []))
        log.info("Removed network %r", name)
        if args.quiet:
            emit(name)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from ignitevm.log import log
    from ignitevm.providers.network.cni import conflist, networks

    ctx = context(args)
    from ignitevm.operations.spares import prune_all

    prune_all(ctx)  # (a dead spare's lease is no use)
    users = _users(ctx)
    for net in networks.listing(ctx.root):
        if net.own and net.name != conflist.DEFAULT and not users.get(net.name):
            networks.remove(ctx.root, net.name, [])
            log.info("Removed network %r", net.name)
            if args.quiet:
                emit(net.name)
    return 0
