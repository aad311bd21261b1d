"""What the host lets reach the guest's network module: never more than it
takes whole (ignitevm/guest/net.h, net.c, init.c), refused with one clear
line on the host instead of cut or dropped in the guest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ignitevm.api import validation as v
from ignitevm.api.defaults import MAX_NETWORKS, default_vm, validate_vm
from ignitevm.api.types import VM
from ignitevm.errors import InvalidInput
from ignitevm.providers.network.base import NetPlan, guest_lines

GUEST = Path(__file__).resolve().parents[2] / "ignitevm" / "guest"


def _c(name: str) -> str:
    return (GUEST / name).read_text()


def test_the_limits_are_the_guest_modules() -> None:
    """The host's constants, read again from the C sources they stand for."""
    net_h, net_c, init_c = _c("net.h"), _c("net.c"), _c("init.c")
    define = dict(re.findall(r"#define (NET_\w+) (\d+)", net_h))
    assert v.GUEST_NICS == MAX_NETWORKS == int(define["NET_NICS"])
    assert int(define["NET_ROUTES"]) == 16
    (dns, search), = re.findall(r"char dns\[(\d+)\], search\[(\d+)\];", net_h)
    assert v.GUEST_VALUE == int(dns) - 1 == int(search) - 1
    split = net_c[net_c.index("static int split("):]
    split = split[:split.index("\n}\n")]
    assert re.search(r"char \(\*w\)\[(\d+)\]", split).group(1) == str(v.GUEST_WORD + 1)
    assert f"if (len >= {v.GUEST_WORD + 1})" in split
    read = init_c[init_c.index("static void read_network("):]
    read = read[:read.index("\n}\n")]
    assert f"static char text[{v.GUEST_NET_TEXT + 1}];" in read
    assert "read(fd, text, sizeof text - 1)" in read
    # resolv.conf: "search <511>\n" and 3 "nameserver <...>\n" lines of at most
    # GUEST_VALUE in all fit the text it is written from.
    (text,) = re.findall(r"char text\[(\d+)\], words\[(\d+)\];", net_c)
    assert int(text[1]) == v.GUEST_VALUE + 1
    assert len("search \n") + v.GUEST_VALUE + v.GUEST_VALUE + v.MAX_NAMESERVERS * len(
        "nameserver \n") < int(text[0])


def _vm(dns: list[str], search: list[str]) -> VM:
    vm = VM()
    vm.spec.image.oci = "x"
    default_vm(vm)
    vm.spec.network.dns, vm.spec.network.dns_search = dns, search
    return vm


def _domain(n: int) -> str:
    """A domain name of exactly ``n`` characters (at most 253)."""
    text = ".".join(["a" * 62] * 5)[:n]
    return text[:-1] + "b" if text.endswith(".") else text


def _domains(total: int) -> list[str]:
    """Two search domains of ``total`` characters when joined by a space."""
    return [_domain(200), _domain(total - 201)]


def test_name_servers_and_search_domains_the_guest_would_cut_are_refused() -> None:
    validate_vm(_vm(["192.0.2.1", "192.0.2.2", "2001:db8::1"], _domains(255)))
    with pytest.raises(InvalidInput, match=r"invalid --dns: at most 3 name servers \(4 given\)"):
        validate_vm(_vm([f"192.0.2.{i}" for i in range(1, 5)], []))
    assert len(" ".join(_domains(256))) == 256
    with pytest.raises(InvalidInput, match="invalid --dns-search: the search domains are "
                       "longer than 255 characters"):
        validate_vm(_vm([], _domains(256)))
    with pytest.raises(InvalidInput, match="longer than 511"):
        validate_vm(_vm(["fe80::1%" + "x" * 200] * 3, []))


def _nic(routes: int = 0, **kw: object) -> NetPlan:
    net = NetPlan(plugin="cni", mac="02:00:00:00:00:01", guest_ip="10.61.0.2/16",
                  gateway="10.61.0.1", dns="", routes=tuple(
                      (f"10.{100 + i}.0.0/16", "10.61.0.1") for i in range(routes)))
    return net._replace(**kw)


def test_what_a_network_gives_beyond_the_guest_is_refused() -> None:
    """Routes, name servers and search domains from a conflist (its ipam
    routes, its dns section) never pass the validation of the VM's fields."""
    most = _nic(10, dns="192.0.2.1 192.0.2.2 192.0.2.3",
                dns_search=" ".join(_domains(255)),
                more=(_nic(6),))
    lines = guest_lines(most)
    assert sum(k == "route" for k, _ in lines) == 16
    assert len("".join(f"{k}={val}\n" for k, val in lines)) <= 8191
    with pytest.raises(InvalidInput, match="17 routes besides the default one; the guest "
                       "takes at most 16"):
        guest_lines(most._replace(more=(_nic(7),)))
    with pytest.raises(InvalidInput, match="refusing the network's name servers: at most 3"):
        guest_lines(most._replace(dns="192.0.2.1 192.0.2.2 192.0.2.3 192.0.2.4"))
    with pytest.raises(InvalidInput, match="refusing its search domains"):
        guest_lines(most._replace(dns_search=" ".join(_domains(256))))
    with pytest.raises(InvalidInput, match="a word longer than 63"):
        guest_lines(_nic()._replace(routes=(("10.9.0.0/16", "1" * 64),)))
    with pytest.raises(InvalidInput, match="at most 8 networks"):
        guest_lines(_nic(more=(_nic(),) * 8))


def test_the_host_gives_at_most_three_of_its_name_servers(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ignitevm.providers.network.cni import vm

    conf = tmp_path / "resolv.conf"
    conf.write_text("".join(f"nameserver 192.0.2.{i}\n" for i in range(1, 6)))
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: real(
        conf if str(self) == "/etc/resolv.conf" else self, *a, **k))
    assert vm.host_nameservers() == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
