"""VM SSH keys made without ssh-keygen (which refuses a uid with no passwd
entry): RFC 8032's vectors, files that OpenSSH's own tools read back, and
key making as a uid that has no passwd entry."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ignitevm.util import sshkey
from tests.conftest import REPO

# (secret seed, public key) from RFC 8032, section 7.1, tests 1-3
VECTORS = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025"),
]


@pytest.mark.parametrize(("seed", "public"), VECTORS)
def test_public_keys_match_rfc_8032(seed: str, public: str) -> None:
    assert sshkey.public_key(bytes.fromhex(seed)).hex() == public


def test_openssh_reads_the_key_files(tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen (openssh-client) is not installed")
    key = tmp_path / "id"
    sshkey.generate(key, "ignite-0123")
    assert (key.stat().st_mode & 0o777, Path(f"{key}.pub").stat().st_mode & 0o777) == (
        0o600, 0o644)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True,
                             text=True, check=True).stdout.split()
    assert derived[:2] == Path(f"{key}.pub").read_text().split()[:2]
    assert Path(f"{key}.pub").read_text().split()[2] == "ignite-0123"
    info = subprocess.run(["ssh-keygen", "-l", "-f", str(key)], capture_output=True,
                          text=True, check=True).stdout
    assert info.startswith("256 SHA256:") and "ignite-0123 (ED25519)" in info
    with pytest.raises(FileExistsError):  # never over a file (or a link) found there
        sshkey.generate(key, "again")


def test_keys_are_made_for_a_uid_with_no_passwd_entry(request: pytest.FixtureRequest) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as a uid with no passwd entry")
    import tempfile

    uid = next(u for u in range(61000, 62000) if not _known(u))
    # (a folder that uid can reach: pytest's are root's alone)
    work = Path(tempfile.mkdtemp(prefix="ignite-keys-"))
    request.addfinalizer(lambda: shutil.rmtree(work))
    os.chown(work, uid, uid)
    as_uid = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
    probe = subprocess.run([*as_uid, "-c", "import ignitevm"], capture_output=True, text=True,
                           env=env, cwd="/")
    if probe.returncode != 0:
        pytest.skip("the repository is not readable by an unprivileged uid: "
                    + (probe.stderr.strip().splitlines() or [""])[-1])
    code = ("import sys; from pathlib import Path; from ignitevm.api.types import VM; "
            "from ignitevm.operations.sshkeys import making_keys\n"
            "vm = VM(); vm.metadata.uid = '0123456789abcdef'; vm.spec.ssh = True\n"
            "with making_keys(vm, Path(sys.argv[1])): pass\n")
    res = subprocess.run([*as_uid, "-c", code, str(work)], capture_output=True, text=True,
                         env=env, cwd="/")
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in work.iterdir())
    assert names == ["id_0123456789abcdef", "id_0123456789abcdef.pub",
                     "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
    assert all(p.stat().st_uid == uid for p in work.iterdir())


def _known(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
