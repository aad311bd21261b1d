"""The generated initramfs: busybox, the virtio modules in load order, our init."""

from __future__ import annotations

import io
import os
from importlib import resources
from pathlib import Path

from ignitevm.errors import IgniteError
from ignitevm.guest import build as guest_build
from ignitevm.kernels.cpio import CpioWriter
from ignitevm.util.proc import run, which

# What the guest needs before it can mount its disk and talk to the host.
# ext4 and the 8250 serial console are built into the kernels we support.
WANTED_MODULES = (
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "virtio_net",
    "virtio-rng",
    "vmw_vsock_virtio_transport",
    "button",
    "evdev",
)


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        mod, _, rest = line.partition(":")
        deps[mod.strip()] = rest.split()
    return deps


def module_name(path: str) -> str:
    base = os.path.basename(path)
    for ext in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base.replace("-", "_")


def load_order(deps: dict[str, list[str]], wanted: tuple[str, ...]) -> list[str]:
    """Module paths to insmod, each after everything it depends on."""
    by_name = {module_name(p): p for p in deps}
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str) -> None:
        if path in seen:
            return
        seen.add(path)
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        path = by_name.get(name.replace("-", "_"))
        if path is not None:  # built in, or absent from this kernel
            visit(path)
    return order


def find_busybox() -> Path:
    path = Path(which("busybox"))
    out = run([path, "--help"], check=False)
    if "BusyBox" not in out.stdout + out.stderr:
        raise IgniteError(f"{path} is not busybox", hint="apt-get install busybox-static")
    info = run(["file", "-b", path], check=False).stdout if _has_file() else ""
    if info and "dynamically linked" in info:
        raise IgniteError(
            f"{path} is dynamically linked and cannot run in the initramfs",
            hint="apt-get install busybox-static",
        )
    return path


def _has_file() -> bool:
    try:
        which("file")
    except IgniteError:
        return False
    return True


def build_initramfs(out: Path, modules_dir: Path | None, cache: Path) -> None:
    """Write the initramfs to ``out``; ``modules_dir`` is ``lib/modules/<version>``."""
    busybox = find_busybox()
    applets = run([busybox, "--list"]).stdout.split()
    resize = guest_build.build("ignite-resize", cache)
    order: list[str] = []
    if modules_dir is not None:
        dep_file = modules_dir / "modules.dep"
        if not dep_file.exists():
            raise IgniteError(f"{modules_dir} has no modules.dep",
                              hint="run depmod for this kernel (apt-get install kmod)")
        order = load_order(parse_modules_dep(dep_file.read_text()), WANTED_MODULES)

    buf = io.BytesIO()
    w = CpioWriter(buf)
    for d in ("dev", "proc", "sys", "run", "tmp", "cfg", "newroot", "bin", "sbin", "lib/modules"):
        w.mkdir(d)
    w.chardev("dev/console", 5, 1)
    w.chardev("dev/null", 1, 3, 0o666)
    w.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in applets:
        if applet != "busybox":
            w.symlink(f"bin/{applet}", "busybox")
    w.file("bin/ignite-resize", resize.read_bytes(), 0o755)
    init = resources.files("ignitevm.guest").joinpath("init.sh").read_bytes()
    w.file("init", init, 0o755)
    names = []
    for rel in order:
        name = os.path.basename(rel)
        w.file(f"lib/modules/{name}", (modules_dir / rel).read_bytes() if modules_dir else b"")
        names.append(name)
    w.file("lib/modules/load.order", "".join(f"{n}\n" for n in names).encode())
    w.close()
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out)
