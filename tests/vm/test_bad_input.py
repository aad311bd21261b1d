"""Bad input: one clear line, exit 1, no traceback, and nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Ignite
from tests.vm.conftest import _qemu_pids


def _state(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "vm").rglob("*")} | {
        str(p.relative_to(root)) for p in (root / "tmp").rglob("*")}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memory", "12XB"], "invalid --memory '12XB'"),
        (["--memory", "1Gb"], "bits"),
        (["--cpus", "0"], "invalid --cpus 0"),
        (["--size", "1MB"], "smaller than the image"),
        (["--copy-files", "rel:/x"], "must be absolute"),
        (["--label", "nokey"], "invalid label value"),
        (["--name", "Bad_Name"], "invalid VM name"),
        (["--kernel-image", "nosuchkernel"], "can't find kernel"),
        (["--memory", "4000000GB"], "must be between 64MB and 1TB"),
        (["--volumes", "/etc/passwd:/data"], "is not a block device"),
        (["--ssh=/nonexistent/key"], "invalid SSH key"),
        (["--network-plugin", "slirp"], "unknown network plugin 'slirp'"),
        (["--network-plugin", "cni", "--network", "nosuchnet"],
         "network 'nosuchnet' does not exist"),
        (["--network-plugin", "user", "--network", "nosuchnet"],
         "need --network-plugin cni"),
        (["--network-plugin", "cni", "--ip", "10.61.0.300"], "invalid --ip"),
        (["--mac", "01:00:00:00:00:01"], "invalid --mac"),
        (["--dns", "nameserver"], "invalid --dns"),
        (["-p", "80:80:80:80"], "invalid port mapping"),
        (["--pull", "sometimes"], "invalid value 'sometimes' for --pull"),
        (["--network-plugin", "cni", "--ip", "10.61.0.1"], "is the gateway of network"),
        (["--network-plugin", "user", "-p", "10.9.9.9:8080:80"],
         "10.9.9.9 is not an address of this host"),
        (["--network-plugin", "passt", "-p", "10.9.9.9:8080:80"],
         "10.9.9.9 is not an address of this host"),
        (["--network-plugin", "none", "-p", "8080:80"], "need a network"),
        (["--network-plugin", "none", "--ssh"], "need a network"),
    ],
)
def test_bad_run_flags(cli: Ignite, testbox: str, args: list[str], message: str) -> None:
    before = _state(cli.root)
    pids = _qemu_pids(cli.root)
    res = cli("run", testbox, "--name", "badone", *args, check=False) if "--name" not in args \
        else cli("run", testbox, *args, check=False)
    assert res.returncode == 1, res
    assert message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0]
    assert _state(cli.root) == before
    assert _qemu_pids(cli.root) == pids
    assert "badone" not in cli("ps", "-a").stdout


def test_unknown_image(cli: Ignite, kernel: str) -> None:
    res = cli("run", "no-such-image", check=False)
    assert res.returncode == 1 and "can't find image" in res.stderr


def test_duplicate_name(cli: Ignite, testbox: str) -> None:
    cli("create", testbox, "--name", "twin", "--size", "256MB")
    res = cli("create", testbox, "--name", "twin", check=False)
    assert res.returncode == 1 and "already exists" in res.stderr
    assert cli("ps", "-a").stdout.count(" twin") == 1
    cli("rm", "twin")


def test_unknown_vm(cli: Ignite, vm_root: Path) -> None:
    for cmd in (["stop", "nope"], ["rm", "nope"], ["logs", "nope"], ["start", "nope"]):
        res = cli(*cmd, check=False)
        assert res.returncode == 1 and "can't find vm" in res.stderr


def test_image_and_kernel_in_use_are_kept(cli: Ignite, testbox: str, kernel: str) -> None:
    cli("create", testbox, "--name", "user", "--size", "256MB")
    for cmd in (["image", "rm", testbox], ["rmi", testbox], ["rmk", kernel]):
        res = cli(*cmd, check=False)
        assert res.returncode == 1 and "is in use by VM 'user'" in res.stderr
    assert testbox in cli("image", "ls").stdout
    cli("rm", "user")
