"""The one error tree for failures a user can act on.

Library code raises these; only the CLI and the daemon turn them into exit
codes or log lines. The message says what failed and why; ``hint`` says what
to do about it.
"""

from __future__ import annotations


class IgniteError(Exception):
    """A failure with a message fit for a user: what failed, why, what to do."""

    exit_code = 1

    def __init__(self, brief: str, *, hint: str | None = None, details: str | None = None):
        super().__init__(brief)
        self.brief = brief
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        return self.brief


class NotFound(IgniteError):
    """An object (VM, image, kernel) that the user named does not exist."""


class Conflict(IgniteError):
    """The request clashes with the current state (duplicate name, object in use...)."""


class InvalidInput(IgniteError):
    """A flag, manifest or file the user gave is not acceptable."""


class CommandError(IgniteError):
    """A host program failed; carries its argv, exit code and the tail of stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str, *, hint: str | None = None):
        prog = argv[0].rsplit("/", 1)[-1] if argv else "?"
        tail = stderr.strip().splitlines()[-3:] if stderr else []
        why = "; ".join(line.strip() for line in tail if line.strip())
        if returncode < 0:
            brief = f"{prog} was killed by signal {-returncode}"
        else:
            brief = f"{prog} failed with exit code {returncode}"
        if why:
            brief += f": {why}"
        super().__init__(brief, hint=hint, details=stderr)
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr

    @classmethod
    def not_started(cls, argv: list[str], exc: OSError, *,
                    hint: str | None = None) -> CommandError:
        """The program could not be started (exec failed: not executable, a file
        system mounted noexec, not a program...): exit code 126 or 127, as a shell's."""
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        what = exc.filename or (argv[0] if argv else "?")
        err = cls(argv, code, f"{exc.strerror or exc}", hint=hint or (
            "check that it is executable and that its file system is not mounted noexec"
            if isinstance(exc, PermissionError) else None))
        prog = argv[0].rsplit("/", 1)[-1] if argv else "?"
        err.brief = f"cannot run {prog} ({what}): {exc.strerror or exc}"
        err.args = (err.brief,)
        return err


class MissingTool(IgniteError):
    """A host program the project needs is not installed."""
