"""Entry point: parse, dispatch, and turn errors into one line and an exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from ignitevm.util.umask import make_private

    make_private()  # nothing this program makes is for other users (the store sets modes)
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["exec"]:
        # The plain `exec VM -- CMD`, without the command tree (cli/fastexec.py)
        from ignitevm.cli.fastexec import run

        code = _guarded(lambda: run(words[1:]), debug=False)
        if code is not None:
            return code
    elif words[:1] == ["run"] and any(w.split("=", 1)[0] == "--from-snapshot" for w in words):
        # The plain `run --from-snapshot SNAP [...]`, likewise (cli/fastrun.py)
        from ignitevm.cli.fastrun import run as run_clone

        code = _guarded(lambda: run_clone(words[1:]), debug=False)
        if code is not None:
            return code
    elif words[:1] in (["pause"], ["resume"]):
        # The plain `pause VM` / `resume VM`, likewise (cli/fastvm.py)
        from ignitevm.cli.fastvm import switch

        code = _guarded(lambda: switch(words[0], words[1:]), debug=False)
        if code is not None:
            return code
    from ignitevm import log as logmod
    from ignitevm.cli.parser import build_parser, normalize

    words = normalize(words)
    parser = build_parser(words)
    args = parser.parse_args(words)
    debug = bool(getattr(args, "debug_trace", False)) or os.environ.get("IGNITE_DEBUG") == "1"
    level = getattr(args, "log_level", "info") or "info"
    if getattr(args, "quiet", False) and level == "info":
        level = "warning"  # -q: IDs on stdout instead of the progress lines
    logmod.setup("debug" if debug else level)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    code = _guarded(lambda: int(handler(args) or 0), debug)
    assert code is not None
    return code


def _guarded(call: Callable[[], int | None], debug: bool) -> int | None:
    """``call()``, with a user-facing error as one line (and its hint) and exit code."""
    from ignitevm.errors import IgniteError

    try:
        return call()
    except IgniteError as exc:
        if debug:
            raise
        print(f"error: {exc.brief}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
