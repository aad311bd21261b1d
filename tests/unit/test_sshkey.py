"""VM SSH keys made without ssh-keygen (which refuses a uid with no passwd
entry): files that OpenSSH's own tools read back, two keys never alike, and
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
from tests.helpers.python import python_out


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
    sshkey.generate(tmp_path / "other", "ignite-0123")
    assert Path(f"{key}.pub").read_text() != (tmp_path / "other.pub").read_text()


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


def test_the_same_bytes_as_cryptography_writes() -> None:
    """The OpenSSH encodings are written here (cryptography's serialization costs a
    VM's start ~10 ms): byte for byte what cryptography writes for the same key."""
    import base64

    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    for _ in range(20):
        key = Ed25519PrivateKey.generate()
        seed, public = key.private_bytes_raw(), key.public_key().public_bytes_raw()
        theirs = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH,
                                   ser.NoEncryption())
        body = base64.b64decode(b"".join(theirs.splitlines()[1:-1]))
        at = body.index(b"ssh-ed25519", body.index(b"ssh-ed25519") + 11) - 4 - 8
        check = body[at:at + 4]  # (their random check bytes)
        assert body[at + 4:at + 8] == check
        assert sshkey.private_file(seed, public, check) == theirs
        line = key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH)
        assert sshkey.public_line(public, "c 1") == line + b" c 1\n"
    private, pub = sshkey.key_pair("x")
    loaded = ser.load_ssh_private_key(private, None)
    assert loaded.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH) \
        + b" x\n" == pub


def test_key_making_leaves_out_the_serialization_package() -> None:
    code = ("import sys\nfrom ignitevm.util import sshkey\nsshkey.key_pair('c')\n"
            "print(sorted(m for m in sys.modules if m.startswith(\n"
            "      ('cryptography.hazmat.primitives.serialization', 'bcrypt'))))")
    assert python_out(code, cwd=REPO).strip() == "[]"


def test_the_cryptography_requirement_has_the_raw_key_methods() -> None:
    """sshkey uses Ed25519's private_bytes_raw/public_bytes_raw, new in
    cryptography 40: the declared requirement may not allow an older one
    (Debian 12's python3-cryptography, 38.0.4, has neither: AttributeError on
    every VM made)."""
    import re
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (spec,) = [d for d in project["dependencies"] if re.match(r"cryptography\b", d)]
    low = re.search(r">=\s*(\d+)", spec)
    assert low is not None and int(low.group(1)) >= 40, spec
