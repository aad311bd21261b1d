"""Kernels from Ignite-style kernel images (/boot/vmlinux + /lib/modules/<version>)."""

from __future__ import annotations

import io
import logging
import shutil
import tarfile
from pathlib import Path

import pytest

from ignitevm.errors import InvalidInput
from ignitevm.kernels import oci
from ignitevm.kernels.oci import extract_kernel_image, resolve_inside
from tests.conftest import Ignite
from tests.helpers.images import write_docker_archive

VERSION = "5.10.51"
VMLINUX = b"\x7fELF\x02\x01\x01" + b"\0" * 57 + b"Linux version 5.10.51 (x@y) #1 SMP\n\0" * 4
MODULES = f"lib/modules/{VERSION}"
MODULES_DEP = b"kernel/drivers/virtio/virtio.ko:\n"

Entry = tuple[str, bytes | str | None]  # name -> file data, "->target" for a link, None for a dir


def tar_of(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, what in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            data = None
            if what is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif isinstance(what, str):
                info.type, info.linkname = tarfile.SYMTYPE, what.removeprefix("->")
            else:
                info.size, info.mode, data = len(what), 0o644, io.BytesIO(what)
            tf.addfile(info, data)
    return buf.getvalue()


def kernel_layer(link: str | None = f"/boot/vmlinux-{VERSION}") -> bytes:
    entries: list[Entry] = [("boot", None), (f"boot/vmlinux-{VERSION}", VMLINUX)]
    if link is not None:
        entries.append(("boot/vmlinux", "->" + link))
    return tar_of(entries)


def modules_layer(dep: bool = True, version: str = VERSION) -> bytes:
    mods = f"lib/modules/{version}"
    entries: list[Entry] = [("lib", None), ("lib/modules", None), (mods, None),
                            (f"{mods}/kernel", None), (f"{mods}/kernel/drivers", None),
                            (f"{mods}/kernel/drivers/virtio", None),
                            (f"{mods}/kernel/drivers/virtio/virtio.ko", b"\x7fELF fake module"),
                            (f"{mods}/modules.order", b"kernel/drivers/virtio/virtio.ko\n")]
    if dep:
        entries.append((f"{mods}/modules.dep", MODULES_DEP))
    return tar_of(entries)


def image(tmp_path: Path, *layers: bytes) -> Path:
    return write_docker_archive(tmp_path / "kernel.tar", "weaveworks/ignite-kernel:5.10.51",
                                list(layers))


def bzimage(version: str) -> bytes:
    data = bytearray(0x400)
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x300 - 0x200).to_bytes(2, "little")
    text = f"{version} (x@y) #1 SMP\0".encode()
    data[0x300 : 0x300 + len(text)] = text
    return bytes(data)


def test_ignite_kernel_image_with_absolute_link(tmp_path: Path) -> None:
    src = image(tmp_path, kernel_layer(), modules_layer())
    dest = tmp_path / "out"
    kernel, modules, version = extract_kernel_image(src, dest)
    assert version == VERSION
    assert kernel == dest / "boot" / f"vmlinux-{VERSION}"
    assert kernel.read_bytes() == VMLINUX
    assert modules == dest / MODULES
    assert (modules / "modules.dep").read_bytes() == MODULES_DEP
    assert (modules / "kernel/drivers/virtio/virtio.ko").is_file()


def test_one_layer_relative_link(tmp_path: Path) -> None:
    entries: list[Entry] = [("boot", None), (f"boot/vmlinux-{VERSION}", VMLINUX),
                            ("boot/vmlinux", f"->vmlinux-{VERSION}")]
    both = tar_of(entries)
    src = image(tmp_path, both, modules_layer())
    kernel, modules, version = extract_kernel_image(src, tmp_path / "out")
    assert kernel.name == f"vmlinux-{VERSION}" and version == VERSION
    assert modules is not None and modules.name == VERSION


def test_kernel_without_modules(tmp_path: Path) -> None:
    kernel, modules, version = extract_kernel_image(image(tmp_path, kernel_layer()),
                                                    tmp_path / "out")
    assert kernel.is_file() and modules is None and version == VERSION


def test_vmlinuz_when_there_is_no_vmlinux(tmp_path: Path) -> None:
    layer = tar_of([("boot", None), ("boot/vmlinuz-6.1.0-test", bzimage("6.1.0-test")),
                    ("boot/vmlinuz", "->vmlinuz-6.1.0-test"), ("boot/config-6.1.0-test", b"")])
    kernel, modules, version = extract_kernel_image(image(tmp_path, layer), tmp_path / "out")
    assert kernel.name == "vmlinuz-6.1.0-test" and version == "6.1.0-test" and modules is None


def test_bzimage(tmp_path: Path) -> None:
    layer = tar_of([("boot", None), ("boot/bzImage", bzimage("6.6.6"))])
    kernel, _, version = extract_kernel_image(image(tmp_path, layer), tmp_path / "out")
    assert kernel.name == "bzImage" and version == "6.6.6"


def test_vmlinux_preferred_over_vmlinuz(tmp_path: Path) -> None:
    layer = tar_of([("boot", None), ("boot/vmlinuz-6.1.0", bzimage("6.1.0")),
                    ("boot/vmlinux", VMLINUX)])
    kernel, _, version = extract_kernel_image(image(tmp_path, layer), tmp_path / "out")
    assert kernel.name == "vmlinux" and version == VERSION


def test_missing_kernel(tmp_path: Path) -> None:
    layer = tar_of([("boot", None), ("boot/config-5.10.51", b"CONFIG_X=y\n"), ("etc", None)])
    with pytest.raises(InvalidInput, match="holds no kernel") as err:
        extract_kernel_image(image(tmp_path, layer), tmp_path / "out")
    assert "/boot/vmlinux" in str(err.value) and err.value.hint


def test_no_boot_at_all(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="holds no kernel"):
        extract_kernel_image(image(tmp_path, modules_layer()), tmp_path / "out")


def test_dangling_link(tmp_path: Path) -> None:
    layer = tar_of([("boot", None), ("boot/vmlinux", "->/boot/vmlinux-9.9")])
    with pytest.raises(InvalidInput, match=r"/boot/vmlinux is a link to '/boot/vmlinux-9.9'"):
        extract_kernel_image(image(tmp_path, layer), tmp_path / "out")


@pytest.mark.parametrize("target", ["/etc/hostname", "../../../../../../../../etc/hostname",
                                    "/proc/self/exe"])
def test_links_never_reach_host_files(tmp_path: Path, target: str) -> None:
    layer = tar_of([("boot", None), ("boot/vmlinux", "->" + target)])
    with pytest.raises(InvalidInput, match="not a file in the image"):
        extract_kernel_image(image(tmp_path, layer), tmp_path / "out")


def test_not_a_kernel(tmp_path: Path) -> None:
    layer = tar_of([("boot", None), ("boot/vmlinux", b"#!/bin/sh\necho hi\n")])
    with pytest.raises(InvalidInput, match="not a Linux kernel"):
        extract_kernel_image(image(tmp_path, layer), tmp_path / "out")


def test_modules_for_another_version(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = image(tmp_path, kernel_layer(), modules_layer(version="4.19.0"))
    with caplog.at_level(logging.WARNING, logger="ignitevm"):
        _, modules, version = extract_kernel_image(src, tmp_path / "out")
    assert modules is None and version == VERSION
    assert "4.19.0" in caplog.text


def test_depmod_runs_without_modules_dep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> None:
        calls.append([str(a) for a in argv])
        (Path(argv[2]) / MODULES / "modules.dep").write_bytes(MODULES_DEP)

    monkeypatch.setattr(oci.proc, "run", fake_run)
    dest = tmp_path / "out"
    _, modules, _ = extract_kernel_image(image(tmp_path, kernel_layer(), modules_layer(False)),
                                         dest)
    assert calls == [["depmod", "-b", str(dest), VERSION]]
    assert modules == dest / MODULES


def test_depmod_never_writes_through_links(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    outside.write_text("keep me\n")
    mods = tar_of([(f"{MODULES}/modules.dep", f"->{outside}"),
                   (f"{MODULES}/modules.dep.tmp", f"->{outside}")])
    ran: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> None:
        ran.append(argv)
        dep = Path(argv[2]) / MODULES / "modules.dep"
        assert not dep.is_symlink() and not dep.with_suffix(".dep.tmp").is_symlink()
        dep.write_bytes(MODULES_DEP)

    monkeypatch.setattr(oci.proc, "run", fake_run)
    extract_kernel_image(image(tmp_path, kernel_layer(), modules_layer(False), mods),
                         tmp_path / "out")
    assert ran and outside.read_text() == "keep me\n"


@pytest.mark.skipif(shutil.which("depmod", path="/usr/sbin:/sbin") is None,
                    reason="depmod (kmod) is not installed")
def test_real_depmod(tmp_path: Path) -> None:
    layer = tar_of([("lib", None), ("lib/modules", None), (MODULES, None)])
    _, modules, _ = extract_kernel_image(image(tmp_path, kernel_layer(), layer),
                                         tmp_path / "out")
    assert modules is not None and (modules / "modules.dep").is_file()


@pytest.mark.skipif(shutil.which("depmod", path="/usr/sbin:/sbin") is None,
                    reason="depmod (kmod) is not installed")
def test_real_depmod_never_walks_out_through_a_link(tmp_path: Path) -> None:
    """No modules.dep, and `kernel/evil -> <a host folder>`: depmod must not list
    (nor read) the host's modules."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret.ko").write_bytes(b"\x7fELF host module")
    layer = tar_of([("lib", None), ("lib/modules", None), (MODULES, None),
                    (f"{MODULES}/kernel", None), (f"{MODULES}/kernel/evil", f"->{host}")])
    _, modules, _ = extract_kernel_image(image(tmp_path, kernel_layer(), layer),
                                         tmp_path / "out")
    assert modules is not None
    assert b"secret" not in (modules / "modules.dep").read_bytes()


def test_resolve_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib/modules").mkdir(parents=True)
    (root / "lib").symlink_to("/usr/lib")
    (root / "up").symlink_to("../../..")
    (root / "loop").symlink_to("loop")
    r = str(root)
    assert resolve_inside(r, "lib/modules") == f"{r}/usr/lib/modules"
    assert resolve_inside(r, "up/usr/lib") == f"{r}/usr/lib"
    assert resolve_inside(r, "/../lib/../lib") == f"{r}/usr/lib"  # links before ..
    assert resolve_inside(r, "usr/nothing/here") is None
    with pytest.raises(InvalidInput, match="loop"):
        resolve_inside(r, "loop/x")


@pytest.mark.parametrize("dep_path", ["SECRET", "../../../../../../SECRET"])
def test_kernel_import_never_copies_host_files_named_by_modules_dep(
    tmp_path: Path, ignite: Ignite, dep_path: str
) -> None:
    """Before: modules.dep naming a host file put that file into the kernel's modules."""
    secret = tmp_path / "secret.ko"
    secret.write_bytes(b"host secret")
    named = dep_path.replace("SECRET", str(secret).lstrip("/") if dep_path != "SECRET"
                             else str(secret))
    layer = tar_of([("lib", None), ("lib/modules", None), (MODULES, None),
                    (f"{MODULES}/kernel", None),
                    (f"{MODULES}/kernel/virtio_blk.ko", b"\x7fELF fake module"),
                    (f"{MODULES}/modules.dep", f"kernel/virtio_blk.ko: {named}\n".encode())])
    res = ignite("kernel", "import", str(image(tmp_path, kernel_layer(), layer)),
                 "--name", "evil", check=False)
    assert res.returncode == 1, res
    assert res.stderr.startswith("error: ") and "not a path below" in res.stderr
    assert "Traceback" not in res.stderr
    assert "evil" not in ignite("kernel", "ls").stdout
    kernels = ignite.root / "kernel"
    assert not kernels.exists() or not list(kernels.iterdir())
    copies = [p for p in ignite.root.rglob("*") if p.is_file() and p.read_bytes() == b"host secret"]
    assert copies == []
