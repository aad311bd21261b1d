"""Weave Ignite's own end-to-end scenarios (its ``e2e/`` folder, v0.10), ported.

Every test is named after the Ignite test it ports (``test_<GoName>``, or a
parameter id carrying the Go name). What changes on the way:

- Ignite booted ``weaveworks/ignite-ubuntu`` (systemd + sshd) from a registry;
  here ``e2ebox`` is built locally: busybox with all its applets, and an init
  that powers off on ``SIGUSR2`` (the signal ``ignite stop`` sends a busybox
  init), as a real init would.
- Ignite's ``run --ssh`` returned only once the guest's sshd answered; e2ebox
  has no sshd, so where a scenario needs a booted guest the test waits for the
  init's ready line on the console instead.
- Scenarios that need what this host or ignitevm lacks (Docker, containerd,
  the internet) keep their place as skips that say why. Where Ignite ran
  one scenario per runtime/network plugin, the same scenario also runs with
  ours (``QemuAndUser``, ``QemuAndCNI`` on a CNI network of the test's own,
  ``QemuAndNone``); the ones that curled google.com fetch from an HTTP server
  the test runs on this host's own address instead.
- Ignite passed ``--runtime``/``--network-plugin`` before the subcommand
  (``ignite --runtime=docker run ...``) and wrote ``run --ssh IMAGE`` (``--ssh``
  took a value only as ``--ssh=PATH``). ignitevm reads both as Ignite did; the
  run scenario and test_run_ssh_flag_then_image keep those forms, the others
  put the flags after the subcommand so that they test what they are about.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Ignite, Result, cli_env
from tests.helpers.images import BUSYBOX, busybox_layers, write_docker_archive
from tests.helpers.registry import Registry
from tests.vm.conftest import wait_console

pytestmark = pytest.mark.vm

IMAGE = "e2ebox:latest"
READY = "E2E-READY"
SANDBOX = "weaveworks/ignite:dev"
CUSTOM_KERNEL = "e2e/ignite-kernel:custom"

E2E_INIT = """#!/bin/sh
# Power off on SIGUSR2 (busybox init's signal, which `ignite stop` sends).
trap '/bin/busybox sync; /bin/busybox umount -a -r 2>/dev/null; /bin/busybox poweroff -f' USR2
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
echo "E2E-READY"
while true; do /bin/busybox sleep 3600 & wait $!; done
"""

NO_DOCKER = ("needs the `docker` runtime: no Docker engine on this host, and ignitevm runs "
             "VMs under QEMU directly")
NO_DOCKER_BRIDGE = "needs the `docker-bridge` network plugin, which ignitevm does not have"
NO_CONTAINERD = ("needs the `containerd` runtime: ignitevm runs VMs under QEMU directly, "
                 "with no container runtime")
NO_CNI = ("the `cni` network plugin works here (tests/vm/test_network.py), but not with "
          "that runtime")
NO_INTERNET = "needs the internet (`ignite exec <vm> curl google.com`); this host has none"

IGNITE_PROVIDERS = [
    ("DockerAndDockerBridge", "docker", "docker-bridge", f"{NO_DOCKER}; {NO_DOCKER_BRIDGE}"),
    ("DockerAndCNI", "docker", "cni", f"{NO_DOCKER}; {NO_CNI}"),
    ("ContainerdAndCNI", "containerd", "cni", f"{NO_CONTAINERD}; {NO_CNI}"),
]


def _ignite_params(prefix: str, extra_reason: str = "") -> list:
    """One skipped parameter per runtime/plugin pair that Ignite's test ran with."""
    return [pytest.param(rt, plugin, id=f"{prefix}{suffix}",
                         marks=pytest.mark.skip(reason=extra_reason + reason))
            for suffix, rt, plugin, reason in IGNITE_PROVIDERS]


# ---- helpers -----------------------------------------------------------------

def _env(cli: Ignite) -> dict[str, str]:
    return cli_env(cli.root)


IGNITE = [sys.executable, "-m", "ignitevm"]
IGNITED = [sys.executable, "-c", "import sys; from ignitevm.daemon.main import main; "
           "sys.exit(main())"]


def _combined(res: Result) -> str:
    """stdout + stderr, as Go's CombinedOutput() gave Ignite's tests."""
    return res.stdout + res.stderr


def _cleanup(cli: Ignite, *names: str) -> None:
    """Remove those of ``names`` that exist (for finally: blocks)."""
    existing = set(cli("ps", "-a", "-t", "{{.ObjectMeta.Name}}", check=False).stdout.split())
    doomed = [n for n in names if n in existing]
    if doomed:
        cli("rm", "-f", *doomed, check=False)


def _tar(entries: list[tuple[str, bytes | None, int]]) -> bytes:
    """A layer: (path, data or None for a symlink to busybox, mode)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _poll(read: Callable[[], str], want: str, proc: subprocess.Popen[bytes],
          timeout: float) -> None:
    """Re-read until ``read()`` gives ``want``; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while True:
        got = read()
        if got == want:
            return
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"ignited exited with {proc.returncode}: {err.strip()}")
        if time.monotonic() > deadline:
            assert got == want
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- fixtures ----------------------------------------------------------------

@pytest.fixture(scope="module")
def e2ebox(cli: Ignite, kernel: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[str]:
    """Our stand-in for weaveworks/ignite-ubuntu (see the module docstring)."""
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    links = _tar([(f"bin/{a}", None, 0o777) for a in applets if a not in ("busybox", "sh")])
    archive = write_docker_archive(tmp_path_factory.mktemp("e2ebox") / "e2ebox.tar", IMAGE,
                                   [*busybox_layers(E2E_INIT), links],
                                   {"Cmd": ["/sbin/init"], "Env": ["PATH=/bin"]})
    cli("image", "import", str(archive))
    yield IMAGE
    cli("rmi", IMAGE, check=False)


@pytest.fixture
def cni_default(cli: Ignite) -> Iterator[str]:
    """A CNI network of the test's own (never the host's ignite0) as the
    default network of the session's root, for this test only."""
    from tests.helpers.cninet import remove_network, require_cni, write_default

    require_cni()
    name, bridge, _subnet = write_default(cli.root, tag=23)
    try:
        yield name
    finally:
        (cli.root / "cni" / "default.conflist").unlink(missing_ok=True)
        remove_network(name, bridge)


@pytest.fixture
def outside() -> Iterator[str]:
    """The "outside world" Ignite's tests curled (google.com): a server on
    this host's own address, as this host has no internet."""
    from tests.helpers.hostserver import serving

    with serving() as url:
        if url is None:
            pytest.skip("this host has no non-loopback IPv4 address to serve on")
        yield url


def _providers(request: pytest.FixtureRequest, plugin: str) -> None:
    if plugin == "cni":
        request.getfixturevalue("cni_default")


def _curl(cli: Ignite, name: str, url: str) -> None:
    """``ignite exec <vm> curl google.com``, with busybox wget and the host's server."""
    from tests.helpers.hostserver import BODY

    wait_console(cli, name, READY)  # (Ignite's run --ssh returned once sshd answered)
    assert cli("exec", name, "wget", "-q", "-O", "-", url).stdout == BODY.decode()


@pytest.fixture(scope="module")
def custom_kernel(cli: Ignite, kernel: str, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[str]:
    """The session kernel again, as an Ignite-style kernel image under another name."""
    uid = cli("inspect", "kernel", kernel, "-t", "{{.ObjectMeta.UID}}").stdout.strip()
    version = cli("inspect", "kernel", kernel, "-t", "{{.Status.Version}}").stdout.strip()
    kdir = cli.root / "kernel" / uid
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(kdir / "vmlinux", arcname="boot/vmlinux")
        for ko in sorted((kdir / "modules").glob("*.ko")):
            tar.add(ko, arcname=f"lib/modules/{version}/kernel/{ko.name}")
    archive = write_docker_archive(tmp_path_factory.mktemp("kernel") / "kernel.tar",
                                   CUSTOM_KERNEL, [buf.getvalue()])
    cli("kernel", "import", str(archive))
    yield CUSTOM_KERNEL
    cli("rmk", CUSTOM_KERNEL, check=False)


@pytest.fixture(scope="module")
def shared_vm(cli: Ignite, e2ebox: str) -> Iterator[str]:
    """One booted VM for the scenarios that only use it (cp, exec, ps).

    Ignite ran one VM per test, each ``run --ssh``; sharing saves a boot each.
    """
    name = "e2e-test-shared-vm"
    cli("run", f"--name={name}", e2ebox, "--ssh")
    try:
        wait_console(cli, name, READY)
        yield name
    finally:
        _cleanup(cli, name)


# ---- config_test.go: TestConfigFile --------------------------------------------

@dataclass(frozen=True)
class ConfigCase:
    config: str
    vm_config: str = ""
    args: tuple[str, ...] = ()
    # (memory, cpus, disk size, kernel or "" for the default one, ssh); None: run fails
    want: tuple[str, str, str, str, bool] | None = None


CONFIG_HEAD = "---\napiVersion: ignite.weave.works/v1alpha4\nkind: Configuration\n"
DEFAULTS_2GB = CONFIG_HEAD + """metadata:
  name: test-config
spec:
  vmDefaults:
    memory: "2GB"
    diskSize: "3GB"
    cpus: 2
"""
VM_HEAD = "\napiVersion: ignite.weave.works/v1alpha4\nkind: VM\n"

CONFIG_CASES = {
    "invalid config": ConfigCase(config=""),
    "minimal valid config": ConfigCase(CONFIG_HEAD, want=("512.0 MB", "1", "4.0 GB", "", False)),
    "custom vm properties": ConfigCase(DEFAULTS_2GB + f"""    sandbox:
      oci: {SANDBOX}
    kernel:
      oci: {CUSTOM_KERNEL}
    ssh: true
""", want=("2.0 GB", "2", "3.0 GB", CUSTOM_KERNEL, True)),
    "runtime and network config": ConfigCase(CONFIG_HEAD + """metadata:
  name: test-config
spec:
  runtime: docker
  networkPlugin: docker-bridge
""", want=("512.0 MB", "1", "4.0 GB", "", False)),
    "override properties": ConfigCase(
        DEFAULTS_2GB, args=("--memory=1GB", "--size=1GB", "--cpus=1", "--ssh"),
        want=("1024.0 MB", "1", "1024.0 MB", "", True)),
    "vm config": ConfigCase(
        DEFAULTS_2GB, VM_HEAD + 'spec:\n  memory: "1GB"\n  diskSize: "2GB"\n  cpus: 1\n',
        want=("1024.0 MB", "1", "2.0 GB", "", False)),
    "vm config and flags": ConfigCase(
        DEFAULTS_2GB, VM_HEAD + 'spec:\n  memory: "1GB"\n  diskSize: "2GB"\n',
        args=("--size=1GB", "--cpus=1"), want=("1024.0 MB", "1", "1024.0 MB", "", False)),
}
CONFIG_VM = "e2e-test-ignite-config-file"
# Ignite's exact ps template, single quotes included (no shell took them off).
IGNITE_CONFIG_TEMPLATE = ("'{{.Spec.Memory}} {{.Spec.CPUs}} {{.Spec.DiskSize}} "
                          "{{.Spec.Image.OCI}} {{.Spec.Sandbox.OCI}} {{.Spec.Kernel.OCI}} "
                          "{{.Spec.SSH}}'")
FIELDS_TEMPLATE = ("{{.Spec.Memory}}|{{.Spec.CPUs}}|{{.Spec.DiskSize}}|{{.Spec.Image.OCI}}|"
                   "{{.Spec.Kernel.OCI}}")


@dataclass(frozen=True)
class ConfigResult:
    ignite_template: str  # `ps` with Ignite's exact template
    fields: str  # `ps` with FIELDS_TEMPLATE
    ssh: bool  # spec.ssh set, from `inspect -o json`


@pytest.fixture(scope="module")
def config_result(cli: Ignite, e2ebox: str, custom_kernel: str,
                  tmp_path_factory: pytest.TempPathFactory
                  ) -> Callable[[str], ConfigResult]:
    """Run one TestConfigFile case (once, for both tests that read it)."""
    done: dict[str, ConfigResult] = {}

    def result(name: str) -> ConfigResult:
        if name in done:
            return done[name]
        case = CONFIG_CASES[name]
        folder = tmp_path_factory.mktemp("config")
        cfg = folder / "ignite-config-file-test"
        cfg.write_text(case.config)
        args = ["run", f"--name={CONFIG_VM}", f"--sandbox-image={SANDBOX}",
                f"--ignite-config={cfg}", e2ebox]
        if case.vm_config:
            (folder / "ignite-vm-config").write_text(case.vm_config)
            args.append(f"--config={folder / 'ignite-vm-config'}")
        try:
            cli(*args, *case.args)
            name_filter = "--filter={{.ObjectMeta.Name}}=" + CONFIG_VM
            done[name] = ConfigResult(
                _combined(cli("ps", name_filter, f"--template={IGNITE_CONFIG_TEMPLATE}")).strip(),
                _combined(cli("ps", name_filter, f"--template={FIELDS_TEMPLATE}")).strip(),
                "ssh" in json.loads(cli("inspect", "vm", CONFIG_VM).stdout)["spec"])
            cli("rm", "-f", CONFIG_VM, f"--ignite-config={cfg}")
        finally:
            _cleanup(cli, CONFIG_VM)
        return done[name]

    return result


def _config_param(name: str, marks: tuple = ()) -> object:
    if name == "runtime and network config":
        marks = (*marks, pytest.mark.skip(reason=f"{NO_DOCKER}; {NO_DOCKER_BRIDGE} (the "
                                          "Configuration's spec.runtime/spec.networkPlugin)"))
    return pytest.param(name, id=name.replace(" ", "-"), marks=marks)


@pytest.mark.parametrize("case", [_config_param(n) for n in CONFIG_CASES])
def test_TestConfigFile(cli: Ignite, e2ebox: str, kernel: str, tmp_path: Path,
                        config_result: Callable[[str], ConfigResult], case: str) -> None:
    """Precedence: defaults < Configuration vmDefaults < --config VM file < flags.

    ``ignite run --ignite-config=F [--config=V] [flags]``, then ``ps --filter
    --template`` shows the VM's memory, CPUs, disk size, image, kernel and SSH.
    An empty Configuration file makes ``run`` fail.
    """
    spec = CONFIG_CASES[case]
    if spec.want is None:
        cfg = tmp_path / "ignite-config-file-test"
        cfg.write_text(spec.config)
        try:
            res = cli("run", f"--name={CONFIG_VM}", f"--sandbox-image={SANDBOX}",
                      f"--ignite-config={cfg}", e2ebox, check=False)
            assert res.returncode == 1, _combined(res)
            assert CONFIG_VM not in cli("ps", "-a").stdout
        finally:
            _cleanup(cli, CONFIG_VM)
        return
    memory, cpus, disk, kern, ssh = spec.want
    got = config_result(case)
    assert got.fields == f"{memory}|{cpus}|{disk}|{e2ebox}|{kern or kernel}"
    assert got.ssh is ssh


@pytest.mark.parametrize("case", [_config_param(n)
                                  for n in CONFIG_CASES if CONFIG_CASES[n].want is not None])
def test_TestConfigFile_exact_ps_output(kernel: str, e2ebox: str, case: str,
                                        config_result: Callable[[str], ConfigResult]) -> None:
    """TestConfigFile's own assertion: the whole ``ps --template`` line, as Ignite printed it.

    (The precedence itself is checked by test_TestConfigFile; this adds how
    Ignite rendered the sandbox image and ``{{.Spec.SSH}}``.)
    """
    memory, cpus, disk, kern, ssh = CONFIG_CASES[case].want  # type: ignore[misc]
    want = (f"'{memory} {cpus} {disk} {e2ebox} {SANDBOX} {kern or kernel} "
            f"{'{true }' if ssh else '<nil>'}'")
    assert config_result(case).ignite_template == want


# ---- cp_test.go ------------------------------------------------------------------

@pytest.mark.parametrize("content", [pytest.param(b"some example file content",
                                                  id="file-with-content"),
                                     pytest.param(b"", id="empty-file")])
def test_TestCopyFileFromHostToVM(cli: Ignite, shared_vm: str, tmp_path: Path,
                                  content: bytes) -> None:
    """``ignite cp FILE vm:FILE``: the VM then has the same bytes at that path."""
    src = tmp_path / "ignite-cp-test"
    src.write_bytes(content)
    cli("cp", str(src), f"{shared_vm}:{src}")
    assert _combined(cli("exec", shared_vm, "cat", str(src))) == content.decode()


def test_TestCopySymlinkedFileFromHostToVM(cli: Ignite, shared_vm: str, tmp_path: Path
                                           ) -> None:
    """Copying a symlink copies the file it points to, under the link's path."""
    target = tmp_path / "ignite-symlink-cp-test"
    target.write_text("Some file content.")
    link = tmp_path / "ignite-symlink-cp-test-link"
    link.symlink_to(target)
    cli("cp", str(link), f"{shared_vm}:{link}")
    assert _combined(cli("exec", shared_vm, "cat", str(link))) == "Some file content."


def test_TestCopyFileFromVMToHost(cli: Ignite, shared_vm: str, tmp_path: Path) -> None:
    """``ignite cp vm:/proc/version HOST`` gives what ``exec cat /proc/version`` prints."""
    want = cli("exec", shared_vm, "cat", "/proc/version").stdout
    dest = tmp_path / "ignite-os-version"
    cli("cp", f"{shared_vm}:/proc/version", str(dest))
    assert dest.read_text().strip() == want.strip()


def test_TestCopyDirectoryFromHostToVM(cli: Ignite, shared_vm: str, tmp_path: Path) -> None:
    """``ignite cp DIR vm:DIR`` creates the folder in the VM, with its file.

    Ignite ran ``exec vm "find ..."`` as one shell string (over SSH); that form
    is test_exec_of_one_shell_string below, so this one passes argv words.
    """
    src = tmp_path / "ignite-cp-dir-test"
    src.mkdir()
    (src / "ignite-cp-file").write_text("some file content")
    cli("cp", str(src), f"{shared_vm}:{src}")
    found = cli("exec", shared_vm, "--", "find", str(src.parent), "-type", "d",
                "-name", src.name)
    assert _combined(found).strip() == str(src)
    cat = cli("exec", shared_vm, "cat", str(src / "ignite-cp-file"))
    assert _combined(cat).strip() == "some file content"


def test_TestCopyDirectoryFromVMToHost(cli: Ignite, shared_vm: str, tmp_path: Path) -> None:
    """``ignite cp vm:DIR DIR`` brings the folder and its file to the host.

    (argv words instead of Ignite's shell strings, as above.)
    """
    folder = tmp_path / f"ignite-cp-dir-test{os.getpid() % 10000}"
    cli("exec", shared_vm, "--", "mkdir", "-p", str(folder))
    cli("exec", shared_vm, "--", "sh", "-c", f"echo some content on VM > {folder}/ignite-cp-file")
    cli("cp", f"{shared_vm}:{folder}", str(folder))
    assert folder.is_dir()
    assert (folder / "ignite-cp-file").read_text().strip() == "some content on VM"


def test_exec_of_one_shell_string(cli: Ignite, shared_vm: str, tmp_path: Path) -> None:
    """How TestCopyDirectoryFromVMToHost/HostToVM drove the VM: one string, a shell command."""
    folder = tmp_path / "ignite-cp-dir-test-shell"
    cli("exec", shared_vm, f"mkdir -p {folder}")
    cli("exec", shared_vm, f"echo some content on VM > {folder}/ignite-cp-file")
    found = cli("exec", shared_vm, f"find {folder.parent} -type d -name {folder.name}")
    assert found.stdout.strip() == str(folder)


# ---- vm_exec_test.go -----------------------------------------------------------

def test_TestVMExecInteractive(cli: Ignite, shared_vm: str) -> None:
    """Stdin piped into ``ignite exec vm tee afile.txt`` lands in the file, byte for byte."""
    cli("exec", shared_vm, "tee", "afile.txt", input="foooo...")
    assert _combined(cli("exec", shared_vm, "cat", "afile.txt")) == "foooo..."


# ---- vm_ps_test.go -------------------------------------------------------------

def test_TestVMpsWithOutdatedStatus(cli: Ignite, shared_vm: str) -> None:
    """A running VM whose stored status says stopped: ``ps -a`` shows ``*Up`` and a note."""
    uid = cli("ps", "-a", "-f", "{{.ObjectMeta.Name}}=" + shared_vm,
              "-t", "{{.ObjectMeta.UID}}").stdout.strip()
    metadata = cli.root / "vm" / uid / "metadata.json"
    original = metadata.read_text()
    obj = json.loads(original)
    obj["status"]["running"] = False
    metadata.write_text(json.dumps(obj, indent=2))
    try:
        out = _combined(cli("ps", "-a"))
        assert "*Up" in out
        assert "The symbol *" in out
    finally:
        metadata.write_text(original)  # as Ignite did, for the VM's later users


# ---- run_test.go -----------------------------------------------------------------

@pytest.mark.parametrize("runtime,plugin", [
    *_ignite_params("TestIgniteRunWith"),
    pytest.param("qemu", "user", id="QemuAndUser"),
    pytest.param("qemu", "cni", id="QemuAndCNI"),
])
def test_TestIgniteRunWith(cli: Ignite, e2ebox: str, runtime: str, plugin: str,
                           request: pytest.FixtureRequest) -> None:
    """``ignite --runtime=R --network-plugin=P run --name=N IMAGE``, then ``rm -f N``."""
    _providers(request, plugin)
    name = f"e2e-test-ignite-run-{runtime}-and-{plugin}"
    try:
        cli(f"--runtime={runtime}", f"--network-plugin={plugin}", "run", f"--name={name}",
            e2ebox)
        cli("rm", "-f", name)
    finally:
        _cleanup(cli, name)


@pytest.mark.parametrize("runtime,plugin,extra", [
    *[pytest.param(rt, plugin, extra, id=f"{prefix}CurlWith{suffix}",
                   marks=pytest.mark.skip(reason=f"{NO_INTERNET}; {reason}"))
      for prefix, extra in (("Test", ()), ("TestIDPrefix", ("--id-prefix=e2e",)))
      for suffix, rt, plugin, reason in IGNITE_PROVIDERS],
    pytest.param("qemu", "user", (), id="TestCurlWithQemuAndUser"),
    pytest.param("qemu", "cni", (), id="TestCurlWithQemuAndCNI"),
    pytest.param("qemu", "cni", ("--id-prefix=e2e",), id="TestIDPrefixCurlWithQemuAndCNI"),
])
def test_TestCurl(cli: Ignite, e2ebox: str, runtime: str, plugin: str,
                  extra: tuple[str, ...], request: pytest.FixtureRequest) -> None:
    """A VM run with --ssh (and maybe --id-prefix) reaches the outside world:
    ``exec curl`` (here: the host's server, see ``outside``)."""
    _providers(request, plugin)
    url = request.getfixturevalue("outside")
    name = f"e2e-test-curl-{runtime}-and-{plugin}"
    try:
        cli(f"--runtime={runtime}", f"--network-plugin={plugin}", "run", f"--name={name}",
            e2ebox, "--ssh", *extra)
        _curl(cli, name, url)
    finally:
        _cleanup(cli, name)


def test_TestRunWithoutName(cli: Ignite, e2ebox: str) -> None:
    """A VM run without --name gets a generated one, found again by its label."""
    label_filter = "--filter={{.ObjectMeta.Labels}}=~testName:TestRunWithoutName"
    try:
        cli("run", e2ebox, "--label", "testName=TestRunWithoutName")
        name = cli("ps", label_filter, "--template={{.ObjectMeta.Name}}").stdout.strip()
        assert name and len(name.split()) == 1, name
        cli("rm", "-f", name)
    finally:
        _cleanup(cli, *cli("ps", "-a", label_filter, "-t", "{{.ObjectMeta.Name}}",
                           check=False).stdout.split())


def test_run_ssh_flag_then_image(cli: Ignite, e2ebox: str) -> None:
    """The argument order of Ignite's cp, lifecycle and concurrency tests: ``--ssh IMAGE``.

    (Their ports here write ``IMAGE --ssh``, so that they test what they are about.)
    """
    name = "e2e-test-ssh-then-image"
    try:
        cli("run", f"--name={name}", "--ssh", e2ebox)
        spec = json.loads(cli("inspect", "vm", name).stdout)["spec"]
        assert (spec["image"]["oci"], spec.get("ssh")) == (e2ebox, True)
    finally:
        _cleanup(cli, name)


# ---- run_volume_test.go ------------------------------------------------------------

@pytest.mark.parametrize("runtime,plugin", [
    *_ignite_params("TestVolumeWith"),
    pytest.param("qemu", "user", id="QemuAndUser"),
])
def test_TestVolumeWith(cli: Ignite, e2ebox: str, tmp_path: Path, runtime: str,
                        plugin: str) -> None:
    """A file written on a block-device volume outlives its VM: a second VM sees it.

    Loop device with ext4 -> ``run --volumes=LOOP:/my-vol`` -> ``exec touch``
    -> ``stop`` (graceful, no -f) -> a second VM on the same volume ->
    ``exec stat`` of the file succeeds. (64 MiB instead of Ignite's 1 GiB.)
    """
    name = f"e2e-test-volume-{runtime}-and-{plugin}"
    second = name + "-2"
    vol = tmp_path / f"{name}_vol"
    with vol.open("wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(vol)], check=True, capture_output=True)
    loop = subprocess.run(["losetup", "--find", "--show", str(vol)], check=True,
                          capture_output=True, text=True).stdout.strip()
    providers = (f"--runtime={runtime}", f"--network-plugin={plugin}")
    try:
        cli("run", f"--name={name}", "--ssh", f"--volumes={loop}:/my-vol", e2ebox, *providers)
        wait_console(cli, name, READY)
        cli("exec", name, "touch", "/my-vol/hello-world")
        cli("stop", name)
        cli("run", f"--name={second}", "--ssh", f"--volumes={loop}:/my-vol", e2ebox,
            *providers)
        wait_console(cli, second, READY)
        cli("exec", second, "stat", "/my-vol/hello-world")
    finally:
        _cleanup(cli, name, second)
        subprocess.run(["losetup", "--detach", loop], check=True)


# ---- vm_lifecycle_test.go ----------------------------------------------------------

@pytest.mark.parametrize("runtime,plugin", [
    *_ignite_params("TestVMLifecycleWith", f"{NO_INTERNET}; "),
    pytest.param("qemu", "user", id="TestVMLifecycleWithQemuAndUser"),
    pytest.param("qemu", "cni", id="TestVMLifecycleWithQemuAndCNI"),
])
def test_TestVMLifecycleWith(cli: Ignite, e2ebox: str, runtime: str, plugin: str,
                             request: pytest.FixtureRequest) -> None:
    """run --ssh, ``exec curl``, stop, start with the same providers, ``exec curl`` again."""
    _providers(request, plugin)
    url = request.getfixturevalue("outside")
    name = f"e2e-test-vm-lifecycle-{runtime}-and-{plugin}"
    providers = (f"--runtime={runtime}", f"--network-plugin={plugin}")
    try:
        cli(*providers, "run", f"--name={name}", e2ebox, "--ssh")
        _curl(cli, name, url)
        cli("stop", name)
        cli("start", name, *providers)
        _curl(cli, name, url)
    finally:
        _cleanup(cli, name)


@pytest.mark.parametrize("first,then", [
    pytest.param(("containerd", "cni"), ("docker", "docker-bridge"), id="TestVMProviderSwitch",
                 marks=pytest.mark.skip(reason=f"{NO_INTERNET}; {NO_DOCKER}; "
                                        f"{NO_DOCKER_BRIDGE}; {NO_CONTAINERD}; {NO_CNI}")),
    pytest.param(("qemu", "cni"), ("qemu", "user"), id="QemuCNIThenUser"),
])
def test_TestVMProviderSwitch(cli: Ignite, e2ebox: str, first: tuple[str, str],
                              then: tuple[str, str], request: pytest.FixtureRequest) -> None:
    """Run with one runtime and network plugin, curl, stop, start with others,
    curl again (ours: CNI, then user mode; the CNI attachment is released)."""
    request.getfixturevalue("cni_default")
    url = request.getfixturevalue("outside")
    name = "e2e-test-vm-providers-switch"
    try:
        cli(f"--runtime={first[0]}", f"--network-plugin={first[1]}", "run", f"--name={name}",
            e2ebox, "--ssh")
        _curl(cli, name, url)
        uid = cli("inspect", "vm", name, "-t", "{{.ObjectMeta.UID}}").stdout.strip()
        cli("stop", name)
        cli("start", name, f"--runtime={then[0]}", f"--network-plugin={then[1]}")
        assert not (cli.root / "vm" / uid / "network.json").exists()
        assert cli("inspect", "vm", name, "-t", "{{.Status.Network.Plugin}}").stdout.strip() \
            == then[1]
        _curl(cli, name, url)
    finally:
        _cleanup(cli, name)


@pytest.mark.parametrize("runtime,plugin", [
    pytest.param("docker", "docker-bridge", id="TestVMStartNonDefaultProvider",
                 marks=pytest.mark.skip(reason=f"{NO_DOCKER}; {NO_DOCKER_BRIDGE}")),
    pytest.param("qemu", "none", id="QemuAndNone"),
])
def test_TestVMStartNonDefaultProvider(cli: Ignite, e2ebox: str, runtime: str,
                                       plugin: str) -> None:
    """A VM created with non-default providers keeps them when started without flags."""
    name = "e2e-test-vm-start-non-default-providers"
    try:
        cli("create", e2ebox, f"--name={name}", f"--runtime={runtime}",
            f"--network-plugin={plugin}")
        cli("start", name)
        got = cli("inspect", "vm", name, "-t",
                  "{{.Status.Runtime.Name}} {{.Status.Network.Plugin}}")
        assert _combined(got).strip() == f"{runtime} {plugin}"
    finally:
        _cleanup(cli, name)


def test_TestVMStopStartDefaultProviders(cli: Ignite, e2ebox: str) -> None:
    """run, stop, start again, all with the default providers."""
    name = "e2e-test-vm-stop-start-default-providers"
    try:
        cli("run", e2ebox, f"--name={name}")
        wait_console(cli, name, READY)  # so that stop is the graceful one
        cli("stop", name)
        cli("start", name)
        assert name in cli("ps", "-t", "{{.ObjectMeta.Name}}").stdout.split()
    finally:
        _cleanup(cli, name)


# ---- zconcurrent_vm_test.go --------------------------------------------------------

def test_TestConcurrentVMCreation(cli: Ignite, e2ebox: str) -> None:
    """Four ``ignite run --name=... --ssh`` at once all succeed; one ``rm -f`` removes them."""
    names = [f"e2e-test-concurrent-vm-create-{i}" for i in range(1, 5)]
    procs = [subprocess.Popen([*IGNITE, "run", f"--name={n}", e2ebox, "--ssh"], env=_env(cli),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n in names]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, out + err
        for n in names:  # Ignite's run --ssh returned once each guest's sshd answered
            wait_console(cli, n, READY)
        cli("rm", "-f", *names)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        _cleanup(cli, *names)


# ---- image_test.go -----------------------------------------------------------------

def test_TestImportTinyImage(cli: Ignite, kernel: str, tmp_path: Path) -> None:
    """A tiny image with no /etc at all (like hello-world) imports.

    Ignite pulled hello-world:latest; here a docker archive of the same shape:
    one layer holding only /hello.
    """
    ref = "hello-world:latest"
    archive = write_docker_archive(tmp_path / "hello-world.tar", ref,
                                   [_tar([("hello", b"Hello from a tiny image\n", 0o755)])],
                                   {"Cmd": ["/hello"]})
    cli("image", "rm", ref, check=False)
    try:
        cli("image", "import", str(archive))
        assert ref in cli("image", "ls").stdout
    finally:
        cli("image", "rm", ref, check=False)


@pytest.mark.skip(reason=f"{NO_DOCKER}: `ignite --runtime=docker image import hello-world` "
                  "reads the image from the Docker engine")
def test_TestDockerImportImage() -> None:
    """``ignite --runtime=docker image import hello-world:latest`` after ``docker rmi``."""


# ---- registry_auth_test.go ---------------------------------------------------------

@pytest.mark.parametrize("kind", ["image", "kernel"])
def test_TestPullFromAuthRegistry(kind: str, auth_registry: Registry,
                                  tls_auth_registry: Registry, tmp_path: Path) -> None:
    """Image and kernel import from http/https registries that need auth.

    Credentials come from ``--registry-config-dir`` or the Configuration's
    ``spec.registryConfigDir`` (the flag wins); no or wrong credentials fail.
    Ignite ran two ``registry:2`` containers (htpasswd; one with TLS); here they
    are Debian's docker-registry on loopback, the TLS one with a test CA.
    """
    import base64

    certs = tmp_path / "certs.d" / tls_auth_registry.host
    certs.mkdir(parents=True)
    (certs / "ca.crt").write_bytes(Path(str(tls_auth_registry.ca)).read_bytes())
    env = {"HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path / "no-docker-config"),
           "XDG_RUNTIME_DIR": str(tmp_path), "IGNITE_CERTS_DIRS": str(tmp_path / "certs.d")}
    ig = Ignite(tmp_path / "root", env=env)
    what = "kernel" if kind == "kernel" else "busybox"
    for reg in (auth_registry, tls_auth_registry):
        ref = f"{reg.host}/test/{what}:1"
        good, wrong, empty = (tmp_path / n / reg.host for n in ("good", "wrong", "empty"))
        for folder, password in ((good, reg.password), (wrong, "not-the-password")):
            folder.mkdir(parents=True)
            token = base64.b64encode(f"{reg.user}:{password}".encode()).decode()
            (folder / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth":
                                                                                    token}}}))
        empty.mkdir(parents=True)
        cfg = tmp_path / f"config-{reg.host.replace(':', '_')}.yaml"
        cfg.write_text("apiVersion: ignite.weave.works/v1alpha4\nkind: Configuration\n"
                       f"spec:\n  registryConfigDir: {good}\n")
        cases = [  # (flags, works)
            ([], False),
            (["--registry-config-dir", str(good)], True),
            (["--ignite-config", str(cfg)], True),
            (["--ignite-config", str(cfg), "--registry-config-dir", str(empty)], False),
            (["--registry-config-dir", str(wrong)], False),
        ]
        for flags, works in cases:
            res = ig(*flags, kind, "import", ref, check=False)
            assert (res.returncode == 0) == works, (flags, res.stderr)
            if works:
                ig(kind, "rm", ref)
            else:
                assert "credentials" in res.stderr, res.stderr


# ---- portmap_test.go ---------------------------------------------------------------

def test_TestPortmapCleanup(cli: Ignite, e2ebox: str,
                            request: pytest.FixtureRequest) -> None:
    """``run --network-plugin=cni -p 4242:4242`` installs nat rules naming the VM ID,
    and ``rm -f`` removes every one of them (``iptables -t nat -nL | grep ID``).
    (On a network of the test's own, not the host's ignite0.)"""
    import socket

    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 4242)) == 0:
            pytest.skip("port 4242 is in use on this host")
    request.getfixturevalue("cni_default")
    vm = "e2e-test-portmap-cleanup"
    try:
        cli("--runtime=qemu", "--network-plugin=cni", "run", f"--name={vm}", e2ebox,
            "--ssh", "--ports=4242:4242")
        uid = cli("ps", "-a", "-f", f"{{{{.ObjectMeta.Name}}}}={vm}", "-q").stdout.strip()
        rules = subprocess.run(["iptables", "-t", "nat", "-nL"], capture_output=True,
                               text=True, check=True).stdout
        assert uid and uid in rules
        cli("rm", "-f", vm)
        rules = subprocess.run(["iptables", "-t", "nat", "-nL"], capture_output=True,
                               text=True, check=True).stdout
        assert uid not in rules
    finally:
        _cleanup(cli, vm)


# ---- multinet_test.go --------------------------------------------------------------

MULTINET = (f"{NO_DOCKER}: the test adds veth interfaces inside the VM's sandbox container "
            "(`docker exec ignite-<uid> ip link add ...`) while the VM starts, and Ignite "
            "redirects into the VM those its `ignite.weave.works/interface/<if>: tc-redirect` "
            "annotations name. A CNI VM here has a network namespace (/run/netns/<prefix>-<uid>), "
            "but ignitevm reads no such annotations and waits for no interface added to it: its "
            "taps are made for its CNI networks before QEMU starts. More interfaces come from "
            "a repeated --network instead (tests/vm/test_network.py::"
            "test_named_network_static_ip_dns_and_two_nics)")


@pytest.mark.skip(reason=MULTINET)
def test_TestOneExtraInterface() -> None:
    """Annotation for interface foo -> the VM's eth1 has foo's MAC address."""


@pytest.mark.skip(reason=MULTINET)
def test_TestMultipleInterface() -> None:
    """Annotations for foo and bar -> eth1 has bar's MAC, eth2 has foo's."""


@pytest.mark.skip(reason=MULTINET)
def test_TestMultipleInterfaceImplicit() -> None:
    """As above, plus an unannotated baz -> no eth3 in the VM (cat fails with status 1)."""


# ---- gitops_test.go, manifest_reconciliation_test.go -------------------------------

def _git(*args: str, cwd: Path | None = None) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com")
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def _vm_manifest(name: str, uid: str) -> str:
    return f"""---
apiVersion: ignite.weave.works/v1alpha4
kind: VM
metadata:
  name: {name}
  uid: {uid}
spec:
  image:
    oci: {IMAGE}
  cpus: 1
  diskSize: 3GB
  memory: 800MB
  ssh: true
status:
  running: true
"""


def test_TestRunGitops(cli: Ignite, e2ebox: str, tmp_path: Path) -> None:
    """``ignited gitops file://REPO`` runs the VM a pushed manifest describes."""
    bare, clone = tmp_path / "ignite-gitops", tmp_path / "ignite-gitops-clone"
    _git("init", "--bare", str(bare))
    _git("clone", f"file://{bare}", str(clone))
    (clone / "my-vm.yaml").write_text(_vm_manifest("my-vm", "599615df99804ae8"))
    _git("add", "my-vm.yaml", cwd=clone)
    _git("commit", "-m", "add vm config", cwd=clone)
    _git("push", "origin", "HEAD", cwd=clone)
    proc = subprocess.Popen([*IGNITED, "gitops", f"file://{bare}"], env=_env(cli),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        template = ("--template='{{.Spec.Memory}} {{.Spec.CPUs}} {{.Spec.DiskSize}} "
                    "{{.Spec.Image.OCI}} {{.Spec.SSH}} {{.Status.Running}}'")

        def read() -> str:
            return _combined(cli("ps", "--filter={{.ObjectMeta.Name}}=my-vm", template)).strip()

        _poll(read, f"'800.0 MB 1 3.0 GB {e2ebox} {{true }} true'", proc, 60)
    finally:
        _stop(proc)
        _cleanup(cli, "my-vm")


IGNITE_MANIFEST_DIR = Path("/etc/firecracker/manifests")  # Ignite's constants.MANIFEST_DIR


def test_TestIgnitedDaemon(cli: Ignite, e2ebox: str) -> None:
    """``ignited daemon`` runs a VM when its manifest appears, stops it when it goes."""
    proc = subprocess.Popen([*IGNITED, "daemon"], env=_env(cli), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = IGNITE_MANIFEST_DIR / "test-vm.yaml"
    try:
        # Write into the host's manifest folder only with a daemon there to read it.
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
        else:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"ignited daemon exited with {proc.returncode}: {err.strip()}")
        IGNITE_MANIFEST_DIR.mkdir(parents=True, exist_ok=True)
        manifest.write_text(_vm_manifest("manifest-vm", "599615df99804ae9"))

        def read() -> str:
            return _combined(cli("ps", "--filter={{.ObjectMeta.Name}}=manifest-vm",
                                 "--template='{{.Status.Running}}'")).strip()

        _poll(read, "'true'", proc, 60)
        manifest.unlink()
        _poll(read, "", proc, 60)
    finally:
        manifest.unlink(missing_ok=True)
        _stop(proc)
        _cleanup(cli, "manifest-vm")
