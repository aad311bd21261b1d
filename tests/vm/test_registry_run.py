"""`ignite run` of an image that is only in a registry: pulled on first use, then booted."""

from __future__ import annotations

from tests.conftest import Ignite
from tests.helpers.registry import Registry
from tests.vm.conftest import wait_console


def test_run_pulls_then_boots(cli: Ignite, kernel: str, plain_registry: Registry) -> None:
    ref = f"{plain_registry.host}/test/busybox:1"
    cli("image", "rm", ref, check=False)
    try:
        res = cli("run", ref, "--name", "pulled", "--memory", "256MB", "--size", "1GB")
        assert "Downloaded newer image" in res.stderr
        text = wait_console(cli, "pulled", "TEST-READY")
        assert "ignitevm-init: starting /sbin/init" in text
        again = cli("run", ref, "--name", "pulled2", "--pull", "always", "--memory", "256MB",
                    "--size", "1GB")
        assert "Image is up to date" in again.stderr
    finally:
        cli("rm", "-f", "pulled", "pulled2", check=False)
        cli("image", "rm", ref, check=False)
