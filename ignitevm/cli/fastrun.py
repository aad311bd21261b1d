"""``ignite run --from-snapshot SNAP`` without building the command tree (a
clone's start is a measured figure; argparse and the tree cost ~20 ms of it).

Only the plain form is read here: ``run`` followed by ``--from-snapshot``
and the few flags a clone takes (``--name``, ``-p``, ``-l``,
``--network-plugin``, ``--sandbox``, ``--root``, ``--log-level``, ``-q``,
``-d``), each once (``-p``/``-l`` repeatable), with a value that argparse
would read the same way. Anything else (another flag, an image, ``--help``,
a value starting with ``-``, ``-i``, ``IGNITE_DEBUG``) returns None before
anything is done, and the full parser runs and says what it always says.
What follows is the full path's own handler (cli/snapshot.py: run_clone)
with the attributes the parser would have set.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

# flag -> attribute; the repeatable ones collect a list
_VALUES = {"--from-snapshot": "from_snapshot", "-n": "name", "--name": "name",
           "-p": "ports", "--ports": "ports", "-l": "label", "--label": "label",
           "--network-plugin": "network_plugin", "--sandbox": "sandbox", "--root": "root",
           "--log-level": "log_level"}
_REPEATED = {"ports", "label"}
_SWITCHES = {"-q": "quiet", "--quiet": "quiet", "-d": "debug", "--debug": "debug"}
_CHOICES = {"sandbox": ("jail", "none")}


def parse(words: Sequence[str]) -> SimpleNamespace | None:
    """The namespace the full parser makes of ``run WORDS`` (the words after
    ``run``), or None for anything this does not read."""
    from ignitevm.cli.fastvm import debugging
    from ignitevm.log import LEVEL_NAMES

    if debugging():
        return None
    got: dict[str, object] = {"ports": [], "label": []}
    i = 0
    while i < len(words):
        word = words[i]
        if word in _SWITCHES:
            if _SWITCHES[word] in got:
                return None
            got[_SWITCHES[word]] = True
            i += 1
            continue
        flag, eq, value = word.partition("=")
        name = _VALUES.get(flag)
        if name is None or (eq and not flag.startswith("--")):
            return None   # (an image, another flag, -p=X which argparse reads as "=X")
        if not eq:
            if i + 1 >= len(words):
                return None
            value = words[i + 1]
            i += 1
        if value == "" or value.startswith("-"):
            return None   # (argparse reads such words its own way)
        if name in _REPEATED:
            got[name].append(value)  # type: ignore[attr-defined]
        elif name in got:
            return None
        else:
            got[name] = value
        i += 1
    if "from_snapshot" not in got or (
            got.get("log_level", "info") not in LEVEL_NAMES) or any(
            name in got and got[name] not in allowed for name, allowed in _CHOICES.items()):
        return None
    # Every attribute run_clone and starting_context read, as the parser sets them.
    ns = SimpleNamespace(
        image=None, config=None, name=None, cpus=None, memory=None, size=None,
        kernel_image=None, kernel_args=None, copy_files=[], ssh=None, volumes=None,
        network_plugin=None, ip=None, mac=None, interactive=False, debug=False,
        root=None, log_level="info", quiet=False, ignite_config=None, debug_trace=False,
        accel=None, unpack_limit=None, sandbox=None)
    for key, value in got.items():
        setattr(ns, key, value)
    return ns


def run(words: Sequence[str]) -> int | None:
    """Start the clone; None when the full path must (nothing was done)."""
    args = parse(words)
    if args is None:
        return None
    from ignitevm import log as logmod
    from ignitevm.cli.fastvm import finish
    from ignitevm.cli.snapshot import run_clone

    level = args.log_level
    logmod.setup("warning" if args.quiet and level == "info" else level)
    return finish(int(run_clone(args) or 0))  # type: ignore[arg-type]
