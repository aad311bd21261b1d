"""The one door for host programs (util/proc.py): a program that cannot be started is
one CommandError a user can act on, not an OSError read as a bug."""

from __future__ import annotations

from pathlib import Path

import pytest

from ignitevm.errors import CommandError
from ignitevm.util.proc import run, spawn


@pytest.mark.parametrize(("mode", "content", "code", "reason"), [
    (0o644, "#!/bin/sh\nexit 0\n", 126, "Permission denied"),   # (as on a noexec mount)
    (0o755, "\x7fELF not really\n", 126, "Exec format error"),
    (None, "", 127, "No such file or directory"),
])
def test_a_program_that_cannot_start_is_a_command_error(tmp_path: Path, mode: int | None,
                                                        content: str, code: int,
                                                        reason: str) -> None:
    helper = tmp_path / "helper"
    if mode is not None:
        helper.write_text(content)
        helper.chmod(mode)
    for start in (lambda: run([helper, "x"]), lambda: spawn([helper]).__enter__()):
        with pytest.raises(CommandError) as err:
            start()
        assert err.value.brief == f"cannot run helper ({helper}): {reason}"
        assert err.value.returncode == code and err.value.argv == [str(helper), "x"][
            :len(err.value.argv)]
    if code == 126 and "Permission" in reason:
        assert err.value.hint and "noexec" in err.value.hint
