"""The generated initramfs: our init, the agent, the virtio modules in load order."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.guest import build as guest_build

# What the guest needs before it can mount its disk and talk to the host.
# ext4 and the 8250 serial console are built into the kernels we support.
# Each insmod costs ~10-40 ms under TCG, so only what a microvm guest uses:
# virtio-mmio devices (no PCI), the disks, the agent's ports, the network,
# and the ACPI power button (button + evdev, for systemd-logind). vsock joins
# with the Firecracker provider.
WANTED_MODULES = (
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "virtio_net",
    "button",
    "evdev",
)
_MAX_MODULE = 256 << 20  # no module (nor modules.dep) is near this


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


def collect_modules(modules_dir: Path, dest: Path) -> list[str]:
    """Copy the modules the guest needs (with their dependencies) into ``dest``.

    ``modules_dir`` is ``lib/modules/<version>`` with a ``modules.dep``;
    ``dest/load.order`` lists the files in the order to load them. The kernel
    image wrote modules.dep: each path it names must be relative and stay
    below ``modules_dir`` (no ``..``), and is reached beneath it with the
    image's links followed as if ``modules_dir`` were ``/``, so no path or
    link of the image can make a host file part of the initramfs.
    """
    root = os.path.realpath(modules_dir)
    dep = _read_beneath(root, "modules.dep", modules_dir)
    if dep is None:
        raise IgniteError(f"{modules_dir} has no modules.dep",
                          hint="run depmod for this kernel (apt-get install kmod)")
    order = load_order(parse_modules_dep(dep.decode(errors="surrogateescape")), WANTED_MODULES)
    files = [(rel, _module_bytes(root, rel, modules_dir)) for rel in order]
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for rel, data in files:
        name = os.path.basename(rel)
        (dest / name).write_bytes(data)
        names.append(name)
    (dest / "load.order").write_text("".join(f"{n}\n" for n in names))
    return names


def _module_bytes(root: str, rel: str, modules_dir: Path) -> bytes:
    parts = rel.split("/")
    if rel.startswith("/") or ".." in parts or parts[-1] in ("", "."):
        raise InvalidInput(
            f"{modules_dir}/modules.dep names the module {rel!r}, which is not a path"
            " below the module folder",
            hint="the kernel image is malformed or malicious; rebuild it (run depmod in it)",
        )
    data = _read_beneath(root, rel, modules_dir)
    if data is None:
        raise InvalidInput(
            f"{modules_dir}/modules.dep names the module {rel!r}, which is not a file in"
            " the module folder",
            hint="the kernel image is incomplete or malicious; rebuild it (run depmod in it)",
        )
    return data


def _read_beneath(root: str, rel: str, modules_dir: Path) -> bytes | None:
    """The bytes of the regular file ``rel`` beneath ``root``; None if it is not one."""
    from ignitevm.kernels.inside import resolve_inside

    path = resolve_inside(root, rel)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size > _MAX_MODULE:
            raise InvalidInput(f"{modules_dir}: {rel} is too large ({st.st_size} bytes)")
        return f.read()


# /init (the boot sequence, in C: no shell, no fork per step) and the agent.
INIT_PROGRAM = "ignite-init"
GUEST_PROGRAMS = (INIT_PROGRAM, "ignite-agent")


def initramfs_for(kernel_dir: Path, cache: Path) -> Path:
    """The initramfs for a kernel, assembled once per kernel and guest-program version.

    Built at start time (not at kernel import), so a newer ignitevm brings its
    newer init and agent to VMs of kernels imported before.
    """
    h = hashlib.sha256(kernel_dir.name.encode())
    for program in GUEST_PROGRAMS:
        h.update(guest_build.sources_digest(program).encode())
    out = cache / "initramfs" / f"{kernel_dir.name}-{h.hexdigest()[:16]}.img"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        modules = kernel_dir / "modules"
        build_initramfs(out, modules if modules.is_dir() else None, cache)
    return out


def build_initramfs(out: Path, modules: Path | None, cache: Path) -> None:
    """Write the initramfs to ``out``; ``modules`` is a folder from :func:`collect_modules`."""
    buf = io.BytesIO()
    from ignitevm.kernels.cpio import CpioWriter

    w = CpioWriter(buf)
    for d in ("dev", "proc", "sys", "cfg", "newroot", "bin", "lib/modules"):
        w.mkdir(d)
    w.chardev("dev/console", 5, 1)
    w.chardev("dev/null", 1, 3, 0o666)
    w.file("init", guest_build.build(INIT_PROGRAM, cache).read_bytes(), 0o755)
    for program in GUEST_PROGRAMS[1:]:
        w.file(f"bin/{program}", guest_build.build(program, cache).read_bytes(), 0o755)
    names = (modules / "load.order").read_text().split() if modules else []
    for name in names:
        w.file(f"lib/modules/{name}", (modules / name).read_bytes())  # type: ignore[operator]
    w.file("lib/modules/load.order", "".join(f"{n}\n" for n in names).encode())
    w.close()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out)
