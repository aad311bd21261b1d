"""Several CLIs at once: real processes racing on one store.

A racing step is held open in a child process by wrapping one internal
function (the test's only hook) so that the test decides who goes when; a
process blocked on a store lock is seen in the kernel's lock table
(/proc/locks lists waiters with "->"), which is the one signal Linux gives of
it, so the test polls that table (with a deadline) instead of sleeping.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from ignitevm.api.types import VM, Image, ImageSpec, Kernel, KernelSpec, ObjectMeta
from ignitevm.errors import IgniteError
from ignitevm.operations.context import Context
from ignitevm.store import Store

FORK = multiprocessing.get_context("fork")
DEADLINE = 120.0  # generous: only a hang reaches it


def blocked_on_lock(pid: int) -> bool:
    with open("/proc/locks") as f:
        for line in f:
            words = line.split()
            if "->" in words and str(pid) in words:
                return True
    return False


def wait_until(what: str, cond: Callable[[], bool]) -> None:
    end = time.monotonic() + DEADLINE
    while not cond():
        assert time.monotonic() < end, f"never happened: {what}"
        time.sleep(0.01)


def _run(conn: Connection, fn: Callable[..., Any], *args: Any) -> None:
    """Child body: run ``fn`` and report "ok" or the error's text."""
    try:
        fn(*args)
        conn.send(("ok", ""))
    except IgniteError as exc:
        conn.send(("error", str(exc)))
    except Exception as exc:  # reported to the test, which fails with it
        conn.send(("crash", f"{type(exc).__name__}: {exc}"))


def _paused(module: Any, name: str, conn: Connection) -> None:
    """Wrap ``module.name`` so that it tells the test it was reached, then waits for "go"."""
    real = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        conn.send(("reached", str(args[1]) if len(args) > 1 else ""))
        assert conn.recv() == "go"
        return real(*args, **kwargs)

    setattr(module, name, wrapper)


def start(target: Callable[..., None], *args: Any) -> tuple[Any, Connection]:
    ours, theirs = FORK.Pipe()
    proc = FORK.Process(target=target, args=(theirs, *args))
    proc.start()
    return proc, ours


def finish(proc: Any, conn: Connection) -> tuple[str, str]:
    assert conn.poll(DEADLINE), "the child never answered"
    result: tuple[str, str] = conn.recv()
    proc.join(DEADLINE)
    assert result[0] != "crash", result[1]
    return result


# --- a kernel import's work folder survives another CLI's sweep ----------------

def _import_kernel_paused(conn: Connection, root: str, archive: str) -> None:
    from ignitevm.operations import kernels

    # Paused once the kernel was unpacked into the work folder, before it is kept.
    _paused(kernels, "_store_kernel", conn)
    _run(conn, kernels.import_kernel, Context(Path(root)), archive)


def test_sweep_leaves_a_running_kernel_import_alone(tmp_path: Path) -> None:
    from tests.unit.test_kernel_oci import image, kernel_layer, modules_layer

    root = tmp_path / "root"
    archive = image(tmp_path, kernel_layer(), modules_layer())
    proc, conn = start(_import_kernel_paused, str(root), str(archive))
    assert conn.poll(DEADLINE) and conn.recv()[0] == "reached"
    Store(root).sweep()  # what every other CLI's create does first
    conn.send("go")
    assert finish(proc, conn) == ("ok", "")
    assert [k.metadata.name for k in Store(root).list(Kernel)] == \
        ["weaveworks/ignite-kernel:5.10.51"]
    assert [n for n in os.listdir(root / "tmp") if not n.endswith(".lock")] == []


def test_workdir_is_private_and_held(tmp_path: Path) -> None:
    store = Store(tmp_path / "root")
    with store.workdir("x-") as work:
        (work / "f").write_text("data")
        store.sweep()
        assert (work / "f").read_text() == "data"
        assert oct(work.stat().st_mode & 0o777) == "0o700"
    assert not work.exists()
    assert os.listdir(tmp_path / "root" / "tmp") == []


# --- two first imports of one image: the second waits and reuses ---------------

def _import_image(conn: Connection, root: str, archive: str, pause: bool) -> None:
    from ignitevm.operations import images

    if pause:
        _paused(images, "_build", conn)
    _run(conn, images.import_image, Context(Path(root)), archive)


def test_two_first_imports_of_one_image_both_succeed(tmp_path: Path) -> None:
    from tests.helpers.images import busybox_image

    root = tmp_path / "root"
    archive = busybox_image(tmp_path / "box.tar")
    first, first_conn = start(_import_image, str(root), str(archive), True)
    assert first_conn.poll(DEADLINE) and first_conn.recv()[0] == "reached"  # mid-build
    second, second_conn = start(_import_image, str(root), str(archive), False)
    # The second either waits for the first (blocked on a lock) or, unguarded,
    # builds its own copy and finishes; let the first go only then.
    wait_until("the second import waits or ends",
               lambda: blocked_on_lock(second.pid) or second_conn.poll())
    first_conn.send("go")
    assert finish(first, first_conn) == ("ok", "")
    assert finish(second, second_conn) == ("ok", "")
    images = Store(root).list(Image)
    assert [i.metadata.name for i in images] == ["testbox:latest"]


# --- image rm against a VM being made over it -----------------------------------

def _fake_base(store: Store) -> tuple[Image, Kernel]:
    """An image and a kernel object with the files a create reads (no VM boots here)."""
    image = Image(metadata=ObjectMeta(name="base:latest", uid="1" * 16,
                                      created="2000-01-01T00:00:00Z"),
                  spec=ImageSpec(oci="base:latest"))
    kernel = Kernel(metadata=ObjectMeta(name="kern:latest", uid="2" * 16,
                                        created="2000-01-01T00:00:00Z"),
                    spec=KernelSpec(oci="kern:latest"))
    with store.creating(image) as stage, open(stage / "image.ext4", "wb") as f:
        f.truncate(1 << 20)
    with store.creating(kernel) as stage:
        (stage / "vmlinux").write_bytes(b"\x7fELF")
    return image, kernel


def _create_paused(conn: Connection, root: str) -> None:
    from ignitevm.operations import vms
    from ignitevm.providers.vmm.qemu.machine import QemuVMM

    _paused(QemuVMM, "create_disk", conn)
    vm = VM(metadata=ObjectMeta(name="web"))
    vm.spec.image.oci, vm.spec.kernel.oci = "base:latest", "kern:latest"
    vm.spec.ssh = False  # type: ignore[assignment]
    _run(conn, vms.create, Context(Path(root)), vm)


def _remove_image(conn: Connection, root: str) -> None:
    from ignitevm.operations import vms

    ctx = Context(Path(root))
    _run(conn, vms.remove_base, ctx, ctx.store.resolve(Image, "base:latest"))


def test_image_rm_waits_for_a_create_over_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _fake_base(Store(root))
    creator, creator_conn = start(_create_paused, str(root))
    assert creator_conn.poll(DEADLINE) and creator_conn.recv()[0] == "reached"
    remover, remover_conn = start(_remove_image, str(root))
    wait_until("image rm waits or ends",
               lambda: blocked_on_lock(remover.pid) or remover_conn.poll())
    creator_conn.send("go")
    assert finish(creator, creator_conn) == ("ok", "")
    status, message = finish(remover, remover_conn)
    assert status == "error" and "in use by VM 'web'" in message
    store = Store(root)
    assert [i.metadata.name for i in store.list(Image)] == ["base:latest"]
    assert [v.metadata.name for v in store.list(VM)] == ["web"]


def test_create_after_image_rm_says_it_is_gone(tmp_path: Path) -> None:
    from ignitevm.operations import vms

    store = Store(tmp_path / "root")
    image, _kernel = _fake_base(store)
    ctx = Context(tmp_path / "root")
    store.delete(image)
    with pytest.raises(IgniteError, match="removed meanwhile"), ctx.store.using(image):
        pass
    vms.remove_base(ctx, _kernel)
    assert store.list(Kernel) == []


def test_four_clis_import_one_image_at_once(tmp_path: Path) -> None:
    """The same race with no hook: four real `ignite image import` processes."""
    import subprocess
    import sys

    from tests.conftest import cli_env
    from tests.helpers.images import busybox_image

    archive = busybox_image(tmp_path / "box.tar")
    env = cli_env(tmp_path / "root")
    procs = [subprocess.Popen([sys.executable, "-m", "ignitevm", "image", "import", str(archive)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errors = [p.communicate()[1] for p in procs]
    results = [(p.returncode, err) for p, err in zip(procs, errors, strict=True)]
    assert [rc for rc, _ in results] == [0, 0, 0, 0], results
    assert [i.metadata.name for i in Store(tmp_path / "root").list(Image)] == ["testbox:latest"]


def test_a_lock_file_swept_while_its_taker_waits_is_no_lock(tmp_path: Path) -> None:
    """The sweeper removes a stale lock file only while it holds it; whoever was
    waiting for it then takes the lock file now at that path, not the removed one."""
    import fcntl
    import threading

    from ignitevm.util.fs import flock, is_locked, unlink_if_unlocked

    lock = tmp_path / "x.lock"
    lock.touch()
    held = os.open(lock, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)          # a sweeper in the middle of its check
    assert not unlink_if_unlocked(lock)       # (another one cannot remove it meanwhile)
    got: list[int] = []
    taker = threading.Thread(target=lambda: got.append(_take(flock, lock)))
    taker.start()
    os.unlink(lock)                           # ... the sweeper removes it, then lets go
    os.close(held)
    taker.join(10)
    assert got and got[0] == os.stat(lock).st_ino  # the taker holds the file at the path
    assert not is_locked(lock)                # (released at the end of its block)


def _take(flock: Any, path: Path) -> int:
    with flock(path) as fd:
        return os.fstat(fd).st_ino
