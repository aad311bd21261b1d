"""Internal networks (``ignite network create lab --internal``): their VMs
reach each other and the host's gateway address on their bridge, nothing else.

The conflist already leaves out masquerade, the default route and port maps,
but a guest is root in its VM: it can add a route through the gateway, and
the host forwards. So the host itself drops, with iptables rules of the
project's own, in the filter table:

- chain ``IGNITE-ISOLATE``, jumped to first from FORWARD: what comes in by
  the bridge and goes out by any other interface, and the other way round;
- chain ``IGNITE-ISOLATE-IN``, jumped to first from INPUT: what comes in by
  the bridge for any host address but the gateway's.

The jumps must stay first: the firewall plugin accepts everything from a
VM's address in its CNI-FORWARD chain, and inserts its own jump at the top
of FORWARD when it makes that chain. So the rules are checked before each
ADD on an internal network (the bridge may be new, or the host rebooted) and
the jumps put back on top after it. Every rule carries the comment
``ignitevm internal <bridge>``: ``network rm`` deletes them with the bridge,
and the sweep after each release deletes those whose bridge is gone (the
chains and jumps go with the last one).
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from pathlib import Path

from ignitevm.errors import IgniteError
from ignitevm.log import log

FORWARD_CHAIN = "IGNITE-ISOLATE"
INPUT_CHAIN = "IGNITE-ISOLATE-IN"
JUMPS = {"FORWARD": FORWARD_CHAIN, "INPUT": INPUT_CHAIN}
TAG = "ignitevm internal "
LOCK = Path("/run/ignitevm-isolate.lock")


def rules(bridge: str, gateway: str) -> list[list[str]]:
    """The rules of one internal network's bridge: [chain, match..., -j DROP]."""
    tag = ["-m", "comment", "--comment", TAG + bridge]
    return [[FORWARD_CHAIN, "-i", bridge, "!", "-o", bridge, *tag, "-j", "DROP"],
            [FORWARD_CHAIN, "-o", bridge, "!", "-i", bridge, *tag, "-j", "DROP"],
            [INPUT_CHAIN, "-i", bridge, "!", "-d", f"{gateway}/32", *tag, "-j", "DROP"]]


def _ipt(*words: str, check: bool = True) -> str:
    from ignitevm.util.proc import run

    res = run(["iptables", "-w", "-t", "filter", *words], check=check)
    return res.stdout if res.returncode == 0 else ""


def _save() -> list[str]:
    from ignitevm.util.proc import run

    res = run(["iptables-save", "-t", "filter"], check=False)
    return res.stdout.splitlines() if res.returncode == 0 else []


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One change of these chains at a time on the host (two ADDs must not
    both add a rule that is missing)."""
    from ignitevm.util.fs import flock

    with flock(LOCK):
        yield


def ensure(bridge: str, gateway: str) -> None:
    """The network's rules are in place and the jumps to them first (safe to
    repeat; run it before ADD and again after)."""
    try:
        with _locked():
            _ensure(bridge, gateway)
    except IgniteError as exc:
        raise IgniteError(f"cannot isolate internal network bridge {bridge}: {exc}",
                          hint="it needs iptables (apt-get install iptables)") from exc


def _ensure(bridge: str, gateway: str) -> None:
    declared = {ln[1:].split()[0] for ln in _save() if ln.startswith(":")}
    for chain in JUMPS.values():
        if chain not in declared:
            _ipt("-N", chain)
    for rule in rules(bridge, gateway):
        if not _present(rule):
            _ipt("-A", *rule)
    _first_jumps()


def _present(rule: list[str]) -> bool:
    from ignitevm.util.proc import run

    return run(["iptables", "-w", "-t", "filter", "-C", *rule], check=False).returncode == 0


def first_jumps() -> None:
    """Put the jumps to the project's chains at the top of FORWARD and INPUT
    (the firewall plugin inserts its own there when it makes CNI-FORWARD)."""
    with _locked():
        _first_jumps()


def _first_jumps() -> None:
    for builtin, chain in JUMPS.items():
        jump = [builtin, "-j", chain]
        top = _ipt("-S", builtin, "1", check=False).split()
        if top == ["-A", *jump]:
            continue
        while _present(jump):
            _ipt("-D", *jump)
        _ipt("-I", builtin, "1", "-j", chain)


def drop(bridge: str = "", lines: list[str] | None = None) -> None:
    """Delete the rules of ``bridge`` (of every bridge that no longer exists,
    if none is named); the chains and jumps go once they hold no rule."""
    with _locked():
        _drop(bridge, _save() if lines is None else lines)


def _drop(bridge: str, lines: list[str]) -> None:
    if not any(ln.startswith(f":{FORWARD_CHAIN} ") or ln.startswith(f":{INPUT_CHAIN} ")
               for ln in lines):
        return
    left = 0
    for ln in lines:
        words = shlex.split(ln) if ln.startswith("-A IGNITE-ISOLATE") else []
        if len(words) < 2 or words[1] not in JUMPS.values():
            continue
        named = next((w[len(TAG):] for w in words if w.startswith(TAG)), "")
        gone = named == bridge if bridge else not Path(f"/sys/class/net/{named}").exists()
        if named and gone:
            log.debug("internal network %s: removing %s", named, " ".join(words[1:]))
            _ipt("-D", *words[1:], check=False)
        else:
            left += 1
    if left:
        return
    for builtin, chain in JUMPS.items():
        while _present([builtin, "-j", chain]):
            _ipt("-D", builtin, "-j", chain, check=False)
        _ipt("-F", chain, check=False)
        _ipt("-X", chain, check=False)
