"""`ignite run --runtime containerd` of an image that is only in containerd's store: read
from there on first use (never from a registry), then booted."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Ignite
from tests.containerd.conftest import containerd  # noqa: F401 (the private containerd)
from tests.helpers.containerd import Containerd
from tests.vm.conftest import wait_console


def test_run_reads_containerd_then_boots(
    cli: Ignite,
    kernel: str,
    containerd: Containerd,  # noqa: F811
    tmp_path: Path,
) -> None:
    from tests.helpers.images import busybox_image

    name = "docker.io/test/ctrdbox:1"
    containerd.load(busybox_image(tmp_path / "box.tar", name))
    cli("image", "rm", name, check=False)
    try:
        cli(
            "run",
            name,
            "--runtime",
            "containerd",
            "--containerd-socket",
            str(containerd.socket),
            "--name",
            "fromctrd",
            "--memory",
            "256MB",
            "--size",
            "1GB",
        )
        text = wait_console(cli, "fromctrd", "TEST-READY")
        assert "ignitevm-init: starting /sbin/init" in text
        assert containerd.leases() == []
    finally:
        cli("rm", "-f", "fromctrd", check=False)
        cli("image", "rm", name, check=False)
