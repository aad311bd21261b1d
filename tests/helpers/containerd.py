"""A private containerd for the tests: Debian's `containerd` run as a plain process with its
own config, root, state and socket in a temporary folder (never the system's service, socket
or /var/lib/containerd), and `ctr` pointed at it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.daemon import serving

CONTAINERD = shutil.which("containerd")
CTR = shutil.which("ctr")
START_DEADLINE = 30.0
# Plugins that would reach outside the folder (/opt/containerd, CNI, a tracing endpoint).
_DISABLED = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt",
             "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]


def missing() -> str | None:
    """Why a private containerd cannot run here, or None."""
    for name, path in (("containerd", CONTAINERD), ("ctr", CTR)):
        if path is None:
            return f"{name} is not installed (bash scripts/setup.sh installs it)"
    if os.geteuid() != 0:
        return "containerd needs root"
    return None


@dataclass
class Containerd:
    dir: Path
    socket: Path
    process: subprocess.Popen[bytes]
    log: list[str] = field(default_factory=list)

    @property
    def content_dir(self) -> Path:
        """Where its content store keeps blobs (tests alter them there)."""
        return self.dir / "root" / "io.containerd.content.v1.content" / "blobs" / "sha256"

    def ctr(self, *args: str, namespace: str = "default") -> str:
        res = subprocess.run([CTR or "ctr", "-a", str(self.socket), "-n", namespace, *args],
                             capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed: {res.stderr}")
        return res.stdout

    def load(self, archive: Path, namespace: str = "default", *extra: str) -> None:
        """``ctr images import`` (no unpacking: no snapshots, no mounts)."""
        self.ctr("images", "import", "--no-unpack", *extra, str(archive), namespace=namespace)

    def leases(self, namespace: str = "default") -> list[str]:
        return self.ctr("leases", "ls", "-q", namespace=namespace).split()


def _config(d: Path) -> str:
    disabled = ", ".join(f'"{p}"' for p in _DISABLED)
    return (f'version = 2\nroot = "{d}/root"\nstate = "{d}/state"\n'
            f"disabled_plugins = [{disabled}]\n"
            f'[grpc]\n  address = "{d}/c.sock"\n[ttrpc]\n  address = "{d}/c.sock.ttrpc"\n'
            '[debug]\n  address = ""\n[metrics]\n  address = ""\n')


@contextlib.contextmanager
def running_containerd() -> Iterator[Containerd]:
    """Start containerd in a new folder under /tmp (short: a socket path has at most 107
    bytes); stop it and remove the folder at exit."""
    d = Path(tempfile.mkdtemp(prefix="ctrd-", dir="/tmp"))
    try:
        (d / "config.toml").write_text(_config(d))
        proc = subprocess.Popen([CONTAINERD or "containerd", "--config", str(d / "config.toml")],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=dict(os.environ, OTEL_SDK_DISABLED="1"))
        ctrd = Containerd(d, d / "c.sock", proc)
        with serving(proc, "containerd successfully booted", "containerd", ctrd.log,
                     START_DEADLINE):
            yield ctrd
    finally:
        shutil.rmtree(d, ignore_errors=True)
