"""Debian's cloud kernel, fetched with ``apt-get download`` (never installed on the host)."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ignitevm.errors import IgniteError
from ignitevm.log import log
from ignitevm.util.proc import run

META_PACKAGE = "linux-image-cloud-amd64"
APT_ARCHIVES = Path("/var/cache/apt/archives")
APT_HINT = "run 'apt-get update' first, and check that Debian's package sources are reachable"


@dataclass(frozen=True)
class UnpackedKernel:
    kernel: Path
    modules: Path  # lib/modules/<version>
    version: str
    package: str
    package_version: str


def resolve_package(meta: str = META_PACKAGE) -> str:
    """The versioned kernel package the meta-package points at."""
    out = run(["apt-cache", "depends", meta], check=False)
    for line in out.stdout.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if m:
            return m.group(1)
    raise IgniteError(f"apt knows no package {meta}", hint=APT_HINT)


def candidate(package: str) -> str | None:
    """The version apt would take of ``package`` (None if it knows none)."""
    out = run(["apt-cache", "policy", package], check=False).stdout
    m = re.search(r"^\s*Candidate:\s*(\S+)", out, re.M)
    return m.group(1) if m and m.group(1) != "(none)" else None


def download(package: str, dest: Path, archives: Path = APT_ARCHIVES) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    existing = sorted(dest.glob(f"{package}_*.deb"))
    if existing:
        return existing[-1]
    # The very version apt would download, already in apt's own cache (put
    # there by `apt-get install --download-only`, or an install): no network.
    # (apt is asked for its candidate only when the cache holds that package at all)
    cached = sorted(archives.glob(f"{package}_*.deb"))
    version = candidate(package) if cached else None
    if version is not None:
        for deb in sorted(archives.glob(f"{package}_{version.replace(':', '%3a')}_*.deb")):
            if deb.is_file():
                log.info("Taking %s from apt's cache", deb.name)
                shutil.copyfile(deb, dest / deb.name)
                return dest / deb.name
    log.info("Downloading %s with apt-get", package)
    run(["apt-get", "download", "-q", package], cwd=dest, hint=APT_HINT)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if not debs:
        raise IgniteError(f"apt-get download {package} produced no .deb", hint=APT_HINT)
    return debs[-1]


def unpack(deb: Path, dest: Path) -> UnpackedKernel:
    run(["dpkg-deb", "-x", deb, dest])
    kernels = sorted((dest / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise IgniteError(f"{deb.name} holds no kernel (boot/vmlinuz-*)")
    kernel = kernels[-1]
    version = kernel.name.removeprefix("vmlinuz-")
    modules = dest / "lib" / "modules" / version
    if not modules.is_dir():
        raise IgniteError(f"{deb.name} holds no modules for {version}")
    run(["depmod", "-b", dest, version], hint="apt-get install kmod")
    package, pkg_version = deb.name.split("_")[:2]
    return UnpackedKernel(kernel, modules, version, package, pkg_version)


def fetch(cache: Path, work: Path, meta: str = META_PACKAGE) -> UnpackedKernel:
    package = resolve_package(meta)
    deb = download(package, cache / "debs")
    return unpack(deb, work)
