"""The command tree, declared once. Handlers are imported only when chosen."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ignitevm.log import LEVEL_NAMES


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, exit code 1, and a suggestion for typos."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        ns, extras = super().parse_known_args(args, namespace)
        # A subcommand's parser returns first: it owns words it did not know,
        # so that `image pull --bogus` is reported for `ignite image pull`.
        if extras and not hasattr(ns, "_flag_owner"):
            ns._flag_owner = self
        return ns, extras

    # The flags a command line gave before its command's name (normalize moves them
    # after it): one the command does not know either is reported for the top.
    leading: frozenset[str] = frozenset()

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        ns, extras = self.parse_known_args(args, namespace)
        owner = vars(ns).pop("_flag_owner", self)
        if extras and extras[0] in self.leading:
            owner = self
        if extras:
            owner.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns

    def error(self, message: str) -> NoReturn:
        import sys

        from ignitevm.api.validation import printable

        message, hint = self._explain(message)
        sys.stderr.write(f"error: {printable(message)}\n")
        if hint:
            sys.stderr.write(f"  hint: {printable(hint)}\n")
        raise SystemExit(1)

    def _explain(self, message: str) -> tuple[str, str]:
        """argparse's message, said for this command: (message, hint)."""
        import difflib
        import re

        see = f"see: {self.prog} --help"
        m = re.match(rf"argument (\S+): invalid choice: ({_REPR})", message)
        if m:
            name, value = m.group(1), _unrepr(m.group(2))
            action = next((a for a in self._actions
                           if name in ("/".join(a.option_strings), a.metavar, a.dest)), None)
            choices = [str(c) for c in action.choices or ()] if action else []
            if name.startswith("-"):  # an option's value
                flag = max(name.split("/"), key=len)
                hint = (f"use {', '.join(choices[:-1])} or {choices[-1]}"
                        if len(choices) > 1 else f"use {choices[0]}" if choices else see)
                return f"invalid value {value!r} for {flag}", hint
            if isinstance(getattr(action, "choices", None), dict):  # a command word
                close = difflib.get_close_matches(value, choices, n=1)
                return (f"unknown command {value!r} for {self.prog!r}",
                        f"did you mean {close[0]!r}?" if close else see)
            hint = f"use {', '.join(choices)}" if choices else see
            return f"invalid {name} {value!r}", hint
        m = re.match(rf"argument (\S+): invalid (int|float) value: ({_REPR})", message)
        if m:
            flag = max(m.group(1).split("/"), key=len)
            kind = "a whole number" if m.group(2) == "int" else "a number"
            return f"invalid value {_unrepr(m.group(3))!r} for {flag}", f"use {kind}"
        m = re.match(r"unrecognized arguments: (\S+)", message)
        if m:
            word = m.group(1)
            if not word.startswith("-"):
                return f"unexpected argument {word!r} for {self.prog!r}", see
            # (compared without their dashes, which all flags share)
            flags = {s.lstrip("-"): s for a in self._actions for s in a.option_strings}
            close = difflib.get_close_matches(word.split("=")[0].lstrip("-"), flags, n=1)
            return (f"unknown flag {word!r} for {self.prog!r}",
                    f"did you mean {flags[close[0]]!r}?" if close else see)
        m = re.match(r"argument (\S+): expected one argument", message)
        if m:
            return f"{max(m.group(1).split('/'), key=len)} needs a value", see
        return message, ""


# A value as argparse quotes it in a message: its repr() (quoted with " when it holds ').
_REPR = r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"'


def _unrepr(text: str) -> str:
    """The value a repr() in argparse's message stands for (quoted once again by us)."""
    import ast

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, str) else text


def _lazy(target: str) -> Callable[[argparse.Namespace], int]:
    module, _, func = target.partition(":")

    def call(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(f"ignitevm.cli.{module}"), func)(args) or 0)

    return call


def _globals(p: argparse.ArgumentParser, *, top: bool) -> None:
    # Given before or after the command; below the top level they must not
    # overwrite a value given at the top, hence SUPPRESS.
    d: Any = None if top else argparse.SUPPRESS
    p.add_argument("--root", default=d if not top else None, metavar="DIR",
                   help="state folder (default: $IGNITE_ROOT or /var/lib/ignite)")
    p.add_argument("--log-level", choices=LEVEL_NAMES, default="info" if top else d,
                   help="how much to log on stderr (default: info)")
    p.add_argument("-q", "--quiet", action="store_true", default=False if top else d,
                   help="print only IDs")
    p.add_argument("--ignite-config", default=d, metavar="FILE",
                   help="a kind: Configuration file (default: /etc/ignite/config.yaml)")
    p.add_argument("--debug-trace", action="store_true", default=False if top else d,
                   help="show tracebacks and debug logs")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=d,
                   help="virtualisation: probe KVM and fall back to TCG (auto), or force one")
    p.add_argument("--unpack-limit", default=d, metavar="SIZE",
                   help="most an image may unpack to, e.g. 20GB (default: half the free "
                        "space, less a reserve)")
    p.add_argument("--sandbox", choices=("jail", "none"), default=d,
                   help="confine each VM's QEMU (jail, the default) or not (none, "
                        "for debugging)")


class _Sink:
    """Stands in for the parser of a command that was not asked for: start-up
    builds only the commands named on the command line (all with ``full``)."""

    def add_argument(self, *a: Any, **k: Any) -> None:
        pass

    def set_defaults(self, **k: Any) -> None:
        pass

    def add_subparsers(self, **k: Any) -> _Sink:
        return self


_SINK = _Sink()


class _Tree:
    def __init__(self, wanted: set[str] | None = None) -> None:
        self.wanted = wanted
        self.top = Parser(
            prog="ignite",
            description="Run OCI images as lightweight virtual machines.",
            epilog="Run 'ignite COMMAND --help' for more on a command.",
        )
        _globals(self.top, top=True)
        self.subs = self.top.add_subparsers(title="commands", metavar="COMMAND")

    def command(self, subs: Any, name: str, handler: str, help: str,
                aliases: tuple[str, ...] = (), **defaults: Any) -> Any:
        if subs is _SINK:
            return _SINK
        if self.wanted is not None and not ({name, *aliases} & self.wanted):
            subs.add_parser(name, aliases=list(aliases), help=help)
            return _SINK
        p: argparse.ArgumentParser = subs.add_parser(name, aliases=list(aliases), help=help,
                                                      description=help)
        _globals(p, top=False)
        p.set_defaults(handler=_lazy(handler), **defaults)
        return p


def _vm_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", nargs="?", help="image name, ID or archive path (or from --config)")
    p.add_argument("-n", "--name", help="VM name (default: a generated adjective-noun)")
    p.add_argument("--config", metavar="FILE", help="a kind: VM manifest (YAML or JSON)")
    p.add_argument("--cpus", type=int, help="virtual CPUs (default 1)")
    p.add_argument("--memory", help="memory, e.g. 512MB or 2GB (default 512MB)")
    p.add_argument("-s", "--size", help="disk size, e.g. 4GB (default 4GB)")
    p.add_argument("-k", "--kernel-image", help="kernel name or ID (default: debian-cloud)")
    p.add_argument("--kernel-args", help="kernel command line "
                   "(default: console=ttyS0 reboot=k panic=1)")
    p.add_argument("-l", "--label", action="append", default=[], metavar="KEY=VALUE",
                   help="a label for the VM (repeatable)")
    p.add_argument("-f", "--copy-files", action="append", default=[], metavar="HOST:VM",
                   help="copy a host file or folder into the VM at boot (absolute paths)")
    p.add_argument("-p", "--ports", action="append", default=[], metavar="[IP:]HOST:VM[/PROTO]",
                   help="forward a host port to the VM (needs networking)")
    p.add_argument("--ssh", nargs="?", const=True, default=None, metavar="PUBKEY",
                   help="enable SSH: generate a key pair, or --ssh=PATH to install a public key")
    p.add_argument("-v", "--volumes", help="host block devices to mount: /dev/x:/mnt[,...]")
    p.add_argument("--require-name", action="store_true", help="refuse to run without --name")
    p.add_argument("--sandbox-image", help="recorded as spec.sandbox.oci for Ignite "
                   "compatibility (VMs run under QEMU directly, without a sandbox)")
    containerd_flags(p, "the image and kernel")
    p.add_argument("--network-plugin", metavar="cni|passt|user|none",
                   help="cni: a bridge and an address (default for root); passt: "
                   "user-mode networking without root (default otherwise); user: QEMU's "
                   "slirp NAT; none")
    p.add_argument("--network", action="append", default=[], metavar="NAME",
                   help="a CNI network to join (repeatable: eth0, eth1, ...; default: "
                   "Ignite's)")
    p.add_argument("--ip", help="the address to take on the first network (kept anyway "
                   "across stop/start)")
    p.add_argument("--mac", help="the MAC of the first interface")
    p.add_argument("--dns", action="append", default=[], metavar="IP",
                   help="a name server for the guest (repeatable)")
    p.add_argument("--dns-search", action="append", default=[], metavar="DOMAIN",
                   help="a search domain for the guest (repeatable)")
    p.add_argument("--id-prefix", help="prefix for runtime IDs (default ignite)")
    registry_flags(p)
    p.add_argument("--pull", choices=("missing", "always", "never"), default="missing",
                   help="pull the image and kernel from their registry (or containerd): "
                   "when missing (default), always, or never")


def registry_flags(p: argparse.ArgumentParser, *, platform: bool = False) -> None:
    p.add_argument("--registry-config-dir", metavar="DIR",
                   help="folder with a docker config.json holding registry credentials "
                   "(default: $DOCKER_CONFIG, ~/.docker, containers' auth.json)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="allow plain HTTP and unverified TLS for this registry (repeatable; "
                   "also $IGNITE_INSECURE_REGISTRIES)")
    if platform:
        p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                       help="the image to take from a multi-platform index (default: "
                       "this host's)")


def containerd_flags(p: argparse.ArgumentParser, what: str = "it") -> None:
    them = "it" if what == "it" else "them"
    p.add_argument("--runtime", metavar="containerd",
                   help=f"containerd: take {what} from a running containerd's store "
                   f"(default: pull {them} from {'its' if them == 'it' else 'their'} "
                   "registry; also the Configuration's spec.runtime)")
    p.add_argument("--containerd-socket", metavar="PATH",
                   help="containerd's socket (default /run/containerd/containerd.sock)")
    p.add_argument("--containerd-namespace", metavar="NS",
                   help="containerd namespace to look in (default: default, where ctr puts "
                   "images; Kubernetes uses k8s.io)")


def _start_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--interactive", action="store_true",
                   help="attach to the serial console after starting")
    p.add_argument("-d", "--debug", action="store_true",
                   help="accepted for Ignite compatibility (VMs always run detached)")
    p.add_argument("--ignore-preflight-checks", default="", help="accepted for compatibility")


def exec_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("--interactive", action="store_true",
                   help="forward stdin even from a terminal (piped stdin always is)")
    p.add_argument("-i", "--identity", help="Ignite's SSH key flag; with no such file, "
                   "-i means --interactive")
    p.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment variable (repeatable)")
    p.add_argument("-w", "--workdir", help="working directory in the guest")
    p.add_argument("-u", "--user", help="user name or uid[:gid] (default root)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for the guest agent, and for a message it started "
                   "to send to complete (default 30; the command itself may run silent)")
    p.add_argument("--ssh", action="store_true", help="go through SSH (needs networking)")


def _vm_commands(t: _Tree, subs: Any) -> None:
    p = t.command(subs, "run", "vm:cmd_run", "Create a VM from an image and start it")
    _vm_flags(p)
    _start_flags(p)
    p.add_argument("--from-snapshot", metavar="SNAPSHOT",
                   help="start a clone of a saved VM instead of booting an image")
    p = t.command(subs, "create", "vm:cmd_create", "Create a VM without starting it")
    _vm_flags(p)
    p = t.command(subs, "start", "vm:cmd_start", "Start a created or stopped VM")
    p.add_argument("vm")
    _start_flags(p)
    p.add_argument("--runtime", help="accepted for Ignite compatibility")
    p.add_argument("--network-plugin", metavar="cni|passt|user|none",
                   help="the VM's network plugin from this start on (default: the one it has)")
    p = t.command(subs, "stop", "vm:cmd_stop", "Stop VMs: power off, kill after a timeout")
    p.add_argument("vms", nargs="+", metavar="vm")
    p.add_argument("-f", "--force-kill", action="store_true", help="kill at once")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="seconds to wait for the guest to power off (default 20)")
    p = t.command(subs, "pause", "vm:cmd_pause", "Pause VMs: stop their CPUs, keep them in memory")
    p.add_argument("vms", nargs="+", metavar="vm")
    p = t.command(subs, "resume", "vm:cmd_resume", "Resume paused VMs")
    p.add_argument("vms", nargs="+", metavar="vm")
    p = t.command(subs, "kill", "vm:cmd_kill", "Kill VMs at once (no guest shutdown)")
    p.add_argument("vms", nargs="+", metavar="vm")
    p = t.command(subs, "rm", "vm:cmd_rm", "Remove VMs")
    p.add_argument("vms", nargs="*", metavar="vm")
    p.add_argument("-f", "--force", action="store_true", help="kill running VMs first")
    p.add_argument("--config", metavar="FILE", help="remove the VM a manifest names")
    # As in Ignite, `vm ls`/`vm list` list all VMs, `ps` only running ones.
    listings = [("ps", (), False)] + ([("ls", ("list",), True)] if subs is not t.subs else [])
    for name, aliases, force_all in listings:
        p = t.command(subs, name, "vm:cmd_ps", "List VMs: running ones (all with -a)",
                      aliases=aliases, force_all=force_all)
        p.add_argument("-a", "--all", action="store_true", help="also show stopped VMs")
        p.add_argument("-f", "--filter", default="", help="filter rows (Ignite syntax)")
        p.add_argument("-t", "--template", default="", help="format each VM with a template")
        p.add_argument("-o", "--output", choices=("table", "wide", "json", "yaml"),
                       default="table")
    p = t.command(subs, "logs", "vm:cmd_logs", "Print a VM's serial console output")
    p.add_argument("vm")
    p.add_argument("--follow", action="store_true", help="keep printing new output")
    p = t.command(subs, "exec", "guest:cmd_exec", "Run a command in a running VM")
    p.add_argument("vm", nargs="?")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")
    exec_flags(p)
    # (the words after `--`, set by normalize())
    p.add_argument("--exec-dashdash", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--exec-argv", action="append", help=argparse.SUPPRESS)
    p = t.command(subs, "ssh", "ssh:cmd_ssh", "Open an SSH session to a VM created with --ssh")
    p.add_argument("vm")
    p.add_argument("-i", "--identity", help="private key (default: the VM's own id_<uid>)")
    p.add_argument("-t", "--tty", action=argparse.BooleanOptionalAction, default=True,
                   help="allocate a pseudo-terminal (default true)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for the SSH server (default 30)")
    p = t.command(subs, "cp", "guest:cmd_cp",
                  "Copy files or folders between the host and a VM (VM side: vm:/path)")
    p.add_argument("source")
    p.add_argument("dest")
    p.add_argument("-i", "--identity", help="accepted for Ignite compatibility")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for the guest agent, and the longest the copy may "
                   "make no progress (default 30)")
    p.add_argument("--max-size", default="16GB",
                   help="copying out: the most the guest may send (default 16GB)")
    p.add_argument("--max-files", type=int, default=1_000_000,
                   help="copying out: the most entries the guest may send (default 1000000)")
    p = t.command(subs, "attach", "vm:cmd_attach",
                  "Attach to a VM's serial console (detach: Ctrl+P Ctrl+Q)")
    p.add_argument("vm")


def _snapshot_commands(t: _Tree) -> None:
    g = t.command(t.subs, "snapshot", "snapshot:cmd_ls", "Save running VMs and start clones",
                  aliases=("snapshots",), output="table")
    gs = g.add_subparsers(title="commands", metavar="COMMAND")
    p = t.command(gs, "create", "snapshot:cmd_create",
                  "Save a running VM's RAM, devices and disk (it runs on)")
    p.add_argument("vm")
    p.add_argument("name", help="the snapshot's name")
    p.add_argument("--stop", action="store_true", help="stop the VM once it is saved")
    p.add_argument("--no-shared-memory", action="store_true",
                   help="keep the RAM in the state file (clones then do not share RAM pages)")
    p.add_argument("--spares", type=int, default=0, metavar="N",
                   help="keep N clones started and paused for run --from-snapshot to take "
                   "(made in the background; default 0)")
    p = t.command(gs, "spares", "snapshot:cmd_spares",
                  "Keep N clones of a snapshot started and paused, for run to take")
    p.add_argument("snapshot")
    p.add_argument("count", type=int, help="how many (0 removes them)")
    p = t.command(gs, "ls", "snapshot:cmd_ls", "List snapshots", aliases=("list",))
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    p = t.command(gs, "inspect", "snapshot:cmd_inspect", "Show a snapshot")
    p.add_argument("snapshot")
    p.add_argument("-o", "--output", choices=("json", "yaml"), default="json")
    p = t.command(gs, "rm", "snapshot:cmd_rm", "Remove snapshots")
    p.add_argument("snapshots", nargs="+", metavar="snapshot")
    p.add_argument("-f", "--force", action="store_true",
                   help="also remove the VMs cloned from them")


def _network_commands(t: _Tree) -> None:
    g = t.command(t.subs, "network", "network:cmd_ls", "Manage CNI networks",
                  aliases=("networks",), output="table")
    gs = g.add_subparsers(title="commands", metavar="COMMAND")
    p = t.command(gs, "create", "network:cmd_create", "Create a bridge network")
    p.add_argument("name")
    p.add_argument("--subnet", required=True, help="its IPv4 subnet, e.g. 10.77.0.0/24")
    p.add_argument("--gateway", help="the host's address on it (default: the first)")
    p.add_argument("--internal", action="store_true",
                   help="no way out: no masquerade, no default route, no port maps")
    p = t.command(gs, "ls", "network:cmd_ls", "List networks", aliases=("list",))
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p = t.command(gs, "inspect", "network:cmd_inspect", "Show a network")
    p.add_argument("network")
    p = t.command(gs, "rm", "network:cmd_rm", "Remove networks no VM uses")
    p.add_argument("networks", nargs="+", metavar="network")
    t.command(gs, "prune", "network:cmd_prune", "Remove every network no VM uses")


# The command words, for reading a command line before the tree is built
# (tests/unit check them against the tree).
GROUPS = {
    "image": {"import", "pull", "ls", "list", "inspect", "rm", "build", "prune"},
    "kernel": {"import", "ls", "list", "inspect", "rm"},
    "vm": {"run", "create", "start", "stop", "pause", "resume", "kill", "rm", "ps", "ls",
           "list", "logs", "exec", "ssh", "cp", "attach"},
    "network": {"create", "ls", "list", "inspect", "rm", "prune"},
    "snapshot": {"create", "spares", "ls", "list", "inspect", "rm"},
}
GROUPS |= {"images": GROUPS["image"], "kernels": GROUPS["kernel"], "vms": GROUPS["vm"],
           "networks": GROUPS["network"], "snapshots": GROUPS["snapshot"]}
COMMANDS = {"run", "create", "start", "stop", "pause", "resume", "kill", "rm", "ps", "logs",
            "exec", "ssh", "cp", "attach", "inspect", "completion", "version", "rmi", "rmk",
            *GROUPS}
_GLOBAL_VALUE = {"--root", "--log-level", "--ignite-config", "--accel", "--sandbox"}
_GLOBAL_BOOL = {"-q", "--quiet", "--debug-trace", "-h", "--help"}


def normalize(argv: Sequence[str]) -> list[str]:
    """Read a command line as Ignite's did: a command's flags may come before the
    command's name (``ignite --runtime=qemu run img``), and ``--ssh`` takes a
    value only as ``--ssh=PATH`` (``run --ssh img``: img is the image)."""
    return _normalized(argv)[0]


def hoisted(argv: Sequence[str]) -> frozenset[str]:
    """The words of ``argv`` before its command's name that normalize moves after it
    (an unknown flag among them is the top's: ``ignite --bogus ps``)."""
    return frozenset(_normalized(argv)[1])


def _normalized(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    argv = list(argv)
    i, hoisted = 0, []
    lead: list[str] = []
    while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-", "--"):
        word = argv[i]
        name = word.split("=", 1)[0]
        group = lead if name in _GLOBAL_VALUE | _GLOBAL_BOOL else hoisted
        group.append(word)
        takes_next = name in _GLOBAL_VALUE or (
            name not in _GLOBAL_BOOL and i + 1 < len(argv)
            and not argv[i + 1].startswith("-") and argv[i + 1] not in COMMANDS)
        if "=" not in word and takes_next and i + 1 < len(argv):
            group.append(argv[i + 1])
            i += 1
        i += 1
    rest = argv[i:]
    path = rest[:1] if rest and rest[0] in COMMANDS else []
    if path and path[0] in GROUPS and len(rest) > 1 and rest[1] in GROUPS[path[0]]:
        path.append(rest[1])
    tail = rest[len(path):]
    if path and path[-1] in ("run", "create"):
        end = tail.index("--") if "--" in tail else len(tail)
        tail = [("--ssh=true" if w == "--ssh" else w) if n < end else w
                for n, w in enumerate(tail)]
    if path and path[-1] == "exec" and "--" in tail:
        # The command after `--` is taken verbatim, whatever argparse would make
        # of its words (a `--` of its own, or `-i VM` eating the VM's place);
        # each word gets a `:` before it, as argparse drops a value `--`.
        end = tail.index("--")
        tail = ["--exec-dashdash", *(f"--exec-argv=:{w}" for w in tail[end + 1:]),
                *tail[:end]]
    return [*lead, *path, *hoisted, *tail], hoisted


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command tree; with ``argv``, only the commands it names are filled in."""
    t = _Tree(None if argv is None else {w for w in argv if not w.startswith("-")})
    _vm_commands(t, t.subs)

    p = t.command(t.subs, "inspect", "inspect:cmd_inspect", "Show an object (vm, image, kernel)")
    p.add_argument("kind")
    p.add_argument("object")
    p.add_argument("-o", "--output", default="json", help="json or yaml (default json)")
    p.add_argument("-t", "--template", default="", help="format with a template")

    p = t.command(t.subs, "completion", "completion:cmd_completion",
                  "Print a shell completion script (bash, zsh or fish)")
    p.add_argument("shell", nargs="?", default="bash", help="bash (default), zsh or fish")

    p = t.command(t.subs, "version", "misc:cmd_version", "Print the version")
    p.add_argument("-o", "--output", default="", help="short, json or yaml")

    p = t.command(t.subs, "rmi", "image:cmd_rm", "Remove images")
    p.add_argument("images", nargs="+", metavar="image")
    p.add_argument("-f", "--force", action="store_true", help="also remove VMs that use them")
    p = t.command(t.subs, "rmk", "kernel:cmd_rm", "Remove kernels")
    p.add_argument("kernels", nargs="+", metavar="kernel")
    p.add_argument("-f", "--force", action="store_true", help="also remove VMs that use them")

    # Groups: `ignite image`, `ignite kernel`, `ignite vm`; bare = list.
    for group, alias, helptext in (("image", "images", "Manage base images"),
                                   ("kernel", "kernels", "Manage kernels")):
        g = t.command(t.subs, group, f"{group}:cmd_ls", helptext, aliases=(alias,))
        gs = g.add_subparsers(title="commands", metavar="COMMAND")
        article = "an" if group == "image" else "a"
        p = t.command(gs, "import", f"{group}:cmd_import", f"Import {article} {group}")
        p.add_argument("source", help="an archive, an OCI layout folder or a registry "
                       "reference" + (" (or debian)" if group == "kernel" else ""))
        p.add_argument("--name", help="name to give it (default: from the source)")
        containerd_flags(p)
        registry_flags(p, platform=True)
        if group == "image":
            p = t.command(gs, "pull", "image:cmd_pull", "Pull an image from a registry")
            p.add_argument("source", metavar="REF", help="e.g. alpine, ghcr.io/org/app:1 or "
                           "name@sha256:...")
            p.add_argument("--name", help="name to give it (default: the reference)")
            registry_flags(p, platform=True)
        p = t.command(gs, "ls", f"{group}:cmd_ls", f"List {group}s", aliases=("list",))
        p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
        p = t.command(gs, "inspect", f"describe:cmd_{group}_inspect",
                      f"Show {group}s: the object, digest and platform" +
                      (", and the image config's Entrypoint, Cmd, Env, ExposedPorts, Labels"
                       if group == "image" else ""))
        p.add_argument(f"{group}s", nargs="+", metavar=group)
        p.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text",
                       help="text (default), or a list as json or yaml")
        p = t.command(gs, "rm", f"{group}:cmd_rm", f"Remove {group}s")
        p.add_argument(f"{group}s", nargs="+", metavar=group)
        p.add_argument("-f", "--force", action="store_true", help="also remove VMs that use it")
        if group == "image":
            p = t.command(gs, "prune", "image:cmd_prune",
                          "Remove unused images and the stored blobs no image needs")
            p.add_argument("-a", "--all", action="store_true",
                           help="remove every image no VM uses (default: only blobs, as "
                           "no image here is dangling)")
            p.add_argument("-f", "--force", action="store_true",
                           help="do not prompt for confirmation")
            p = t.command(gs, "build", "image:cmd_build",
                          "Build the project's base image (Debian + systemd + openssh)")
            p.add_argument("recipe", choices=("base",), help="the recipe to build")
            p.add_argument("--name", default="base", help="image name (default base)")
        g.set_defaults(output="table")

    _network_commands(t)
    _snapshot_commands(t)

    g = t.command(t.subs, "vm", "vm:cmd_ps", "Manage VMs", aliases=("vms",), all=True,
                  filter="", template="", output="table")
    _vm_commands(t, g.add_subparsers(title="commands", metavar="COMMAND"))
    return t.top
