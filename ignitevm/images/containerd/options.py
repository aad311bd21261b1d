"""Where to find containerd (kept free of imports: the CLI path reads it)."""

from __future__ import annotations

from typing import NamedTuple

DEFAULT_SOCKET = "/run/containerd/containerd.sock"
# Where `ctr images pull` and `ctr images import` put images. (Ignite kept the
# images it pulled itself in "firecracker"; Kubernetes nodes use "k8s.io".)
DEFAULT_NAMESPACE = "default"


class ContainerdOptions(NamedTuple):
    socket: str = DEFAULT_SOCKET
    namespace: str = DEFAULT_NAMESPACE
    platform: str | None = None  # os/arch[/variant] to take from an index; default: this host's
