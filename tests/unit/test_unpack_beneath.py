"""Hostile layers: whatever their entries do, nothing outside the unpack root changes.

Each layer here swaps a directory for a symbolic link to a sentinel folder
beside the root (standing for the host's /, which the tests never touch) and
then tries to write, chmod, link or delete through it.
"""

from __future__ import annotations

import os
import resource
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ignitevm.errors import InvalidInput
from ignitevm.images import beneath
from ignitevm.images.layers import apply_layers
from tests.unit.test_layers import MTIME, d, entry, hard, image, sym, tar_of


def snapshot(top: Path) -> dict[str, tuple[int, int, int, float, bytes]]:
    """Everything about a tree that an escape could change (its top folder included)."""
    out = {}
    for path in [top, *top.rglob("*")]:
        st = path.lstat()
        data = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        out[str(path.relative_to(top))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime, data)
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """The sentinel: a folder outside the root with an etc/ and a victim file."""
    top = tmp_path / "outside"
    (top / "etc").mkdir(parents=True)
    (top / "victim").write_text("safe")
    (top / "etc" / "passwd").write_text("root:x:0:0")
    for path in (top / "etc", top):
        os.chmod(path, 0o755)
        os.utime(path, (1_000_000, 1_000_000))
    return top


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


def layers_with(outside: Path, *layers: list[Any]) -> list[bytes]:
    """Tar blobs of ``layers``, with OUTSIDE in link targets replaced by the sentinel."""
    blobs = []
    for entries in layers:
        for info, _data in entries:
            info.linkname = info.linkname.replace("OUTSIDE", str(outside))
        blobs.append(tar_of(*entries))
    return blobs


@pytest.mark.parametrize("target", ["OUTSIDE", "../outside"])
def test_directory_replaced_by_a_link_keeps_its_deferred_mode_inside(
    root: Path, outside: Path, target: str
) -> None:
    # x/, x/etc/ (setuid, world-writable), then x becomes a link to "/": the mode
    # of x/etc was applied at the end of the layer by path, so to the host's /etc.
    before = snapshot(outside)
    layer = [d("x"), d("x/etc", mode=0o4777, mtime=2_000_000), d("x/bin"), sym("x", target)]
    apply_layers(image(*layers_with(outside, layer)), root)
    assert snapshot(outside) == before
    assert os.readlink(root / "x") == target.replace("OUTSIDE", str(outside))


def test_file_through_a_link_swapped_in_later_in_the_layer(root: Path, outside: Path) -> None:
    before = snapshot(outside)
    layer = [d("a"), entry("a/one", data=b"1"), sym("a", "OUTSIDE"), entry("a/two", data=b"2")]
    with pytest.raises(InvalidInput, match="through the symbolic link 'a'"):
        apply_layers(image(*layers_with(outside, layer)), root)
    assert snapshot(outside) == before


@pytest.mark.parametrize(
    "layer",
    [
        # the link's source reached through a directory that became a link
        [d("evil"), sym("evil", "OUTSIDE"), hard("pwned", "evil/victim")],
        # the link itself written through one
        [entry("f", data=b"x"), d("evil"), sym("evil", "OUTSIDE"), hard("evil/pwned", "f")],
        # the source named through a link that points at a directory of the image
        [d("real"), entry("real/f", data=b"x"), sym("alias", "real"), hard("pwned", "alias/f")],
    ],
)
def test_hard_links_through_links_are_refused(
    root: Path, outside: Path, layer: list[Any]
) -> None:
    before = snapshot(outside)
    with pytest.raises(InvalidInput, match="through the symbolic link"):
        apply_layers(image(*layers_with(outside, layer)), root)
    assert snapshot(outside) == before


def test_hard_link_to_a_link_links_the_link(root: Path, outside: Path) -> None:
    before = snapshot(outside)
    layer = [sym("l", "OUTSIDE/victim"), hard("h", "l")]
    apply_layers(image(*layers_with(outside, layer)), root)
    assert (root / "h").lstat().st_ino == (root / "l").lstat().st_ino
    assert os.readlink(root / "h") == f"{outside}/victim"
    assert snapshot(outside) == before


@pytest.mark.parametrize(
    "layers",
    [
        # in the same layer: the parent became a link, then a whiteout in it
        [[d("a"), entry("a/f", data=b"x"), sym("a", "OUTSIDE"), entry("a/.wh.victim")]],
        # across layers
        [[sym("a", "OUTSIDE")], [entry("a/.wh.victim")]],
        [[sym("a", "OUTSIDE")], [entry("a/.wh.etc")]],
        # an opaque directory that is a link
        [[sym("a", "OUTSIDE")], [entry("a/.wh..wh..opq")]],
        [[d("a"), sym("a", "OUTSIDE"), entry("a/.wh..wh..opq")]],
    ],
)
def test_whiteouts_through_links_are_refused(
    root: Path, outside: Path, layers: list[list[Any]]
) -> None:
    before = snapshot(outside)
    with pytest.raises(InvalidInput, match="through the symbolic link 'a'"):
        apply_layers(image(*layers_with(outside, *layers)), root)
    assert snapshot(outside) == before


def test_removals_never_follow_links(root: Path, outside: Path) -> None:
    """Whiteouts, opaque directories and type changes delete links, not what they point at."""
    before = snapshot(outside)
    lower = [
        d("o"), sym("o/link", "OUTSIDE"), entry("o/old", data=b"x"),
        d("w"), d("w/sub"), sym("w/sub/etc", "OUTSIDE/etc"), sym("w/sub/v", "OUTSIDE/victim"),
        d("t"), sym("t/l", "OUTSIDE"),
        sym("gone", "OUTSIDE"),
    ]  # fmt: skip
    upper = [
        entry("o/.wh..wh..opq"), entry("o/new", data=b"y"),
        entry(".wh.w"),
        entry("t", data=b"now a file"),
        entry(".wh.gone"),
    ]  # fmt: skip
    apply_layers(image(*layers_with(outside, lower, upper)), root)
    assert sorted(p.name for p in root.iterdir()) == ["o", "t"]
    assert [p.name for p in (root / "o").iterdir()] == ["new"]
    assert (root / "t").read_bytes() == b"now a file"
    assert snapshot(outside) == before


def test_many_directories_beyond_the_open_fd_cap(root: Path, outside: Path) -> None:
    """More directories than fds kept open: each still gets its mode and time, once."""
    count = beneath.CAP * 2 + 10
    entries = []
    for i in range(count):
        entries += [d(f"d{i % 7}/sub{i}", mode=0o710, mtime=MTIME + i),
                    entry(f"d{i % 7}/sub{i}/f", data=b"x")]
    entries += [d(f"d{i}", mode=0o750) for i in range(7)]
    entries.append(entry("d0/sub0/late", data=b"y"))  # d0/sub0 again, after many others
    apply_layers(image(tar_of(*entries)), root)
    for i in range(count):
        st = (root / f"d{i % 7}/sub{i}").lstat()
        assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o710, MTIME + i)
    assert stat.S_IMODE((root / "d3").lstat().st_mode) == 0o750
    assert (root / "d0/sub0/late").read_bytes() == b"y"
    assert len(os.listdir("/proc/self/fd")) < 64  # every directory fd was closed


def test_last_entry_for_a_directory_wins(root: Path) -> None:
    layer = tar_of(d("a", mode=0o700), entry("a/f", data=b"x"), d("a", mode=0o751))
    apply_layers(image(layer), root)
    assert stat.S_IMODE((root / "a").lstat().st_mode) == 0o751


@pytest.fixture
def few_fds() -> Iterator[int]:
    """A soft limit of 512 open files (restored after): the unpacker must stay under it."""
    soft, hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard_limit))
    try:
        yield 512
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard_limit))


def test_wide_trees_stay_under_the_fd_limit(root: Path, few_fds: int) -> None:
    count = few_fds + 100
    lower = tar_of(d("o"), *[entry(f"o/s{i}/old", data=b"x") for i in range(count)])
    upper = tar_of(*[entry(f"o/s{i}/new", data=b"y") for i in range(count)],
                   entry("o/.wh..wh..opq"))
    apply_layers(image(lower, upper), root)
    assert sorted(os.listdir(root / "o/s7")) == ["new"]
    assert len(os.listdir(root / "o")) == count


def test_deep_trees_stay_under_the_fd_limit(root: Path, few_fds: int) -> None:
    deep = "/".join(["d"] * (few_fds + 100))
    apply_layers(image(tar_of(entry(f"{deep}/f", data=b"deep"), d(deep, mode=0o711))), root)
    assert (root / deep / "f").read_bytes() == b"deep"
    assert stat.S_IMODE((root / deep).lstat().st_mode) == 0o711


def test_implicit_parents_are_0755(root: Path) -> None:
    apply_layers(image(tar_of(entry("usr/bin/tool", data=b"x"))), root)
    for rel in ("usr", "usr/bin"):
        assert stat.S_IMODE((root / rel).lstat().st_mode) == 0o755 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
