"""Ed25519 key pairs in OpenSSH's file formats, made without ``ssh-keygen``.

``ssh-keygen`` refuses to run for a uid with no passwd entry (a CLI run by
such a uid could not make a VM's keys). The keys come from the
``cryptography`` library (imported here only, when a VM is made); this
module only writes its OpenSSH encodings to files that must be new.
"""

from __future__ import annotations

import os
from pathlib import Path


def key_pair(comment: str) -> tuple[bytes, bytes]:
    """A new key: its private file (``openssh-key-v1``, unencrypted) and its
    ``.pub`` line (``ssh-ed25519 BASE64 comment``)."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH,
                                ser.NoEncryption())
    public = key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH)
    return private, public + b" " + comment.encode() + b"\n"


def generate(path: Path, comment: str) -> None:
    """Write a new key pair: ``path`` (0600) and ``path.pub`` (0644); neither
    may exist already, nor be a link."""
    private, public = key_pair(comment)
    for where, data, mode in ((path, private, 0o600),
                              (path.with_name(path.name + ".pub"), public, 0o644)):
        fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
        with open(fd, "wb") as f:
            f.write(data)
