"""Handlers for the VM commands: run, create, start, stop, kill, rm, ps, logs, attach."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ignitevm.api.types import VM
from ignitevm.cli.common import context, dump, emit, starting_context, table
from ignitevm.errors import Conflict, InvalidInput, NotFound
from ignitevm.log import log
from ignitevm.operations.context import Context
from ignitevm.util.human import age

if TYPE_CHECKING:
    from ignitevm.store.store import Damaged


def cmd_create(args: argparse.Namespace) -> int:
    from ignitevm.cli.image import set_pull_policy
    from ignitevm.cli.vmspec import vm_from_args
    from ignitevm.operations import vms

    ctx = context(args)
    set_pull_policy(ctx, args)
    vm = vms.create(ctx, vm_from_args(args))
    if args.quiet:
        emit(vm.metadata.uid)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if getattr(args, "from_snapshot", None):
        from ignitevm.cli.snapshot import run_clone

        return run_clone(args)
    from ignitevm.cli.image import set_pull_policy
    from ignitevm.cli.vmspec import vm_from_args
    from ignitevm.operations import vms

    ctx = starting_context(args)
    set_pull_policy(ctx, args)
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
    vms.start(ctx, vm, plugin=args.network_plugin or "")
    if args.quiet:
        emit(vm.metadata.uid)
    if args.interactive:
        from ignitevm.cli.attach import attach

        return attach(ctx, vm)
    return 0


def _resolve_all(ctx: Context, names: list[str],
                 broken: list[Damaged] | None = None) -> list[VM]:
    """Resolve every argument first: one unknown name changes nothing. With
    ``broken``, a damaged VM's UID is collected there instead of refused."""
    out = []
    for n in names:
        try:
            out.append(ctx.store.resolve(VM, n))
        except NotFound:
            from ignitevm.operations import damaged

            d = damaged.find(ctx, n)
            if d is None:
                raise
            if broken is None:
                raise Conflict(f"VM {d.uid} is damaged: {d.reason} (folder {d.folder})",
                               hint=f"remove it with: ignite rm -f {d.uid}") from None
            broken.append(d)
    return out


def cmd_stop(args: argparse.Namespace) -> int:
    from ignitevm.operations import vms

    ctx = context(args)
    for vm in _resolve_all(ctx, args.vms):
        vms.stop(ctx, vm, force=args.force_kill, timeout=args.timeout)
        if args.quiet:
            emit(vm.metadata.uid)
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    return _each_vm(args, "pause")


def cmd_resume(args: argparse.Namespace) -> int:
    return _each_vm(args, "resume")


def _each_vm(args: argparse.Namespace, op: str) -> int:
    from ignitevm.operations import vms

    ctx = context(args)
    for vm in _resolve_all(ctx, args.vms):
        getattr(vms, op)(ctx, vm)
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
    from ignitevm.operations import damaged, vms

    ctx = context(args)
    broken: list[Damaged] = []
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
        targets = _resolve_all(ctx, args.vms, broken)
    for vm in targets:
        vms.remove(ctx, vm, force=args.force)
        if args.quiet:
            emit(vm.metadata.uid)
    for d in broken:
        damaged.remove(ctx, d, force=args.force)
        if args.quiet:
            emit(d.uid)
    return 0


def live(ctx: Context, vm: VM) -> VM:
    """The VM with its status corrected from the process table (not written back)."""
    running = ctx.vmm.pid(ctx.store.dir(vm)) is not None
    if running != vm.status.running:
        vm.status.running = running
        if not running:
            vm.status.paused = False
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
    listed = ctx.store.list(VM)
    for vm in listed:
        stored = vm.status.running
        objs.append(live(ctx, vm))
        if vm.status.running != stored:
            stale.add(vm.metadata.uid)
    show_all = bool(args.all or getattr(args, "force_all", False))
    if not show_all:
        objs = [vm for vm in objs if vm.status.running]
    broken = _damaged(ctx, show_all, {vm.metadata.uid for vm in listed})
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
        for d, _ in broken:
            emit(d.uid)
        return 0
    if args.output in ("json", "yaml"):
        emit(dump(objs, args.output))
        return 0
    rows = []
    for vm in objs:
        s = vm.spec
        status = f"Up {age(vm.status.start_time)}" if vm.status.running else "Stopped"
        if vm.status.running and vm.status.paused:
            status += " (Paused)"
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
            named = [a.network or "default" for a in s.network.networks]
            row += [(vm.status.network.plugin or "-") + (":" + ",".join(named) if named else ""),
                    vm.status.runtime.accel or "-",
                    "yes" if s.ssh else "no", labels]
        rows.append(row)
    for d, running in broken:
        row = [d.uid, "-", "-", "-", "-", "-", "-", "Damaged, Up" if running else "Damaged",
               "", "", "-"]
        rows.append(row + (["-", "-", "-", ""] if args.output == "wide" else []))
    headers = ["VM ID", "IMAGE", "KERNEL", "SIZE", "CPUS", "MEMORY", "CREATED", "STATUS",
               "IPS", "PORTS", "NAME"]
    if args.output == "wide":
        headers += ["NETWORK", "ACCEL", "SSH", "LABELS"]
    emit(table(headers, rows))
    if stale & {vm.metadata.uid for vm in objs}:
        log.warning("The symbol * on the VM status means the stored VM state was out of "
                    "date: the status shown is the live one")
    return 0


def _damaged(ctx: Context, show_all: bool, known: set[str]) -> list[tuple[Damaged, bool]]:
    """Damaged VMs (running ones, or all with -a), each also said on stderr."""
    from ignitevm.operations import damaged

    out = [(d, up) for d, up in damaged.listing(ctx, known) if up or show_all]
    for d, up in out:
        damaged.warn(d, up)
    return out


def cmd_logs(args: argparse.Namespace) -> int:
    import sys

    from ignitevm.operations import vms

    ctx = context(args)
    vm = ctx.store.resolve(VM, args.vm)
    path: Path = ctx.vmm.console_log(vms.workdir(ctx, vm))
    if not path.exists():
        log.warning("VM %r has not been started yet: no console output", vm.metadata.name)
        return 0
    from ignitevm.providers.vmm import consolelog

    consolelog.copy(path, sys.stdout.buffer, follow=args.follow,
                    alive=lambda: vms.is_running(ctx, vm))
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    from ignitevm.cli.attach import attach

    ctx = context(args)
    return attach(ctx, ctx.store.resolve(VM, args.vm))
