"""Keep a VM's QEMU from connecting to the host's loopback.

User-mode networking (slirp, inside QEMU) makes the gateway 10.0.2.2 the
host's 127.0.0.1: a guest would reach every service the host binds to
loopback only, on the belief that only its own users can. QEMU has no option
to turn that off (libslirp's ``disable_host_loopback`` is not exposed), so the
kernel enforces it: small cgroup-BPF programs on the VM's cgroup (v2) refuse
``connect()`` and UDP ``sendmsg()`` from QEMU's sockets to 127.0.0.0/8,
0.0.0.0/8, ``::1``, ``::`` and their IPv4-mapped forms, whatever route the
guest's packets took through slirp. Port 53 stays open (slirp forwards the
guest's DNS to the host's resolver, which may listen on 127.0.0.53). Outbound
connections elsewhere and port forwards (QEMU listens; it does not connect)
are unaffected. The programs go when the VM's cgroup is removed.
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

_SYS_BPF = 321  # x86_64
_PROG_LOAD, _PROG_ATTACH = 5, 8
_CGROUP_SOCK_ADDR = 18
_ALLOW_MULTI = 2
INET4_CONNECT, INET6_CONNECT, UDP4_SENDMSG, UDP6_SENDMSG = 10, 11, 14, 15
_DNS = 0x3500  # port 53 as bpf_sock_addr.user_port holds it (network order, read little-endian)

# bpf_sock_addr offsets
_IP4, _IP6, _PORT = 4, 8, 24


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


Item = bytes | tuple[str, int, int, str]  # an instruction, or (jeq|jne|ja, reg, imm, label)


def _assemble(items: list[Item | str]) -> list[bytes]:
    """Instructions with jumps to named labels (a str item marks a label)."""
    labels: dict[str, int] = {}
    code: list[Item] = []
    for item in items:
        if isinstance(item, str):
            labels[item] = len(code)
        else:
            code.append(item)
    out = []
    for i, item in enumerate(code):
        if isinstance(item, bytes):
            out.append(item)
            continue
        op, reg, imm, label = item
        off = labels[label] - i - 1
        imm = imm - (1 << 32) if imm >= 1 << 31 else imm
        # ja; jeq/jne on the low 32 bits (BPF_JMP32) with an immediate
        out.append(_insn({"ja": 0x05, "jeq": 0x16, "jne": 0x56}[op], reg, 0, off, imm))
    return out


def _ldxw(dst: int, off: int) -> bytes:
    return _insn(0x61, dst, 1, off)  # dst = *(u32 *)(r1 + off)


_FIRST_BYTE = _insn(0x57, 2, 0, 0, 0xFF)  # r2 &= 0xff: the first byte of an address
_RETURN = [_insn(0xB7, 0, 0, 0, 0), _insn(0x95), "allow",  # r0 = 0 (refuse); exit
           _insn(0xB7, 0, 0, 0, 1), _insn(0x95)]  # allow: r0 = 1; exit


def _program(v6: bool) -> list[bytes]:
    """Refuse a loopback or unspecified destination, unless its port is 53."""
    port: list[Item | str] = ["port", _ldxw(3, _PORT), ("jeq", 3, _DNS, "allow"), *_RETURN]
    v4: list[Item | str] = [_FIRST_BYTE, ("jeq", 2, 127, "port"), ("jeq", 2, 0, "port"),
                            ("ja", 0, 0, "allow")]
    if not v6:
        return _assemble([_ldxw(2, _IP4), *v4, *port])
    return _assemble([
        _ldxw(2, _IP6), ("jne", 2, 0, "allow"),
        _ldxw(2, _IP6 + 4), ("jne", 2, 0, "allow"),
        _ldxw(2, _IP6 + 8), ("jeq", 2, 0, "plain"),
        ("jne", 2, 0xFFFF0000, "allow"),  # ::ffff:a.b.c.d (read little-endian)
        _ldxw(2, _IP6 + 12), *v4,
        "plain", _ldxw(2, _IP6 + 12),  # ::1 (read little-endian) or ::
        ("jeq", 2, 0x01000000, "port"), ("jeq", 2, 0, "port"), ("ja", 0, 0, "allow"),
        *port,
    ])


def _bpf(cmd: int, attr: bytes) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(attr, 128)
    ret = libc.syscall(_SYS_BPF, cmd, buf, 128)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def _load(insns: list[bytes], attach_type: int) -> int:
    code = ctypes.create_string_buffer(b"".join(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("<IIQQIIQII16sII", _CGROUP_SOCK_ADDR, len(insns),
                       ctypes.addressof(code), ctypes.addressof(lic), 0, 0, 0, 0, 0,
                       b"ignite_noloop", 0, attach_type)
    return _bpf(_PROG_LOAD, attr)


def close_loopback(cgroup: Path) -> None:
    """Attach the programs to the cgroup v2 folder ``cgroup`` (QEMU joins it later)."""
    dir_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for attach, v6 in ((INET4_CONNECT, False), (UDP4_SENDMSG, False),
                           (INET6_CONNECT, True), (UDP6_SENDMSG, True)):
            prog = _load(_program(v6), attach)
            try:
                _bpf(_PROG_ATTACH, struct.pack("<IIII", dir_fd, prog, attach, _ALLOW_MULTI))
            finally:
                os.close(prog)  # (the attachment holds the program)
    finally:
        os.close(dir_fd)
