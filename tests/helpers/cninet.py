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


def test_network(tag: int) -> tuple[str, str, str]:
    """(network name, bridge, subnet) distinct per tag and per process."""
    n = (os.getpid() + tag) % 200 + 20
    return f"ignite-test-{n}", f"igt{n}", f"10.{200 + tag % 50}.{n}.0/24"


def write_default(root: Path, tag: int = 0, internal: bool = False) -> tuple[str, str, str]:
    name, bridge, subnet = test_network(tag)
    # (a bridge of that name left by an earlier run that was killed would keep
    # its old address: the bridge plugin then refuses the new subnet)
    remove_network(name, bridge)
    conflist.write(root, conflist.DEFAULT,
                   conflist.bridge_conflist(name, bridge, subnet, internal=internal))
    return name, bridge, subnet


def remove_network(name: str, bridge: str) -> None:
    subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
    shutil.rmtree(Path("/var/lib/cni/networks") / name, ignore_errors=True)


def snapshot(exclude: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Links, namespaces, iptables rules and CNI leases of the host."""
    def out(*argv: str) -> list[str]:
        text = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        return sorted(line for line in text.splitlines()
                      if not line.startswith("#") and not any(x in line for x in exclude))

    links = [" ".join(line.split(":")[1:2]).strip().split("@")[0]
             for line in out("ip", "-o", "link")]
    leases = sorted(str(p) for p in Path("/var/lib/cni/networks").glob("*/*")
                    if not p.name.startswith(("lock", "last_reserved")))
    rules = [line for line in out("iptables-save") if line.startswith(("-A", ":CNI-"))
             and not line.startswith((":CNI-HOSTPORT", ":CNI-FORWARD", ":CNI-ADMIN"))]
    return {"links": sorted(links), "netns": out("ip", "netns", "list"),
            "iptables": rules, "leases": leases}
