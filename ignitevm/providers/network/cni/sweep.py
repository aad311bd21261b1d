"""Remove what an attachment left behind when DEL could not: after a host
reboot or a deleted namespace, the bridge plugin keeps its masquerade rules
(they carry a comment naming the container id), portmap keeps its chains if
it is missing, the firewall plugin keeps its per-address rules without a
cached result, and host-local keeps leases. All are found by the id or the
addresses of the attachment, never by guessing."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from pathlib import Path

from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.log import log

LEASE_DIR = Path("/var/lib/cni/networks")


def lease_dir(conf: dict[str, object]) -> Path:
    """host-local's folder of the network's leases, ``<dataDir>/<name>``; the
    name is one path part (conflist.CNI_NAME), never ``/`` or ``..``."""
    from ignitevm.providers.network.cni.conflist import CNI_NAME

    name = str(conf["name"])
    if not CNI_NAME.fullmatch(name):
        raise InvalidInput(f"invalid CNI network name {name!r}")
    for p in conf.get("plugins") or []:  # type: ignore[attr-defined]
        ipam = p.get("ipam") or {}
        if ipam.get("type") == "host-local":
            return Path(ipam.get("dataDir") or LEASE_DIR) / name
    return LEASE_DIR / name


def remove_lease_dir(conf: dict[str, object]) -> None:
    """Remove a network's lease folder: only if it resolves to a folder right
    in its data folder (not a link that leads elsewhere)."""
    import shutil

    d = lease_dir(conf)
    try:
        real = d.resolve()
        if real.parent != d.parent.resolve() or real.name != d.name or not real.is_dir():
            if d.exists() or d.is_symlink():
                log.warning("not removing %s: it is not a lease folder of %s", d, d.parent)
            return
    except OSError:
        return
    shutil.rmtree(real, ignore_errors=True)


def leases(conf: dict[str, object], container_id: str) -> list[Path]:
    """host-local's lease files held by ``container_id`` (file name = address)."""
    d = lease_dir(conf)
    out = []
    with contextlib.suppress(OSError):
        for f in d.iterdir():
            if f.name.startswith(("last_reserved_ip", "lock")):
                continue
            with contextlib.suppress(OSError):
                if f.read_text().splitlines()[:1] == [container_id]:
                    out.append(f)
    return out


def lease_owner(conf: dict[str, object], ip: str) -> str | None:
    """Who holds the lease of ``ip`` (host-local names its file by the address as
    it writes it: ``fd00::1``, never ``fd00::0001``)."""
    import ipaddress

    try:
        lines = (lease_dir(conf) / str(ipaddress.ip_address(ip))).read_text().splitlines()
    except (OSError, ValueError):
        return None
    return lines[0] if lines else ""


def _iptables_save(table: str) -> list[str]:
    from ignitevm.util.proc import run

    res = run(["iptables-save", *(["-t", table] if table else [])], check=False)
    return res.stdout.splitlines() if res.returncode == 0 else []


def _after(words: list[str], flag: str) -> str:
    """The word after ``flag`` in a rule's words, or ""."""
    i = words.index(flag) if flag in words else len(words)
    return words[i + 1] if i + 1 < len(words) else ""


def mapped_ports() -> dict[tuple[str, int], str]:
    """The host ports portmap maps on this host, whoever asked for them (a VM of
    any root, containerd, Kubernetes), by ``(proto, port)``: the attachment's
    id, or the chain's name. Read from its per-attachment chains' DNAT rules;
    empty when iptables cannot be read (not root, not installed)."""
    import os

    if os.geteuid() != 0:
        return {}
    try:
        lines = _iptables_save("nat")
    except IgniteError as exc:  # (MissingTool: no iptables here; CommandError)
        log.debug("port maps: %s", exc)
        return {}
    owners, ports = {}, []
    for line in lines:
        try:
            words = shlex.split(line) if line.startswith("-A CNI-") else []
        except ValueError:  # (an unbalanced quote: iptables-save escapes them)
            continue
        if line.startswith("-A CNI-HOSTPORT-DNAT "):  # the jump to an attachment's chain
            target = _after(words, "-j")
            if target.startswith("CNI-DN-"):
                _, found, rest = _after(words, "--comment").partition('id: "')
                owners[target] = rest.partition('"')[0] if found else target
        elif line.startswith("-A CNI-DN-") and _after(words, "-j") == "DNAT" and _after(
                words, "--dport").isdigit():
            ports.append((_after(words, "-p"), int(_after(words, "--dport")), words[1]))
    return {(proto, port): owners.get(chain, chain) for proto, port, chain in ports}


def _iptables_save_all() -> dict[str, list[str]]:
    """Every table's lines, by table name."""
    out: dict[str, list[str]] = {}
    current: list[str] = []
    for line in _iptables_save(""):
        if line.startswith("*"):
            current = out.setdefault(line[1:].strip(), [])
        else:
            current.append(line)
    return out


def _iptables(table: str, *words: str) -> None:
    from ignitevm.util.proc import run

    try:
        run(["iptables", "-w", "-t", table, *words])
    except IgniteError as exc:
        log.debug("sweep: %s", exc)


def iptables(container_id: str, addresses: list[str]) -> None:
    """Delete the rules naming ``container_id`` in their comment (and the chains
    they jump to), and the firewall plugin's rules for ``addresses``."""
    tag = f'id: \\"{container_id}\\"'
    hosts = {f"{a.split('/')[0]}/32" for a in addresses}
    for table in ("nat", "filter"):
        rules, chains = [], set()
        for line in _iptables_save(table):
            if not line.startswith("-A "):
                continue
            words = shlex.split(line)
            mine = tag in line
            if not mine and words[1] == "CNI-FORWARD":
                mine = any(w in hosts for w in words)
            if not mine:
                continue
            rules.append(words[1:])
            if "-j" in words:
                target = words[words.index("-j") + 1]
                if target.startswith("CNI-") and target not in (
                        "CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK",
                        "CNI-FORWARD", "CNI-ADMIN"):
                    chains.add(target)
        for rule in rules:
            _iptables(table, "-D", *rule)
        for chain in chains:
            _iptables(table, "-F", chain)
            _iptables(table, "-X", chain)


def all_for(conf: dict[str, object], container_id: str, addresses: list[str]) -> None:
    """Everything ``container_id`` may have left: rules, chains, leases."""
    iptables(container_id, addresses)
    leases_of(conf, container_id)


def leases_of(conf: dict[str, object], container_id: str) -> None:
    for f in leases(conf, container_id):
        log.debug("sweep: lease %s", f)
        f.unlink(missing_ok=True)


# The chains the firewall and portmap plugins make once per host and share
# between attachments, with the one rule of their own each may hold (by target).
SHARED = {
    "filter": {"CNI-FORWARD": {"CNI-ADMIN"}, "CNI-ADMIN": set()},
    "nat": {"CNI-HOSTPORT-DNAT": set(), "CNI-HOSTPORT-MASQ": {"MASQUERADE"},
            "CNI-HOSTPORT-SETMARK": {"MARK"}},
}
# The plugins that make them: the sweep runs only once these have released.
SHARED_OWNERS = ("firewall", "portmap")
HOST_LOCK = Path("/run/ignitevm-cni.lock")  # iptables are the host's, whatever the root


@contextlib.contextmanager
def adding() -> Iterator[None]:
    """Held (shared) while plugins ADD: the shared chains they make or use are
    not removed under them."""
    from ignitevm.util.fs import flock

    with flock(HOST_LOCK, shared=True):
        yield


def shared_chains() -> None:
    """Remove the plugins' host-wide chains once no attachment uses them (only
    their own fixed rules left), so the host's iptables are as before the first
    VM. Skipped while any ADD runs (the next release does it)."""
    from ignitevm.providers.network.cni import isolate
    from ignitevm.util.fs import flock

    try:
        with flock(HOST_LOCK, blocking=False):
            tables = _iptables_save_all()  # (one program run for both tables)
            batch = []
            for table, chains in SHARED.items():
                undo = _unused(chains, tables.get(table, []))
                if undo:
                    batch += [f"*{table}", *undo, "COMMIT"]
            if batch:  # (one iptables-restore, all or nothing, not ten iptables runs)
                _restore(batch)
            isolate.drop(lines=tables.get("filter", []))  # (internal networks' bridges gone)
    except BlockingIOError:
        log.debug("sweep: an ADD is under way; the shared chains stay")


def _unused(chains: dict[str, set[str]], lines: list[str]) -> list[str]:
    """iptables-restore lines that remove ``chains`` and the jumps to them, if
    they hold nothing but their own fixed rules; none otherwise."""
    declared, jumps = set(), []
    for line in lines:
        if line.startswith(":"):
            declared.add(line[1:].split()[0])
            continue
        if not line.startswith("-A "):
            continue
        words = shlex.split(line)
        target = words[words.index("-j") + 1] if "-j" in words else ""
        if words[1] in chains:
            if target not in chains[words[1]]:
                return []  # an attachment's (or an admin's) rule: still in use
        elif target in chains:
            jumps.append("-D" + line[2:])  # (the saved line, quoting and all)
    mine = [c for c in chains if c in declared]
    if mine:
        log.debug("sweep: no attachment uses %s any more: removing them", ", ".join(mine))
    return [*jumps, *(f"-F {c}" for c in mine), *(f"-X {c}" for c in mine)] if mine else []


def _restore(batch: list[str]) -> None:
    from ignitevm.util.proc import run

    try:
        run(["iptables-restore", "--noflush", "--wait"], input="\n".join(batch) + "\n")
    except IgniteError as exc:  # (changed under us: the next release tries again)
        log.debug("sweep: %s", exc)
