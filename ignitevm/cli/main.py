"""Entry point: parse, dispatch, and turn errors into one line and an exit code."""

import os
import sys

# (typing.TYPE_CHECKING without typing, and collections.abc only for the checker: ~1.5 ms
# of every command's start-up, which the fast paths below keep near the interpreter's;
# no ``from __future__ import annotations`` either, ~0.3 ms: the annotations are quoted)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


def main(argv: "Sequence[str] | None" = None) -> int:
    from ignitevm.util.umask import make_private

    make_private()  # nothing this program makes is for other users (the store sets modes)
    words = list(sys.argv[1:] if argv is None else argv)
    fast = _fast_path(words)
    if fast is not None:
        code = _guarded(fast, debug=os.environ.get("IGNITE_DEBUG") == "1")
        if code is not None:  # (None: the plain form it takes was not this one)
            return code
    from ignitevm import log as logmod
    from ignitevm.cli.parser import build_parser, hoisted, normalize

    given, words = words, normalize(words)
    parser = build_parser(words)
    parser.leading = hoisted(given)  # type: ignore[attr-defined]
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
    if argv is None:  # (the process's own command line: it ends when this returns)
        import gc

        # The objects left are the process's to the end: frozen, the interpreter's
        # last collection at exit does not walk them (~8 ms of a command like `ps`).
        gc.freeze()
    return code


def _fast_path(words: list[str]) -> "Callable[[], int | None] | None":
    """The lean path of a measured command, without the command tree: each
    takes only its plain form and returns None for anything else."""
    if words[:1] == ["exec"]:  # `exec VM -- CMD` (cli/fastexec.py)
        from ignitevm.cli.fastexec import run as exec_run

        return lambda: exec_run(words[1:])
    if words[:2] == ["image", "pull"]:  # a second pull of a tag: one manifest request
        from ignitevm.cli.fastpull import run as pull

        return lambda: pull(words[2:])
    if words[:1] == ["run"] and any(w.split("=", 1)[0] == "--from-snapshot" for w in words):
        from ignitevm.cli.fastrun import run as run_clone  # (cli/fastrun.py)

        return lambda: run_clone(words[1:])
    if words[:1] in (["pause"], ["resume"]):  # `pause VM` / `resume VM` (cli/fastvm.py)
        from ignitevm.cli.fastvm import switch

        return lambda: switch(words[0], words[1:])
    return None


def _guarded(call: "Callable[[], int | None]", debug: bool) -> int | None:
    """``call()``, with a user-facing error as one line (and its hint) and exit code;
    any other exception too (a bug), its traceback only with ``debug``."""
    try:
        return call()
    except BaseException as exc:
        return _failed(exc, debug)


def _failed(error: BaseException, debug: bool) -> int:
    """The exit code for ``error`` (being handled), said in one line; re-raised when it
    is not the program's to say (SystemExit), or with ``debug``. (Called from the
    handler: what an answer that raised nothing never needs is not imported.)"""
    from ignitevm.errors import IgniteError

    try:
        raise error
    except IgniteError as exc:
        if debug:
            raise
        from ignitevm.api.validation import printable

        # (a brief may quote what a registry, an image or a guest said: escaped)
        print(f"error: {printable(exc.brief)}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {printable(exc.hint)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:  # the host refused (a full disk, permissions): not a bug
        if debug:
            raise
        print(f"error: {_os_error(exc)}", file=sys.stderr)
        print(f"  hint: {_os_hint(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still one line, the traceback only when asked for
        if debug:
            raise
        from ignitevm.api.validation import printable

        text = printable(str(exc))[:300]
        print(f"error: unexpected {type(exc).__name__}" + (f": {text}" if text else ""),
              file=sys.stderr)
        print("  hint: this is a bug in ignite; run again with --debug-trace (or "
              "IGNITE_DEBUG=1) for the traceback, and report it", file=sys.stderr)
        return 1


def _os_error(exc: OSError) -> str:
    """``No space left on device: /var/lib/ignite/image/…`` (the files, escaped)."""
    from ignitevm.api.validation import printable

    names = [os.fsdecode(f) if isinstance(f, (str, bytes)) else str(f)
             for f in (exc.filename, exc.filename2) if f is not None]
    text = exc.strerror or str(exc) or type(exc).__name__
    return printable(text + (f": {' -> '.join(names)}" if names else ""))[:500]


def _os_hint(exc: OSError) -> str:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ("free space there (ignite image rm / rm unused VMs), or move the state "
                "root with --root / IGNITE_ROOT")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "check its permissions (most ignite commands need root)"
    if exc.errno == errno.EROFS:
        return "that file system is mounted read-only; move the state root with --root"
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return "raise the limit on open files (ulimit -n)"
    return "run again with --debug-trace (or IGNITE_DEBUG=1) to see where it happened"
