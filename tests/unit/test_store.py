"""The store: names, prefixes, atomic creation, and many writers at once."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from ignitevm.api.types import VM, ObjectMeta
from ignitevm.errors import Conflict, NotFound
from ignitevm.store import Store


def _vm(name: str, uid: str) -> VM:
    return VM(metadata=ObjectMeta(name=name, uid=uid, created="2000-01-01T00:00:00Z"))


def test_resolve_by_name_uid_and_prefix(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for name, uid in (("web", "aaaa000000000001"), ("db", "aaab000000000002"),
                      ("web2", "bbbb000000000003")):
        with store.creating(_vm(name, uid)):
            pass
    assert store.resolve(VM, "web").metadata.uid == "aaaa000000000001"  # exact beats prefix
    assert store.resolve(VM, "aaab").metadata.name == "db"
    assert store.resolve(VM, "bbbb000000000003").metadata.name == "web2"
    with pytest.raises(Conflict, match="ambiguous"):
        store.resolve(VM, "aaa")
    with pytest.raises(NotFound):
        store.resolve(VM, "zzz")


def test_failed_create_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(RuntimeError), store.creating(_vm("x", "c" * 16)) as stage:
        (stage / "disk").write_text("half")
        raise RuntimeError("boom")
    assert store.list(VM) == []
    assert os.listdir(tmp_path / "tmp") == []


def test_duplicate_name_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.creating(_vm("same", "d" * 16)):
        pass
    with pytest.raises(Conflict, match="already exists"), store.creating(_vm("same", "e" * 16)):
        pass


def _create(root: str, i: int, name: str) -> None:
    store = Store(Path(root))
    vm = _vm(name, f"{i:016x}")
    try:
        with store.creating(vm, rename=name.startswith("gen")):
            pass
    except Conflict:
        pass


def test_twenty_creators_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_create, args=(str(tmp_path), i, "same" if i % 2 else "gen"))
             for i in range(20)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    vms = Store(tmp_path).list(VM)
    names = [vm.metadata.name for vm in vms]
    assert names.count("same") == 1
    assert len(names) == len(set(names)) == 11  # 10 generated names made unique + one "same"


def _stuck(root: str) -> None:
    store = Store(Path(root))
    with store.creating(_vm("stuck", "f" * 16)) as stage:
        (stage / "disk").write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)


def test_kill_9_mid_create_is_swept(tmp_path: Path) -> None:
    p = multiprocessing.get_context("fork").Process(target=_stuck, args=(str(tmp_path),))
    p.start()
    p.join()
    assert (tmp_path / "tmp" / ("f" * 16)).exists()
    store = Store(tmp_path)
    assert store.list(VM) == []
    store.sweep()
    assert not (tmp_path / "tmp" / ("f" * 16)).exists()
    with store.creating(_vm("stuck", "f" * 16)):
        pass
    assert [vm.metadata.name for vm in store.list(VM)] == ["stuck"]


def _mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o7777)


def test_store_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a loose umask: the store sets its own modes
    try:
        store = Store(tmp_path / "root")
        with store.creating(_vm("web", "a" * 16)):
            pass
    finally:
        os.umask(old)
    root = tmp_path / "root"
    assert _mode(root) == "0o711"
    for d in ("vm", "image", "kernel", "tmp", "cache", "locks"):
        assert _mode(root / d) == "0o700", d
    assert _mode(root / "vm" / ("a" * 16)) == "0o700"
    assert _mode(root / "vm" / ("a" * 16) / "metadata.json") == "0o600"


def test_loose_root_is_put_right_on_open(tmp_path: Path) -> None:
    from ignitevm.operations.context import Context

    root = tmp_path / "root"
    for d in ("vm/" + "b" * 16, "image/" + "c" * 16, "tmp/x", "cache"):
        (root / d).mkdir(parents=True)
    for path in (root, *root.rglob("*")):
        path.chmod(0o755)
    Context(root).store.list(VM)
    assert _mode(root) == "0o711"
    for d in ("vm", "image", "tmp", "cache", "vm/" + "b" * 16, "image/" + "c" * 16, "tmp/x"):
        assert _mode(root / d) == "0o700", d


def test_cli_files_are_private(tmp_path: Path) -> None:
    """umask 077 at the entry point: what the CLI (and the programs it runs) writes."""
    import subprocess
    import sys

    from tests.conftest import cli_env
    from tests.helpers.images import busybox_image

    archive = busybox_image(tmp_path / "box.tar")
    env = cli_env(tmp_path / "root")
    subprocess.run([sys.executable, "-m", "ignitevm", "image", "import", str(archive)],
                   env=env, check=True, capture_output=True,
                   preexec_fn=lambda: os.umask(0o022))
    (image,) = (tmp_path / "root" / "image").iterdir()
    assert _mode(image) == "0o700"
    for f in image.iterdir():
        assert f.stat().st_mode & 0o077 == 0, f"{f} is {_mode(f)}"


def test_a_shared_folder_as_root_is_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    store = Store(shared)
    store.ensure()
    assert _mode(shared) == "0o1777"  # as /tmp would be: other users' files live there
    assert _mode(shared / "vm") == "0o700"


def test_the_callers_umask_is_remembered_when_the_program_goes_private() -> None:
    import os

    from ignitevm.util import umask

    old = os.umask(0o027)
    try:
        umask._user.clear()
        umask.make_private()
        assert os.umask(0o077) == 0o077  # private from now on
        assert umask.user_umask() == 0o027  # what `cp VM:… DEST` applies
    finally:
        umask._user.clear()
        os.umask(old)
