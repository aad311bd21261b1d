"""Ed25519 key pairs in OpenSSH's file formats, made without ``ssh-keygen``.

``ssh-keygen`` refuses to run for a uid with no passwd entry (a CLI run by
such a uid could not make a VM's keys); making a key needs none of that:
32 random bytes (the seed), the public key derived from it (RFC 8032,
section 5.1.5) and OpenSSH's key files around them (its PROTOCOL.key
describes the private key's layout). The arithmetic runs once per key, on
random secrets that never leave the host; Python's integers are not
constant-time, which matters for signing many messages, not for this.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from pathlib import Path

# The curve edwards25519 (RFC 8032, section 5.1).
_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_BASE = (15112221349535400772501151409588531511454012693041857206046113283949847762202,
         46316835694926478169428394003475163141307993866256225615783033603165251855960)

Point = tuple[int, int, int, int]  # extended coordinates X, Y, Z, T (x = X/Z, y = Y/Z, xy = T/Z)


def _add(p: Point, q: Point) -> Point:
    """p + q; the formula is complete (it also doubles)."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = 2 * _D * t1 * t2 % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _times(k: int, p: Point) -> Point:
    out: Point = (0, 1, 1, 0)  # the neutral point
    while k:
        if k & 1:
            out = _add(out, p)
        p = _add(p, p)
        k >>= 1
    return out


def _encode(p: Point) -> bytes:
    x, y, z, _ = p
    zi = pow(z, _P - 2, _P)
    x, y = x * zi % _P, y * zi % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def public_key(seed: bytes) -> bytes:
    """The 32-byte public key of the private key ``seed`` (32 bytes)."""
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a = (a & ((1 << 254) - 8)) | (1 << 254)
    bx, by = _BASE
    return _encode(_times(a, (bx, by, 1, bx * by % _P)))


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


KEY_TYPE = b"ssh-ed25519"


def public_line(pub: bytes, comment: str) -> str:
    """The ``.pub`` file's line: ``ssh-ed25519 BASE64 comment``."""
    blob = _string(KEY_TYPE) + _string(pub)
    return f"{KEY_TYPE.decode()} {base64.b64encode(blob).decode()} {comment}\n"


def private_file(seed: bytes, pub: bytes, comment: str) -> str:
    """The private key file (``openssh-key-v1``, unencrypted)."""
    check = os.urandom(4)
    body = (check + check + _string(KEY_TYPE) + _string(pub) + _string(seed + pub)
            + _string(comment.encode()))
    body += bytes(range(1, 1 + (-len(body)) % 8))  # padding to the cipher's block (8)
    data = (b"openssh-key-v1\0" + _string(b"none") + _string(b"none") + _string(b"")
            + struct.pack(">I", 1) + _string(_string(KEY_TYPE) + _string(pub))
            + _string(body))
    text = base64.b64encode(data).decode()
    lines = [text[i:i + 70] for i in range(0, len(text), 70)]
    return "\n".join(["-----BEGIN OPENSSH PRIVATE KEY-----", *lines,
                      "-----END OPENSSH PRIVATE KEY-----", ""])


def generate(path: Path, comment: str) -> None:
    """Write a new key pair: ``path`` (0600) and ``path.pub`` (0644); neither
    may exist already, nor be a link."""
    seed = os.urandom(32)
    pub = public_key(seed)
    for where, text, mode in ((path, private_file(seed, pub, comment), 0o600),
                              (path.with_name(path.name + ".pub"), public_line(pub, comment),
                               0o644)):
        fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
        with open(fd, "w") as f:
            f.write(text)
