"""The parsing parts of the guest's init (ignitevm/guest/init_*.c), compiled
here with a small driver (tests/helpers/init_harness.c) and run on the host:
vm.env read as sh reads it, and the config disk unpacked as `tar -x` then
`cp -a files/. /newroot/` did before (no VM needed)."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from ignitevm.api.types import VM, FileMapping
from ignitevm.operations.guestconfig import env_script, write_config_disk
from ignitevm.providers.network.base import NetPlan
from tests.helpers.guestc import build_driver


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_driver(tmp_path_factory, "init_harness", "init_env.c", "init_cfg.c",
                        "init_fs.c")


def read_env(harness: Path, path: Path) -> dict[str, str]:
    out = subprocess.run([str(harness), "env", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    pairs = (line.split("=", 1) for line in out.stdout.splitlines())
    return {k: bytes.fromhex(v).decode() for k, v in pairs}


HOSTILE = ["plain", "", "two words", "it's", 'say "hi"', "$(reboot)", "`id`", "back\\slash",
           "new\nline", "tab\there", "*", "a;b&c|d", "ünïcode", "'", "''", "x=y", "#not"]


def test_env_values_read_as_sh_reads_them(harness: Path, tmp_path: Path) -> None:
    env = tmp_path / "vm.env"
    env.write_text("".join(f"K{i}={shlex.quote(v)}\n" for i, v in enumerate(HOSTILE)))
    got = read_env(harness, env)
    assert got == {f"K{i}": v for i, v in enumerate(HOSTILE)}
    sh = shutil.which("sh")
    if sh:  # the same values as a real shell reads them
        for i, v in enumerate(HOSTILE):
            out = subprocess.run([sh, "-c", f'. "$1"; printf %s "$K{i}"', "sh", str(env)],
                                 capture_output=True, text=True, check=True)
            assert out.stdout == v


def test_env_of_a_vm_with_volumes(harness: Path, tmp_path: Path) -> None:
    from ignitevm.api.types import VolumeMount, volume_id

    vm = VM()
    vm.metadata.uid, vm.metadata.name = "0123456789abcdef", "web"
    vm.spec.storage.volume_mounts = [VolumeMount(name="data", mount_path="/srv/da ta"),
                                     VolumeMount(name="logs", mount_path="/var/log/app")]
    env = tmp_path / "vm.env"
    env.write_text(env_script(vm))
    got = read_env(harness, env)
    assert got["IGNITE_HOSTNAME"] == "0123456789abcdef" and got["IGNITE_INIT"] == "/sbin/init"
    assert got["IGNITE_VOLUMES"] == (f"{volume_id('data')}:/srv/da ta "
                                     f"{volume_id('logs')}:/var/log/app")
    assert not any(k.startswith(("IGNITE_IP", "IGNITE_DNS")) for k in got)  # (/cfg/net)


@pytest.mark.parametrize("text, why", [
    ("just words\n", "not KEY=value"),
    ("K=$(reboot)\n", "unquoted '$'"),
    ("K='open\n", "unterminated quote"),
    ('K="a $HOME"\n', "expansions"),
    ("K=a b\n", "more than one word"),
    ("1K=a\n", "not KEY=value"),
])
def test_env_that_is_not_settings_is_refused(harness: Path, tmp_path: Path, text: str,
                                              why: str) -> None:
    env = tmp_path / "vm.env"
    env.write_text(text)
    out = subprocess.run([str(harness), "env", str(env)], capture_output=True, text=True)
    assert out.returncode == 1 and why in out.stdout


# ---- the config disk ----

def need_root_and_busybox() -> str:
    if os.geteuid() != 0:
        pytest.skip("unpacking with owners and device nodes needs root")
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (run scripts/setup.sh)")
    return busybox


def host_files(tmp_path: Path) -> VM:
    """A VM whose --copy-files hold every kind of entry the tar can carry."""
    tmp_path.mkdir()
    tool = tmp_path / "tool"
    tool.write_bytes(b"#!/bin/sh\necho tool\n")
    os.chown(tool, 1234, 5678)
    os.chmod(tool, 0o4755)
    os.utime(tool, (1_600_000_000, 1_600_000_000))
    tree = tmp_path / "tree"
    (tree / "sub" / ("d" * 120)).mkdir(parents=True)
    (tree / "sub" / ("d" * 120) / "deep").write_text("long name\n")
    (tree / "a").write_text("linked\n")
    os.link(tree / "a", tree / "b")
    (tree / "rel").symlink_to("a")
    (tree / "abs").symlink_to("/etc/hostname")
    os.mkfifo(tree / "fifo", 0o640)
    os.chmod(tree / "sub", 0o750)
    os.chown(tree / "sub", 42, 43)
    motd = tmp_path / "motd"
    motd.write_text("from the host\n")
    vm = VM()
    vm.metadata.uid, vm.metadata.name = "0123456789abcdef", "web"
    vm.spec.copy_files = [FileMapping(host_path=str(tool), vm_path="/usr/local/bin/tool"),
                          FileMapping(host_path=str(tree), vm_path="/opt/tree"),
                          FileMapping(host_path=str(motd), vm_path="/etc/motd"),
                          FileMapping(host_path=str(motd), vm_path="/etc/link-to-motd")]
    return vm


def image_root(root: Path) -> Path:
    """What the image has before the files land: an /etc the VM's files go
    into (its mode changes, as cp -a did), a file and a link they replace."""
    (root / "etc").mkdir(parents=True)
    os.chmod(root / "etc", 0o700)
    (root / "etc" / "motd").write_text("from the image, longer than the new one\n")
    (root / "etc" / "real-motd").write_text("the link's target\n")
    (root / "etc" / "link-to-motd").symlink_to("real-motd")
    (root / "usr").mkdir()
    return root


def tree_of(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            kind = stat.S_IFMT(st.st_mode)
            what: object = None
            if stat.S_ISREG(st.st_mode):
                what = (p.read_bytes(), st.st_mtime_ns // 10**9,
                        inodes.setdefault(st.st_ino, rel) if st.st_nlink > 1 else None)
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what)
    return out


def test_config_disk_lands_as_tar_then_cp_a_put_it(harness: Path, tmp_path: Path) -> None:
    busybox = need_root_and_busybox()
    vm = host_files(tmp_path / "host")
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir()
    (vm_dir / "ssh_host_ed25519_key").write_text("PRIVATE\n")
    (vm_dir / "ssh_host_ed25519_key.pub").write_text("PUBLIC\n")
    net = NetPlan(plugin="user", mac="02:00:00:00:00:01", guest_ip="10.0.2.15/24",
                  gateway="10.0.2.2", dns="10.0.2.3")
    disk = write_config_disk(vm, {"Cmd": ["/bin/app"]}, vm_dir / "config.tar", net)

    ours, cfg = image_root(tmp_path / "ours"), tmp_path / "cfg"
    cfg.mkdir()
    out = subprocess.run([str(harness), "unpack", str(disk), str(ours), str(cfg)],
                         capture_output=True, text=True)
    assert out.stdout.splitlines()[-1] == "rc=0", out.stdout

    before, old_cfg = image_root(tmp_path / "before"), tmp_path / "old-cfg"
    old_cfg.mkdir()
    subprocess.run([busybox, "tar", "-xf", str(disk), "-C", str(old_cfg)], check=True)
    subprocess.run([busybox, "cp", "-a", f"{old_cfg}/files/.", f"{before}/"], check=True)
    shutil.rmtree(old_cfg / "files")

    assert tree_of(ours) == tree_of(before)
    assert tree_of(cfg) == tree_of(old_cfg)
    assert (ours / "etc" / "real-motd").read_text() == "from the host\n"  # written through
    assert stat.S_IMODE((ours / "usr/local/bin/tool").stat().st_mode) == 0o4755
    assert (cfg / "vm.env").read_text().startswith("IGNITE_UID=")
    assert (cfg / "net").read_text() == ("net=eth0 02:00:00:00:00:01 10.0.2.15/24\n"
                                         "gw=10.0.2.2\ndns=10.0.2.3\n")


def test_an_absolute_link_of_the_image_leads_inside_the_new_root(harness: Path,
                                                                 tmp_path: Path) -> None:
    need_root_and_busybox()
    src = tmp_path / "f"
    src.write_text("copied\n")
    vm = VM()
    vm.metadata.uid, vm.metadata.name = "0123456789abcdef", "web"
    vm.spec.copy_files = [FileMapping(host_path=str(src), vm_path="/opt/app/f")]
    (tmp_path / "vm").mkdir()
    disk = write_config_disk(vm, {}, tmp_path / "vm" / "config.tar")
    root, cfg = tmp_path / "root", tmp_path / "cfg"
    (root / "srv").mkdir(parents=True)
    (root / "opt").symlink_to("/srv")  # (/srv of the host is not where it goes)
    (root / "var" / "etc").mkdir(parents=True)
    (root / "etc").symlink_to("/var/etc")
    cfg.mkdir()
    out = subprocess.run([str(harness), "unpack", str(disk), str(root), str(cfg)],
                         capture_output=True, text=True)
    assert out.stdout.splitlines()[-1] == "rc=0", out.stdout
    assert (root / "srv" / "app" / "f").read_text() == "copied\n"
    assert (root / "var" / "etc" / "hostname").read_text() == "0123456789abcdef\n"


@pytest.mark.parametrize("damage", ["header", "truncated"])
def test_a_damaged_config_disk_is_an_error(harness: Path, tmp_path: Path, damage: str) -> None:
    need_root_and_busybox()
    big = tmp_path / "big"
    big.write_bytes(os.urandom(100_000))
    vm = VM()
    vm.metadata.uid, vm.metadata.name = "0123456789abcdef", "web"
    vm.spec.copy_files = [FileMapping(host_path=str(big), vm_path="/big")]
    (tmp_path / "vm").mkdir()
    disk = write_config_disk(vm, {}, tmp_path / "vm" / "config.tar")
    data = bytearray(disk.read_bytes())
    with tarfile.open(disk) as tar:
        member = tar.getmember("files/big")
    if damage == "header":
        data[member.offset + 10] ^= 0x55
    else:
        data = data[: member.offset_data + 50_000]
    disk.write_bytes(bytes(data))
    root, cfg = tmp_path / "root", tmp_path / "cfg"
    root.mkdir()
    cfg.mkdir()
    out = subprocess.run([str(harness), "unpack", str(disk), str(root), str(cfg)],
                         capture_output=True, text=True)
    assert out.stdout.splitlines()[-1] == "rc=-1", out.stdout
    assert ("damaged tar header" if damage == "header" else "cannot read it to the end") \
        in out.stdout
