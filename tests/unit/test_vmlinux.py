"""The ELF vmlinux unpacked from a bzImage's payload by the host's tools, with what
a tool may write bounded: a kernel from a registry is untrusted."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from ignitevm.kernels import vmlinux

ELF = b"\x7fELF" + b"\x02\x01\x01" + b"\0" * 9


def bzimage(tmp_path: Path, payload: bytes) -> Path:
    """A file shaped as the search sees a bzImage: a setup header, then the payload."""
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"\0" * 0x400 + payload + b"trailing bytes of the bzImage")
    return path


def test_a_gzip_payload_is_unpacked(tmp_path: Path) -> None:
    body = ELF + b"\x90" * (3 << 20)
    out = tmp_path / "vmlinux"
    assert vmlinux.extract_vmlinux(bzimage(tmp_path, gzip.compress(body, 1)), out)
    assert out.read_bytes() == body
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("tool", ["gzip", "zstd", "xz"])
def test_a_payload_that_unpacks_past_the_limit_is_kept_compressed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tool: str) -> None:
    """A bomb (here 64 MiB of zeros against a limit lowered to 4 MiB): the tool is
    stopped, nothing is written, and the bzImage would be kept as it is."""
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it)")
    monkeypatch.setattr(vmlinux, "MAX_VMLINUX", 4 << 20)
    bomb = subprocess.run([tool, "-c"], input=ELF + b"\0" * (64 << 20), capture_output=True,
                          check=True).stdout
    out = tmp_path / "vmlinux"
    assert not vmlinux.extract_vmlinux(bzimage(tmp_path, bomb), out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
