"""The project's base image (Debian + systemd + openssh) built, booted and stopped for real."""

from __future__ import annotations

import pytest

from tests.conftest import Ignite
from tests.vm.conftest import wait_console


@pytest.fixture(scope="module")
def base(cli: Ignite, kernel: str) -> str:
    cli("image", "build", "base", timeout=900)
    return "base:latest"


def test_build_is_listed_and_reimport_is_free(cli: Ignite, base: str) -> None:
    rows = cli("image", "ls").stdout
    assert "base:latest" in rows
    archive = cli.root / "cache" / "build" / "base.oci.tar"
    res = cli("image", "import", str(archive))
    assert "already imported" in res.stderr


def test_systemd_boots_and_stops_gracefully(cli: Ignite, base: str) -> None:
    cli("run", base, "--name", "sys", "--cpus", "2", "--memory", "512MB")
    text = wait_console(cli, "sys", "Reached target", timeout=240)
    text = wait_console(cli, "sys", "Multi-User System", timeout=240)
    uid = cli("inspect", "vm", "sys", "-t", "{{.ObjectMeta.UID}}").stdout.strip()
    assert "Welcome to" in text or "systemd" in text
    res = cli("stop", "sys", "--timeout", "60")
    assert "did not power off" not in res.stderr
    log = (cli.root / "vm" / uid / "console.log").read_text(errors="replace")
    # The guest saw the ACPI power button and shut down on its own.
    assert "Power key pressed" in log or "Powering off" in log, log[-2000:]
    assert "reboot: Power down" in log
    assert "sys" not in cli("ps").stdout
    cli("rm", "sys")
