"""``ignited``: keep this host's VMs in line with manifests.

  ignited daemon            reconcile the VM manifests in a folder
                            (default /etc/firecracker/manifests, as Ignite's)
  ignited gitops REPO_URL   reconcile the VM manifests of a Git repository
  ignited version / completion
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

MANIFEST_DIR = "/etc/firecracker/manifests"


def _duration(text: str) -> float:
    """A Go-style duration: 30s, 1m0s, 1m30s, 500ms, 2h (or plain seconds)."""
    import re

    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 30s, 1m0s, 500ms)")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def build_parser() -> argparse.ArgumentParser:
    from ignitevm.cli.parser import Parser
    from ignitevm.log import LEVEL_NAMES

    top = Parser(prog="ignited", description="Keep this host's VMs in line with manifests: "
                 "a folder of VM files, or a Git repository.")

    def globals_(p: argparse.ArgumentParser, top: bool) -> None:
        d: Any = None if top else argparse.SUPPRESS
        p.add_argument("--root", default=d, metavar="DIR",
                       help="state folder (default: $IGNITE_ROOT or /var/lib/ignite)")
        p.add_argument("--log-level", choices=LEVEL_NAMES, default="info" if top else d,
                       help="how much to log on stderr (default: info)")
        p.add_argument("--ignite-config", default=d, metavar="FILE",
                       help="a kind: Configuration file (default /etc/ignite/config.yaml); "
                       "its spec.manifestPolicy says which host files and devices "
                       "manifests may use (default: none)")
        p.add_argument("--runtime", default=d, help="containerd: take the images and "
                       "kernels manifests name from a running containerd's store (also the "
                       "Configuration's spec.runtime; default: pull them from their registry)")
        p.add_argument("--network-plugin", default=d, help="accepted for Ignite compatibility")
        p.add_argument("--id-prefix", default=d, help="accepted for Ignite compatibility")
        p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=d,
                       help="virtualisation: probe KVM and fall back to TCG (auto), or force one")
        p.add_argument("--sandbox", choices=("jail", "none"), default=d,
                       help="confine each VM's QEMU (jail, the default) or not (none)")

    globals_(top, True)
    subs = top.add_subparsers(title="commands", metavar="COMMAND")
    p = subs.add_parser("daemon", help="reconcile the VM manifests in a folder",
                        description="Watch a folder of VM manifests (.yaml, .yml, .json, "
                        "with metadata.uid) and keep the VMs they describe as they say: "
                        "status.running true -> created and running, false -> stopped; a "
                        "VM whose file is removed is removed.")
    globals_(p, False)
    p.add_argument("--manifest-dir", default=MANIFEST_DIR,
                   help=f"the folder to watch (default {MANIFEST_DIR})")
    p.add_argument("--interval", type=_duration, default=1.0,
                   help="how often to look at the folder (default 1s)")
    p.set_defaults(cmd="daemon")
    p = subs.add_parser("gitops", help="reconcile the VM manifests of a Git repository",
                        description="Clone a Git repository and keep this host's VMs as its "
                        "VM manifests say, pulling every --interval. Read-only: status is not "
                        "written back to the repository.")
    globals_(p, False)
    p.add_argument("repo_url", help="ssh://, git@host:path, https:// or file:// URL")
    p.add_argument("-b", "--branch", default="master", help="the branch to follow "
                   "(default master)")
    p.add_argument("--interval", type=_duration, default=30.0,
                   help="how often to pull (default 30s)")
    p.add_argument("--timeout", type=_duration, default=60.0,
                   help="the most one git operation may take (default 1m0s)")
    p.add_argument("--identity-file", default="", help="SSH private key for ssh URLs")
    p.add_argument("--hosts-file", default="", help="known_hosts file for ssh URLs "
                   "(default: ssh's own)")
    p.add_argument("--https-username", default="", help="user name for https URLs")
    p.add_argument("--https-password", default="",
                   help="password or token for https URLs (seen by `ps`: ignited runs "
                   "itself again without it; prefer $IGNITED_HTTPS_PASSWORD or "
                   "--https-password-file)")
    p.add_argument("--https-password-file", default="", metavar="FILE",
                   help="read the password or token for https URLs from FILE")
    p.set_defaults(cmd="gitops")
    p = subs.add_parser("version", help="print the version")
    globals_(p, False)
    p.add_argument("-o", "--output", default="", help="short, json or yaml")
    p.set_defaults(cmd="version")
    p = subs.add_parser("completion", help="print a shell completion script")
    p.add_argument("shell", nargs="?", default="bash", help="bash (default), zsh or fish")
    p.set_defaults(cmd="completion")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    from ignitevm.util.umask import make_private

    make_private()  # nothing this program makes is for other users (the store sets modes)
    from ignitevm import log as logmod
    from ignitevm.errors import IgniteError

    parser = build_parser()
    args = parser.parse_args(argv)
    logmod.setup(getattr(args, "log_level", None) or "info")
    cmd = getattr(args, "cmd", None)
    try:
        if cmd == "version":
            from ignitevm.cli.misc import cmd_version

            return cmd_version(args)
        if cmd == "completion":
            from ignitevm.cli.completion import cmd_completion

            return cmd_completion(args, "ignited", build_parser())
        if cmd == "daemon":
            return _daemon(args)
        if cmd == "gitops":
            return _gitops(args)
    except IgniteError as exc:
        from ignitevm.api.validation import printable

        # (a registry's or a manifest's text may be in it: no terminal escapes)
        print(f"error: {printable(exc.brief)}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {printable(exc.hint)}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # e.g. the state folder cannot be made (a full disk)
        print(f"error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
              file=sys.stderr)
        return 1
    parser.print_help(sys.stdout)
    return 0


def _context(args: argparse.Namespace) -> Any:
    from ignitevm.cli.common import starting_context
    from ignitevm.cli.image import containerd_options
    from ignitevm.errors import InvalidInput

    if getattr(args, "runtime", None) not in (None, "", "qemu", "containerd"):
        raise InvalidInput(f"runtime {args.runtime!r} is not available here",
                           hint="VMs run under QEMU directly; --runtime containerd takes "
                           "images and kernels from containerd's store")
    ctx = starting_context(args)
    # Missing images and kernels: from containerd with --runtime containerd or the
    # Configuration's spec.runtime (socket and namespace: spec.containerdSocket and
    # spec.containerdNamespace, $CONTAINERD_ADDRESS, $CONTAINERD_NAMESPACE), as `create`.
    ctx.containerd = containerd_options(args)
    return ctx


def _policy(args: argparse.Namespace) -> Any:
    from ignitevm.cli.config import DEFAULT_PATH, load_configuration
    from ignitevm.daemon.policy import ManifestPolicy

    path = getattr(args, "ignite_config", None)
    return ManifestPolicy.from_configuration(load_configuration(path),
                                             str(path or DEFAULT_PATH))


def _loop(interval: float, step: Callable[[], None]) -> int:
    """Run ``step`` every ``interval`` seconds until SIGINT/SIGTERM.

    The signal handler only sets a flag; the wait between passes is woken by
    the byte Python writes to a wake-up pipe for each signal. (A handler that
    sets a threading.Event can deadlock: it runs in the main thread, which may
    hold the Event's lock at that moment.)"""
    import os
    import select

    from ignitevm.log import log

    stopping = False

    def on_signal(_signo: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping:
            try:
                step()
            except Exception as exc:  # one bad pass (a full disk...) must not end the daemon
                from ignitevm.daemon.reconcile import describe

                log.error("reconciliation pass failed: %s; trying again in %gs",
                          describe(exc), interval)
                log.debug("reconciliation pass failed", exc_info=True)
            if not stopping:
                select.select([r], [], [], interval)
                with contextlib.suppress(BlockingIOError):
                    os.read(r, 512)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(old_fd)
        os.close(r)
        os.close(w)
    log.info("Closing...")
    return 0


def _daemon(args: argparse.Namespace) -> int:
    from ignitevm.daemon.manifests import ManifestReader
    from ignitevm.daemon.reconcile import Reconciler
    from ignitevm.log import log

    folder = Path(args.manifest_dir)
    folder.mkdir(parents=True, exist_ok=True)
    reader = ManifestReader(folder)
    rec = Reconciler(_context(args), f"dir:{folder.resolve()}", _policy(args))
    log.info("Watching %s for VM manifests", folder)
    return _loop(args.interval, lambda: rec.sync(reader.read()))


def _gitops(args: argparse.Namespace) -> int:
    from ignitevm.daemon.gitops import GitSource, https_password, rerun_without_password
    from ignitevm.daemon.manifests import ManifestReader
    from ignitevm.daemon.reconcile import Reconciler, describe
    from ignitevm.log import log

    rerun_without_password(args.https_password)
    ctx = _context(args)
    src = GitSource(args.repo_url, args.branch, ctx.cache, args.timeout,
                    identity_file=args.identity_file, hosts_file=args.hosts_file,
                    username=args.https_username,
                    password=https_password(args.https_password, args.https_password_file))
    log.info("Starting GitOps loop for repo at %r", src.display_url)
    src.update()  # a repository that cannot be cloned at all is an error at start
    reader = ManifestReader(src.checkout)
    rec = Reconciler(ctx, f"git:{src.display_url}#{args.branch}", _policy(args))
    failed = [""]

    def step() -> None:
        try:
            src.update()
            failed[0] = ""
        except Exception as exc:  # keep the last good checkout; say so once
            said = describe(exc)
            if failed[0] != said:
                log.error("cannot update from %s: %s", src.display_url, said)
            failed[0] = said
        rec.sync(reader.read())

    return _loop(args.interval, step)
