"""Checks for every VM value that reaches the host.

A VM's fields end up on QEMU's command line, on the guest kernel's command
line, in the config disk, in file paths and in terminal output. Manifests come
from Git and are untrusted, so each value is checked here, once, whatever the
interface that brought it (flags, ``--config``, an ignited folder, a Git
repository): :func:`ignitevm.api.defaults.validate_vm` calls these.

What is allowed (docs/cli.md repeats it for users):

- ports: ``bindAddress`` empty or an IPv4 address; ports 1-65535; tcp or udp;
- kernel args: printable ASCII (space to ``~``), at most ``MAX_CMDLINE`` characters;
- labels: Kubernetes' rules (``[prefix/]name`` keys, 63-character values of
  letters, digits, ``-``, ``_``, ``.``); annotations: no control characters;
- paths (copyFiles, volumes, ssh key): absolute, printable, no NUL; guest paths
  without ``..``; mount paths without spaces or ``:``;
- ssh: ``true`` or the path of a file that holds one OpenSSH public key line;
- name servers and search domains: what the guest's resolv.conf takes (below).
"""

from __future__ import annotations

import base64
import ipaddress
import re

from ignitevm.errors import InvalidInput

MIN_MEMORY = 64 << 20
MAX_MEMORY = 1 << 40  # 1 TiB
MIN_DISK = 1 << 20  # (the image decides the real minimum: "smaller than the image")
MAX_DISK = 64 << 40  # 64 TiB
MAX_CPUS = 64
# x86's kernel command line holds 2048 bytes; ignite adds a few words of its own.
MAX_CMDLINE = 1536
MAX_PATH = 4096
MAX_ANNOTATION = 4096

# What the guest's network module takes (ignitevm/guest/net.h, net.c, init.c):
# it cuts or drops whatever does not fit, which the VM's user would never see,
# so the host refuses more, here for --dns/--dns-search (every interface) and
# in providers/network/base.guest_lines for what the networks give.
# tests/unit/test_guest_limits.py reads the C files to keep these equal.
GUEST_NICS = 8  # net.h NET_NICS: interfaces (--network), eth0..eth7
GUEST_ROUTES = 16  # net.h NET_ROUTES: routes besides the default one, all interfaces together
GUEST_WORD = 63  # net.c split(): a word of a net= or route= line, char w[][64]
GUEST_VALUE = 511  # net.h struct net_cfg: dns[512] and search[512], each a line's value
GUEST_NET_TEXT = 8191  # init.c read_network(): /cfg/net, one read into text[8192]
# resolv.conf: resolvers use the first 3 name servers (glibc's and musl's MAXNS),
# and musl reads 256 bytes of the search line (the guest would write 511: net.c
# net_resolv's text[2048] holds it with 3 servers).
MAX_NAMESERVERS = 3
MAX_SEARCH = 255  # the search domains, space-separated

_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
UID = re.compile(r"^[0-9a-f]{16}$")
_ID_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


def has_control(text: str) -> bool:
    """Whether ``text`` holds a NUL, newline, escape or other control character."""
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


def printable(text: str) -> str:
    """``text`` with control and format characters written as escapes, for logs and
    terminals (a manifest's file name or field must not forge log lines, move the
    cursor or reorder what follows): Unicode's C categories (C0 and C1 controls, DEL,
    format characters such as bidi overrides and zero-width ones, surrogates, private
    use, unassigned) and the line and paragraph separators. Spaces stay."""
    if text.isprintable():  # (the common case: no space but U+0020 needs a look)
        return text
    import unicodedata

    return "".join(c if c.isprintable() or unicodedata.category(c) == "Zs"
                   else repr(c)[1:-1] for c in text)


def check_text(value: str, what: str, *, limit: int = MAX_PATH) -> None:
    if has_control(value):
        raise InvalidInput(f"invalid {what} {value!r}: control characters (newline, NUL, "
                           "escape...) are not allowed")
    if len(value) > limit:
        raise InvalidInput(f"invalid {what}: longer than {limit} characters")


def check_abs_path(value: str, what: str, *, guest: bool = False) -> None:
    """An absolute path without control characters; a guest path also without ``..``."""
    check_text(value, what)
    if not value.startswith("/"):
        raise InvalidInput(f"invalid {what} {value!r}: must be an absolute path",
                           hint="write a path starting with /")
    if guest and ".." in value.split("/"):
        raise InvalidInput(f"invalid {what} {value!r}: '..' is not allowed in a VM path")


def check_bind_address(value: str) -> None:
    if not value:
        return
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidInput(f"invalid port bindAddress {value!r}: not an IPv4 address",
                           hint="write an address such as 127.0.0.1 or 0.0.0.0, "
                           "or leave it out") from None


def check_port(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise InvalidInput(f"invalid {what} {value!r}: must be between 1 and 65535")


def check_guest_dns(servers: list[str], search: list[str], dns: str = "invalid --dns",
                    domains: str = "invalid --dns-search") -> None:
    """Name servers and search domains the guest takes whole: at most
    MAX_NAMESERVERS servers in GUEST_VALUE bytes, domains in MAX_SEARCH.
    ``dns`` and ``domains`` begin the error lines."""
    if len(servers) > MAX_NAMESERVERS:
        raise InvalidInput(f"{dns}: at most {MAX_NAMESERVERS} name servers "
                           f"({len(servers)} given)",
                           hint="a resolver uses only the first three")
    if len(" ".join(servers).encode()) > GUEST_VALUE:
        raise InvalidInput(f"{dns}: the name servers are longer than {GUEST_VALUE} "
                           "characters together")
    if len(" ".join(search).encode()) > MAX_SEARCH:
        raise InvalidInput(f"{domains}: the search domains are longer than {MAX_SEARCH} "
                           f"characters together ({len(search)} given)",
                           hint="resolvers read at most 255 characters of them")


def check_cmdline(value: str) -> None:
    if any(not 0x20 <= ord(c) <= 0x7E for c in value):
        raise InvalidInput(
            f"invalid kernel args {value!r}: only printable ASCII is allowed",
            hint="no newlines, NULs, tabs, control or non-ASCII characters")
    if len(value) > MAX_CMDLINE:
        raise InvalidInput(f"invalid kernel args: longer than {MAX_CMDLINE} characters")


def check_name(name: str, what: str = "VM") -> None:
    if len(name) > 253 or not _DNS1123.fullmatch(name):
        raise InvalidInput(
            f"invalid {what} name {name!r}",
            hint="use lower-case letters, digits, '-' and '.', starting and ending "
            "with a letter or digit (at most 253 characters)",
        )


def check_id_prefix(value: str) -> None:
    if value and not _ID_PREFIX.fullmatch(value):
        raise InvalidInput(f"invalid id prefix {value!r}",
                           hint="use letters, digits, '-', '_' and '.' (at most 63)")


def check_labels(labels: dict[str, str] | None) -> None:
    hint = ("label keys are [prefix/]name and values at most 63 letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit")
    for key, value in (labels or {}).items():
        prefix, _, name = key.rpartition("/")
        if (prefix and (len(prefix) > 253 or not _DNS1123.fullmatch(prefix))) \
                or not _LABEL_NAME.fullmatch(name):
            raise InvalidInput(f"invalid label key {key!r}", hint=hint)
        if value and not _LABEL_NAME.fullmatch(value):
            raise InvalidInput(f"invalid label value {value!r} (key {key!r})", hint=hint)


def check_annotations(annotations: dict[str, str] | None) -> None:
    for key, value in (annotations or {}).items():
        check_text(key, "annotation key", limit=253)
        check_text(value, f"annotation {key!r}", limit=MAX_ANNOTATION)


def check_public_key(text: str, source: str) -> str:
    """One OpenSSH public key line (``type base64 [comment]``); returns it stripped.

    More lines, options before the type (``command=...``) or a blob that does
    not decode to a key of the named type are refused."""
    line = text.strip()
    bad = InvalidInput(f"invalid SSH key: {source} is not one OpenSSH public key line",
                       hint="give the .pub file of a key pair, e.g. ~/.ssh/id_ed25519.pub")
    if not line or "\n" in line or "\r" in line or has_control(line):
        raise bad
    words = line.split(None, 2)
    if len(words) < 2 or words[0] not in _KEY_TYPES:
        raise bad
    try:
        blob = base64.b64decode(words[1], validate=True)
    except ValueError:
        raise bad from None
    n = int.from_bytes(blob[:4], "big")
    if blob[4:4 + n] != words[0].encode():
        raise bad
    return line
