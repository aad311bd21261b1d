"""SSH keys of a VM, all made on the host and kept in the VM's folder.

Every VM gets its own ed25519 host key (an image built once must not give
all its VMs the same one); with ``--ssh`` it also gets a client key pair
(``id_<uid>``), or the public key the user named is installed. The host key
is pinned in the VM's ``known_hosts`` before the first connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ignitevm.api.types import VM
from ignitevm.errors import IgniteError, InvalidInput

HOST_KEY = "ssh_host_ed25519_key"
KNOWN_HOSTS = "known_hosts"


def client_key(vm_dir: Path, uid: str) -> Path:
    return vm_dir / f"id_{uid}"


def user_public_key(spec_ssh: bool | str | None) -> str | None:
    """The public key a user named with --ssh=PATH (``.pub`` added when missing)."""
    if not isinstance(spec_ssh, str) or spec_ssh in ("", "true"):
        return None
    path = Path(spec_ssh).expanduser()
    if path.suffix != ".pub":
        path = path.with_name(path.name + ".pub")
    try:
        with path.open("rb") as f:
            text = f.read(16 << 10).decode("utf-8", "replace")
    except OSError as exc:
        raise InvalidInput(f"invalid SSH key: {path}: {exc.strerror}",
                           hint="give the path of a public key: --ssh=~/.ssh/id_ed25519.pub"
                           ) from None
    from ignitevm.api.validation import check_public_key

    return check_public_key(text, str(path))


@contextmanager
def making_keys(vm: VM, vm_dir: Path) -> Iterator[None]:
    """Create the VM's host key, and its client key pair when --ssh asks for
    one (``util.sshkey``: ssh-keygen refuses a uid with no passwd entry)."""
    from ignitevm.util import sshkey

    make_host_key(vm_dir, vm.metadata.uid)
    if vm.spec.ssh is True or vm.spec.ssh == "true":
        sshkey.generate(client_key(vm_dir, vm.metadata.uid), f"ignite-{vm.metadata.uid}")
    yield


def make_host_key(vm_dir: Path, uid: str) -> None:
    """The VM's own ed25519 host key pair (neither file may exist yet)."""
    from ignitevm.util import sshkey

    sshkey.generate(vm_dir / HOST_KEY, f"ignite-{uid}")


def authorized_keys(vm: VM, vm_dir: Path) -> str | None:
    named = user_public_key(vm.spec.ssh)
    if named:
        return named + "\n"
    pub = client_key(vm_dir, vm.metadata.uid).with_suffix(".pub")
    if vm.spec.ssh and pub.exists():
        return pub.read_text()
    return None


def pin_host_key(vm_dir: Path, port: int, host: str = "127.0.0.1") -> None:
    """known_hosts for the VM's sshd: the key we made, so no trust on first use."""
    pub = (vm_dir / f"{HOST_KEY}.pub").read_text().split()
    name = host if port == 22 else f"[{host}]:{port}"
    (vm_dir / KNOWN_HOSTS).write_text(f"{name} {pub[0]} {pub[1]}\n")


def restore_fields(vm: VM, vm_dir: Path) -> list[tuple[str, str]]:
    """A clone's SSH identity for its RESTORE (docs/agent-protocol.md): its host
    key pair (every VM has one, and init installs it wherever the image has
    /etc/ssh, --ssh or not; the agent rewrites only files that exist), and with
    --ssh root's authorized_keys; each file's bytes in hexadecimal. The private
    key goes to the guest over the agent channel only (never an argument, the
    environment or a log)."""
    key = vm_dir / HOST_KEY
    if not key.exists():  # (never so: a clone's key is made before its RESTORE)
        raise IgniteError(f"VM {vm.metadata.name!r} has no SSH host key ({key} is missing): "
                          "the clone would keep its snapshot's",
                          hint=f"remove the VM (ignite rm -f {vm.metadata.name}) and run the "
                          "clone again")
    fields = [("ssh_host_key", key.read_bytes().hex()),
              ("ssh_host_key_pub", key.with_suffix(".pub").read_bytes().hex())]
    keys = authorized_keys(vm, vm_dir)
    if keys:
        fields.append(("ssh_authorized_keys", keys.encode().hex()))
    return fields
