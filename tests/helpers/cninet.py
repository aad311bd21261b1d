"""A throwaway CNI network for tests: its own bridge name and subnet (never
the real ignite0 or 10.61.0.0/16), and a snapshot of what the host's network
state looks like, to prove nothing leaked."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ignitevm.providers.network.cni import conflist, plugins


def require_cni() -> None:
    if os.geteuid() != 0:
        pytest.skip("CNI networking needs root")
    for tool in ("ip", "iptables-save"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            pytest.skip(f"{tool} is not installed (run scripts/setup.sh)")
    try:
        plugins.find("bridge")
    except Exception:
        pytest.skip("the CNI plugins are not installed (run scripts/setup.sh)")
    if not Path("/dev/net/tun").exists():
        pytest.skip("no /dev/net/tun on this host")


def test_network(tag: int, n: int | None = None) -> tuple[str, str, str]:
    """(network name, bridge, subnet) for a tag and a slot (by default one
    fixed by the process id)."""
    n = (os.getpid() + tag) % 200 + 20 if n is None else n
    return f"ignite-test-{n}", f"igt{n}", f"10.{200 + tag % 50}.{n}.0/24"


def write_default(root: Path, tag: int = 0, internal: bool = False) -> tuple[str, str, str]:
    """Make a network of the test's own the default one of ``root``. Its slot
    is claimed by making its lease folder, so that two runs on this host (two
    engineers' tests) never share a bridge or a subnet; remove_network frees it."""
    start = (os.getpid() + tag) % 200
    for i in range(200):
        name, bridge, subnet = test_network(tag, (start + i) % 200 + 20)
        try:
            (LEASES / name).mkdir(parents=True)
        except FileExistsError:
            continue  # (another run's, or one a killed run left)
        break
    else:
        raise AssertionError("no free test network slot (see /var/lib/cni/networks)")
    # (a bridge of that name left by an earlier run that was killed would keep
    # its old address: the bridge plugin then refuses the new subnet)
    subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
    conflist.write(root, conflist.DEFAULT,
                   conflist.bridge_conflist(name, bridge, subnet, internal=internal))
    return name, bridge, subnet


LEASES = Path("/var/lib/cni/networks")


def claim_network(prefix: str, tag: int = 0) -> tuple[str, int]:
    """A network name ``<prefix><n>`` (n in 20..219) that no other run on this
    host holds at the same time, claimed by a folder of its own beside the
    lease folders (as write_default claims its slot): a subnet the test
    derives from n is then its own. (The bridge and lease folder of a named
    network are the root's own anyway: networks.host_names.) free_claim
    gives it back."""
    start = (os.getpid() + tag) % 200
    for i in range(200):
        n = (start + i) % 200 + 20
        try:
            (LEASES / f"{CLAIM}{prefix}{n}").mkdir(parents=True)
        except FileExistsError:
            continue
        return f"{prefix}{n}", n
    raise AssertionError(f"no free {prefix} network slot (see {LEASES})")


def free_claim(name: str) -> None:
    (LEASES / f"{CLAIM}{name}").rmdir()


CLAIM = "ignitevm-test-slot-"


def remove_network(name: str, bridge: str) -> None:
    subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
    shutil.rmtree(Path("/var/lib/cni/networks") / name, ignore_errors=True)


def snapshot(*tokens: str, ports_of: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """The host's network state that is the test's own: links, namespaces,
    iptables rules (and the chains they name) and CNI leases whose text holds
    one of ``tokens`` (the test's id prefix, network name, subnet prefix...),
    and the ports of the bridges ``ports_of``. Other runs on this host (other
    tests, VMs on the real ignite0) come and go meanwhile: they are not
    looked at."""
    def out(*argv: str) -> list[str]:
        text = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        return [line for line in text.splitlines() if not line.startswith("#")]

    def ours(line: str) -> bool:
        return any(t in line for t in tokens)

    def name(line: str) -> str:
        return line.split(":")[1].strip().split("@")[0]

    links = {name(line) for line in out("ip", "-o", "link") if ours(name(line))}
    for bridge in ports_of:
        links |= {name(line) for line in out("ip", "-o", "link", "show", "master", bridge)}
    leases = sorted(str(p) for p in Path("/var/lib/cni/networks").glob("*/*")
                    if not p.name.startswith(("lock", "last_reserved")) and ours(str(p)))
    rules = [line for line in out("iptables-save") if line.startswith("-A") and ours(line)]
    named = {w for line in rules for w in line.split() if w.startswith("CNI-")}
    chains = [line for line in out("iptables-save") if line.startswith(":")
              and line[1:].split()[0] in named - SHARED_CHAINS]
    return {"links": sorted(links), "netns": sorted(filter(ours, out("ip", "netns", "list"))),
            "iptables": sorted(rules + chains), "leases": leases}


# (made once per host by the plugins, and shared by every attachment)
SHARED_CHAINS = {"CNI-FORWARD", "CNI-ADMIN", "CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ",
                 "CNI-HOSTPORT-SETMARK"}


def scope(prefix: str, net: tuple[str, str, str]) -> tuple[str, ...]:
    """The tokens that name a test's objects: its VMs' id prefix (with the
    dash that ends it: `ignt12` must not match another run's `ignt123-...`),
    its network's name and the prefix of the network's addresses."""
    name, _bridge, subnet = net
    prefix = prefix if prefix.endswith("-") else prefix + "-"
    return (prefix, f'\\"{name}\\"', f"/{name}/", subnet.rsplit(".", 1)[0] + ".")
