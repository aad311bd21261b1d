"""Exit codes and errors built from what a guest or a registry said."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from ignitevm.errors import Conflict, NotFound


@pytest.mark.parametrize(("sent", "code"), [
    (0, 0), (1, 1), (255, 255), (-9, 137), (-15, 143), (-127, 255),
    (256, 255), (-128, 255), (-2**31, 255), (2**31 - 1, 255),
])
def test_exec_status_is_an_exit_code(sent: int, code: int) -> None:
    """A replaced agent may send any i32 in EXIT: the CLI's exit code stays 0-255
    (os._exit of 2**31 was an OverflowError, and 256 exited 0)."""
    from ignitevm.agent.session import _status

    assert _status(struct.pack("<i", sent)) == code


def test_missing_path_hint_only_when_nothing_was_found(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The "no such file either" hint is for a reference that led nowhere, not for a
    pull that failed on what it found (a conflict, a refused layer, a full disk)."""
    from ignitevm.operations.images import not_fetched

    monkeypatch.chdir(tmp_path)
    missing = not_fetched("image", "out/rootfs.img", NotFound("no such image"))
    assert missing.hint and "no file or folder 'out/rootfs.img'" in missing.hint
    other = not_fetched("image", "out/rootfs.img", Conflict("taken", hint="rm it"))
    assert other.hint == "rm it"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "rootfs.img").write_text("")
    assert not_fetched("image", "out/rootfs.img", NotFound("x")).hint is None
