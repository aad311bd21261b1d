"""The initramfs init (ignitevm/guest/init*.c) on real VMs: its step trace, and
an image it cannot hand over to, which powers the VM off with one clear line."""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import Ignite
from tests.helpers.images import busybox_layers, write_docker_archive
from tests.vm.conftest import wait_console


def test_debug_traces_each_step(cli: Ignite, testbox: str) -> None:
    cli("run", testbox, "--name", "traced", "--memory", "256MB", "--size", "256MB",
        "--kernel-args", "console=ttyS0 reboot=k panic=1 ignite.debug=1")
    try:
        text = wait_console(cli, "traced", "TEST-READY")
    finally:
        cli("rm", "-f", "traced")
    steps = re.findall(r"ignitevm-init: (\d+\.\d{3}) (.+)", text)
    names = [name.strip() for _, name in steps]
    for step in ("start", "module virtio_blk.ko", "root mounted", "root filesystem grown",
                 "config disk read", "network", "new root ready", "agent started"):
        assert step in names, text[-3000:]
    times = [float(t) for t, name in steps if name.strip() in ("start", "new root ready")]
    assert times == sorted(times)
    assert "ignitevm-init: starting /sbin/init" in text


def test_image_with_neither_init_nor_command_powers_off_saying_why(
        cli: Ignite, kernel: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    base, _top = busybox_layers()  # (the top layer is the one with /sbin/init)
    archive = write_docker_archive(tmp_path_factory.mktemp("noinit") / "noinit.tar",
                                   "noinit:latest", [base], {"Env": ["PATH=/bin"]})
    cli("run", str(archive), "--name", "noinit", "--memory", "128MB", "--size", "256MB")
    try:
        deadline = time.monotonic() + 120
        while "noinit" in cli("ps").stdout and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "noinit" not in cli("ps").stdout  # powered off: QEMU is gone
        text = cli("logs", "noinit").stdout
        assert ("ignitevm-init: error: the image has no /sbin/init and no command to run"
                in text)
    finally:
        cli("rm", "-f", "noinit")
