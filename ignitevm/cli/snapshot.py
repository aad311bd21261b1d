"""``ignite snapshot ...``: create, ls, inspect, rm (and ``run --from-snapshot``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ignitevm.api.types import VM, Snapshot
from ignitevm.cli.common import context, dump, emit, list_objects
from ignitevm.util.human import age

if TYPE_CHECKING:
    import argparse


def cmd_create(args: argparse.Namespace) -> int:
    from ignitevm.cli.common import sandbox_mode
    from ignitevm.operations import snapshots

    ctx = context(args)
    ctx.sandbox = sandbox_mode(args)  # (the template QEMU is confined as VMs are)
    vm = ctx.store.resolve(VM, args.vm)
    if args.spares:
        from ignitevm.operations import sparefill

        sparefill.check_count(args.spares)
    snap = snapshots.create(ctx, vm, args.name, stop=args.stop, shared=not args.no_shared_memory)
    if args.spares:
        snap = sparefill.set_count(ctx, snap, args.spares)
        sparefill.fill_later(ctx, snap, delay=0.0)
    emit(snap.metadata.uid if args.quiet else snap.metadata.name)
    return 0


def cmd_spares(args: argparse.Namespace) -> int:
    """Set how many spares a snapshot keeps, and make or remove them now."""
    from ignitevm.cli.common import starting_context
    from ignitevm.log import log
    from ignitevm.operations import snapshots, sparefill, spares

    ctx = starting_context(args)  # (the spares' QEMU is confined as VMs are)
    sparefill.check_count(args.count)
    snap = ctx.store.resolve(Snapshot, args.snapshot)
    before = (snap.spec.spares, snap.spec.spares_sandbox)
    with snapshots.held(ctx, snap):
        snap = sparefill.set_count(ctx, snap, args.count)
    if args.count:
        log.info("Starting %s of snapshot %r", spares.count_text(args.count),
                 snap.metadata.name)
    try:
        n = sparefill.fill(ctx, snap.metadata.uid, wait=True)
    except BaseException:  # (the count asked before stays, and what it keeps)
        import contextlib

        with contextlib.suppress(Exception):
            snap = sparefill.set_count(ctx, snap, *before)
            sparefill.fill(ctx, snap.metadata.uid, wait=True)
        raise
    log.info("Snapshot %r keeps %s ready", snap.metadata.name, spares.count_text(n))
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from ignitevm.operations.spares import ready

    ctx = context(args)
    return list_objects(args, Snapshot, ["SNAPSHOT ID", "NAME", "VM", "CREATED", "SIZE",
                                         "MEMORY", "SPARES"],
                        lambda o: [o.metadata.uid, o.metadata.name, o.spec.vm,
                                   age(o.metadata.created), str(o.status.size),
                                   str(o.spec.vm_spec.memory),
                                   f"{len(ready(ctx, o))}/{o.spec.spares}" if o.spec.spares
                                   else "-"])


def cmd_inspect(args: argparse.Namespace) -> int:
    ctx = context(args)
    emit(dump(ctx.store.resolve(Snapshot, args.snapshot), args.output))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from ignitevm.operations import snapshots

    ctx = context(args)
    targets = [ctx.store.resolve(Snapshot, q) for q in args.snapshots]
    for snap in targets:
        snapshots.remove(ctx, snap, force=args.force)
        emit(snap.metadata.uid)
    return 0


def run_clone(args: argparse.Namespace) -> int:
    """``ignite run --from-snapshot NAME``: a new VM from a snapshot."""
    from ignitevm.cli.common import starting_context
    from ignitevm.cli.vmspec import parse_labels, parse_ports
    from ignitevm.errors import InvalidInput
    from ignitevm.operations import clones

    if args.image or args.config:
        raise InvalidInput("give either an image or --from-snapshot, not both")
    for flag in ("kernel_image", "kernel_args", "size", "volumes", "ip", "mac"):
        if getattr(args, flag, None):
            raise InvalidInput(f"--{flag.replace('_', '-')} cannot be used with "
                               "--from-snapshot", hint="a clone has its snapshot's kernel, "
                               "disk and devices; it gets a new address and MAC")
    if args.copy_files or args.ssh:
        raise InvalidInput("--copy-files and --ssh cannot be used with --from-snapshot",
                           hint="copy files in with ignite cp once it runs")
    for flag in ("network", "dns", "dns_search", "id_prefix"):
        if getattr(args, flag, None):
            raise InvalidInput(f"--{flag.replace('_', '-')} cannot be used with "
                               "--from-snapshot", hint="a clone joins its snapshot's networks "
                               "with their name servers (each with a new address and MAC); "
                               "run the image instead for others")
    for flag in ("pull", "runtime", "containerd_socket", "containerd_namespace",
                 "registry_config_dir", "insecure_registry", "sandbox_image"):
        value = getattr(args, flag, None)
        if value and not (flag == "pull" and value == "missing"):  # (--pull's default)
            raise InvalidInput(f"--{flag.replace('_', '-')} cannot be used with "
                               "--from-snapshot", hint="a clone pulls nothing: it starts "
                               "from the snapshot's own files")
    if getattr(args, "require_name", False) and not args.name:
        raise InvalidInput("must set VM name, flag --require-name set",
                           hint="give one with --name")
    ctx = starting_context(args)
    plugin = args.network_plugin or ""
    from ignitevm.providers.network import PLUGINS

    if plugin and plugin not in PLUGINS:
        raise InvalidInput(f"unknown network plugin {plugin!r}",
                           hint=f"use one of: {', '.join(PLUGINS)}")
    vm = clones.clone(ctx, args.from_snapshot, name=args.name or "",
                      labels=parse_labels(args.label), ports=parse_ports(args.ports),
                      plugin=plugin, memory=args.memory or "", cpus=args.cpus)
    if args.quiet:
        emit(vm.metadata.uid)
    if args.interactive:
        from ignitevm.cli.attach import attach

        return attach(ctx, vm)
    return 0
