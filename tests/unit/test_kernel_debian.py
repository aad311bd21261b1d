"""Debian's cloud kernel: the package apt would download is taken from apt's
own cache when it is there (no network needed), and only that version."""

from __future__ import annotations

from pathlib import Path

import pytest

from ignitevm.kernels import debian


@pytest.fixture()
def apt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    archives = tmp_path / "archives"
    archives.mkdir()
    monkeypatch.setattr(debian, "candidate", lambda package: "1:6.1.9-3")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("apt-get download was called")

    monkeypatch.setattr(debian, "run", no_network)
    return archives


def test_the_candidate_in_apts_cache_is_taken(apt: Path, tmp_path: Path) -> None:
    deb = apt / "linux-image-x_1%3a6.1.9-3_amd64.deb"
    deb.write_bytes(b"the package")
    got = debian.download("linux-image-x", tmp_path / "debs", archives=apt)
    assert got == tmp_path / "debs" / deb.name and got.read_bytes() == b"the package"


def test_another_version_in_apts_cache_is_not(apt: Path, tmp_path: Path) -> None:
    (apt / "linux-image-x_1%3a6.1.9-2_amd64.deb").write_bytes(b"older")
    with pytest.raises(AssertionError, match="apt-get download was called"):
        debian.download("linux-image-x", tmp_path / "debs", archives=apt)
