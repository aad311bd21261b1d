"""Ed25519 key pairs in OpenSSH's file formats, made without ``ssh-keygen``.

``ssh-keygen`` refuses to run for a uid with no passwd entry (a CLI run by
such a uid could not make a VM's keys). The keys come from the
``cryptography`` library (imported here only, when a VM is made); this
module writes their OpenSSH encodings itself (OpenSSH's PROTOCOL.key):
cryptography's serialization package, which would write the same bytes,
loads its SSH, RSA, DSA, EC and bcrypt parts for it (~10 ms of every VM's
start, a clone's too).
"""

from __future__ import annotations

import os
from pathlib import Path

KEY_TYPE = b"ssh-ed25519"
_ARMOR = (b"-----BEGIN OPENSSH PRIVATE KEY-----\n", b"-----END OPENSSH PRIVATE KEY-----\n")


def key_pair(comment: str) -> tuple[bytes, bytes]:
    """A new key: its private file (``openssh-key-v1``, unencrypted) and its
    ``.pub`` line (``ssh-ed25519 BASE64 comment``)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    seed, public = key.private_bytes_raw(), key.public_key().public_bytes_raw()
    return private_file(seed, public, os.urandom(4)), public_line(public, comment)


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def public_line(public: bytes, comment: str) -> bytes:
    """``ssh-ed25519 BASE64 comment`` of a 32-byte public key."""
    import base64

    blob = _string(KEY_TYPE) + _string(public)
    return KEY_TYPE + b" " + base64.b64encode(blob) + b" " + comment.encode() + b"\n"


def private_file(seed: bytes, public: bytes, check: bytes) -> bytes:
    """The unencrypted ``openssh-key-v1`` file of a key (its 32-byte seed and
    public key; ``check``: the 4 random check bytes), without a comment, as
    cryptography writes it: the blocks padded to 8 bytes with 1, 2, 3, ...,
    base64 in lines of 64 characters (OpenSSH's own are 70: both read either)."""
    import base64

    blob = _string(KEY_TYPE) + _string(public)
    secret = check + check + _string(KEY_TYPE) + _string(public) + _string(
        seed + public) + _string(b"")
    secret += bytes(range(1, 1 + (-len(secret) % 8)))
    body = (b"openssh-key-v1\0" + _string(b"none") + _string(b"none") + _string(b"")
            + (1).to_bytes(4, "big") + _string(blob) + _string(secret))
    text = base64.b64encode(body)
    lines = b"".join(text[i:i + 64] + b"\n" for i in range(0, len(text), 64))
    return _ARMOR[0] + lines + _ARMOR[1]


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
