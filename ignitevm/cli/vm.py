"""Handlers for the VM commands: run, create, start, stop, kill, rm, ps, logs, attach."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ignitevm.api.types import VM
from ignitevm.cli.common import context, dump, emit, starting_context, table
from ignitevm.errors import InvalidInput
from ignitevm.log import log
from ignitevm.operations.context import Context
from ignitevm.util.human import age


def cmd_create(args: argparse.Namespace) -> int:
    from ignitevm.cli.vmspec import vm_from_args
    from ignitevm.operations import vms

    ctx = context(args)
    vm = vms.create(ctx, vm_from_args(args))
    if args.quiet:
        emit(vm.metadata.uid)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ignitevm.cli.vmspec import vm_from_args
    from ignitevm.operations import vms

    ctx = starting_context(args)
    vm = vms.create(ctx, vm_from_args(args))
    try:
        vms.start(ctx, vm)
    except BaseException:
        # A failed run leaves nothing behind.
        vms.remove(ctx, vm, force=True)
        raise
    if args.quiet:
        emit(vm.metadata.uid)
    if args.interactive:
        from ignitevm.cli.attach import attach

        return attach(ctx, vm)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    from ignitevm.operations import vms

    ctx = starting_context(args)
    vm = ctx.store.resolve(VM, args.vm)
    vms.start(ctx, vm)
    if args.quiet:
        emit(vm.metadata.uid)
    if args.interactive:
        from ignitevm.cli.attach import attach

        return attach(ctx, vm)
    return 0


def _resolve_all(ctx: Context, names: list[str]) -> list[VM]:
    # Resolve every argument first: one unknown name changes nothing.
    return [ctx.store.resolve(VM, n) for n in names]


def cmd_stop(args: argparse.Namespace) -> int:
    from ignitevm.operations import vms

    ctx = context(args)
    for vm in _resolve_all(ctx, args.vms):
        vms.stop(ctx, vm, force=args.force_kill, timeout=args.timeout)
        if args.quiet:
            emit(vm.metadata.uid)
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    from ignitevm.operations import vms

    ctx = context(args)
    for vm in _resolve_all(ctx, args.vms):
        vms.stop(ctx, vm, force=True)
        if args.quiet:
            emit(vm.metadata.uid)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from ignitevm.operations import vms

    ctx = context(args)
    if args.config and args.vms:
        raise InvalidInput("give either VM names or --config, not both")
    if args.config:
        from ignitevm.cli.vmspec import load_vm_manifest

        manifest = load_vm_manifest(args.config)
        query = manifest.metadata.uid or manifest.metadata.name
        if not query:
            raise InvalidInput(f"{args.config} names no VM (metadata.name or metadata.uid)")
        targets = [ctx.store.resolve(VM, query)]
    elif not args.vms:
        raise InvalidInput("no VM given", hint="ignite rm <vm>... or ignite rm --config FILE")
    else:
        targets = _resolve_all(ctx, args.vms)
    for vm in targets:
        vms.remove(ctx, vm, force=args.force)
        if args.quiet:
            emit(vm.metadata.uid)
    return 0


def live(ctx: Context, vm: VM) -> VM:
    """The VM with its status corrected from the process table (not written back)."""
    running = ctx.vmm.pid(ctx.store.dir(vm)) is not None
    if running != vm.status.running:
        vm.status.running = running
        if not running:
            vm.status.start_time = None
            vm.status.network.ip_addresses = None
    if not running:
        from ignitevm.operations.vms import release_network_if_dead

        release_network_if_dead(ctx, vm)  # its QEMU died by itself: nothing may leak
    return vm


def cmd_ps(args: argparse.Namespace) -> int:
    ctx = context(args)
    # VMs whose stored state was stale (e.g. QEMU died by itself): marked `*`, as Ignite did.
    stale: set[str] = set()
    objs = []
    for vm in ctx.store.list(VM):
        stored = vm.status.running
        objs.append(live(ctx, vm))
        if vm.status.running != stored:
            stale.add(vm.metadata.uid)
    if not (args.all or getattr(args, "force_all", False)):
        objs = [vm for vm in objs if vm.status.running]
    if args.filter or args.template:
        from ignitevm.cli.templates import apply_filter, render

        if args.filter:
            objs = apply_filter(objs, args.filter)
        if args.template:
            for vm in objs:
                emit(render(args.template, vm))
            return 0
    if args.quiet:
        for vm in objs:
            emit(vm.metadata.uid)
        return 0
    if args.output in ("json", "yaml"):
        emit(dump(objs, args.output))
        return 0
    rows = []
    for vm in objs:
        s = vm.spec
        status = f"Up {age(vm.status.start_time)}" if vm.status.running else "Stopped"
        if vm.metadata.uid in stale:
            status = "*" + status
        ports = ", ".join(
            f"{p.bind_address or '0.0.0.0'}:{p.host_port}->{p.vm_port}/{p.protocol or 'tcp'}"
            for p in s.network.ports)
        row = [vm.metadata.uid, s.image.oci, s.kernel.oci, str(s.disk_size),
               str(s.cpus), str(s.memory), f"{age(vm.metadata.created)} ago",
               status, ", ".join(vm.status.network.ip_addresses or []), ports,
               vm.metadata.name]
        if args.output == "wide":
            labels = ",".join(f"{k}={v}" for k, v in sorted((vm.metadata.labels or {}).items()))
            row += [vm.status.network.plugin or "-", vm.status.runtime.accel or "-",
                    "yes" if s.ssh else "no", labels]
        rows.append(row)
    headers = ["VM ID", "IMAGE", "KERNEL", "SIZE", "CPUS", "MEMORY", "CREATED", "STATUS",
               "IPS", "PORTS", "NAME"]
    if args.output == "wide":
        headers += ["NETWORK", "ACCEL", "SSH", "LABELS"]
    emit(table(headers, rows))
    if stale & {vm.metadata.uid for vm in objs}:
        log.warning("The symbol * on the VM status means the stored VM state was out of "
                    "date: the status shown is the live one")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    import sys

    from ignitevm.operations import vms

    ctx = context(args)
    vm = ctx.store.resolve(VM, args.vm)
    path: Path = ctx.vmm.console_log(vms.workdir(ctx, vm))
    if not path.exists():
        log.warning("VM %r has not been started yet: no console output", vm.metadata.name)
        return 0
    out = sys.stdout.buffer
    with path.open("rb") as f:
        while True:
            chunk = f.read(1 << 16)
            if chunk:
                out.write(chunk)
                continue
            out.flush()
            if not args.follow or not vms.is_running(ctx, vm):
                break
            time.sleep(0.2)
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    from ignitevm.cli.attach import attach

    ctx = context(args)
    return attach(ctx, ctx.store.resolve(VM, args.vm))
