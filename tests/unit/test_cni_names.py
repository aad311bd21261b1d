"""Names read back from conflists, and networks that are not the project's.

No root and no plugins needed: the commands that would touch the host (`ip
link delete`, the isolation rules) are replaced by recorders, and lease
folders are the test's own (the conflists name a dataDir in tmp_path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ignitevm.errors import InvalidInput, NotFound
from ignitevm.providers.network.cni import conflist, isolate, networks, sweep


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """What would have been done to the host: commands run, bridges dropped."""
    import ignitevm.util.proc as proc

    done: list[list[str]] = []
    monkeypatch.setattr(proc, "run", lambda argv, **kw: done.append(list(argv)))
    monkeypatch.setattr(isolate, "drop", lambda bridge="", lines=None: done.append(
        ["drop", bridge]))
    monkeypatch.setenv("IGNITE_CNI_CONF_DIR", str(tmp_path / "shared"))
    return done


def foreign(tmp_path: Path, name: str, bridge: str, data: Path) -> dict[str, Any]:
    """Another tool's conflist (containerd's, say) in the shared folder."""
    conf = {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": True,
         "ipam": {"type": "host-local", "dataDir": str(data),
                  "ranges": [[{"subnet": "10.88.0.0/16"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    d = tmp_path / "shared"
    d.mkdir(exist_ok=True)
    (d / f"{name}.conflist").write_text(json.dumps(conf))
    return conf


@pytest.mark.parametrize("name", ["/", "../../../../home", "..", ".hidden", "a/b", "x\n", ""])
def test_a_conflist_name_that_is_no_cni_name_is_refused(name: str) -> None:
    conf = conflist.bridge_conflist(name, "ign-0123456789", "10.77.0.0/24")
    with pytest.raises(InvalidInput, match=r"not a CNI conflist|invalid network name"):
        conflist.check(conf, "x.conflist")
    with pytest.raises(InvalidInput):
        sweep.lease_dir(conf)  # (a record's conflist, read back at release)


@pytest.mark.parametrize("bridge", ["a" * 16, "..", ".", "br 0", "br/0", "br:0", "", "-x\n"])
def test_a_bridge_name_the_kernel_would_not_take_is_refused(bridge: str) -> None:
    conf = conflist.bridge_conflist("ignite-lab", bridge, "10.77.0.0/24")
    with pytest.raises(InvalidInput, match="invalid bridge name"):
        conflist.check(conf, "x.conflist")
    conflist.check(conflist.bridge_conflist("cni-1.x_y", "a" * 15, "10.77.0.0/24"), "ok")


def test_a_lease_folder_outside_the_data_folder_is_never_removed(
        tmp_path: Path, host: list[list[str]]) -> None:
    """A conflist whose name climbs out of the data folder (written by hand into
    the project's own folder, so marked as the project's): `network rm` refuses
    it, and nothing outside the data folder goes."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    conf = conflist.bridge_conflist("../victim", "ign-0123456789", "10.77.0.0/24",
                                    network="evil")
    conf["plugins"][0]["ipam"]["dataDir"] = str(tmp_path / "data")
    (tmp_path / "data").mkdir()
    conflist.write(tmp_path, "evil", conf)
    with pytest.raises(InvalidInput, match=r"invalid network name .\.\./victim."):
        networks.remove(tmp_path, "evil", [])
    assert (victim / "keep").read_text() == "precious" and host == []
    # A lease folder that is a link elsewhere is left too (the rest goes).
    conf["name"] = "linked"
    conflist.write(tmp_path, "evil", conf)
    (tmp_path / "data" / "linked").symlink_to(victim)
    networks.remove(tmp_path, "evil", [])
    assert (victim / "keep").read_text() == "precious"
    assert not conflist.path(tmp_path, "evil").exists()
    # ...while a real one in the data folder goes.
    (tmp_path / "data" / "real").mkdir()
    conf["name"] = "real"
    conflist.write(tmp_path, "evil", conf)
    networks.remove(tmp_path, "evil", [])
    assert not (tmp_path / "data" / "real").exists()


@pytest.mark.parametrize("name", ["../x", "../../etc/x", "a/b", "UPPER", "x" * 33, ""])
def test_a_network_argument_is_a_network_name(tmp_path: Path, host: list[list[str]],
                                              name: str) -> None:
    """``network rm/inspect ../x`` never reaches <conf_dir>/../x.conflist."""
    outside = tmp_path / "x.conflist"
    outside.write_text(json.dumps(conflist.bridge_conflist("ignite-x", "ign-0123456789",
                                                           "10.77.0.0/24", network="x")))
    for call in (lambda: networks.get(tmp_path, name),
                 lambda: networks.remove(tmp_path, name, []),
                 lambda: networks.remove_check(tmp_path, name, [])):
        with pytest.raises(InvalidInput, match="invalid network name"):
            call()
    assert outside.exists() and host == []


def test_other_tools_networks_are_listed_but_never_removed(
        tmp_path: Path, host: list[list[str]], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A conflist folder shared with containerd: its network is listed (and
    could be joined), but rm refuses it and prune skips it, so its bridge and
    lease folder stay."""
    from ignitevm.cli.main import main

    data = tmp_path / "leases"
    (data / "containerd-net").mkdir(parents=True)
    (data / "containerd-net" / "10.88.0.2").write_text("someone-else\n")
    foreign(tmp_path, "containerd-net", "cni0", data)
    mine = networks.create(tmp_path, "lab", "10.77.0.0/24")
    got = {n.name: n.own for n in networks.listing(tmp_path)}
    assert got == {"containerd-net": False, "default": True, "lab": True}
    with pytest.raises(InvalidInput, match=r"'containerd-net'.*was not made by ignite"):
        networks.remove(tmp_path, "containerd-net", [])
    assert host == [] and (data / "containerd-net" / "10.88.0.2").exists()

    monkeypatch.setenv("IGNITE_ROOT", str(tmp_path / "root"))
    mask = os.umask(0o022)  # (main makes the process's umask private: put it back after)
    os.umask(mask)
    try:
        _cli_checks(main, capsys, host, tmp_path, data, mine)
    finally:
        os.umask(mask)


def _cli_checks(main: Any, capsys: pytest.CaptureFixture[str], host: list[list[str]],
                tmp_path: Path, data: Path, mine: networks.Network) -> None:
    assert main(["network", "rm", "containerd-net"]) != 0
    err = capsys.readouterr().err
    assert "was not made by ignite" in err and "Traceback" not in err
    assert main(["network", "rm", "../containerd-net"]) != 0
    assert len([ln for ln in capsys.readouterr().err.splitlines()
                if ln.startswith("error:")]) == 1
    assert main(["network", "prune"]) == 0  # (lab goes, containerd's stays)
    assert ["drop", "cni0"] not in host and ["drop", mine.bridge] in host
    assert (tmp_path / "shared" / "containerd-net.conflist").exists()
    assert (data / "containerd-net" / "10.88.0.2").exists()
    assert not conflist.path(tmp_path, "lab").exists()


def test_the_project_knows_its_networks_of_earlier_versions(tmp_path: Path) -> None:
    """No mark in conflists made before it: the names those versions gave are
    recognised exactly (the default network, ``ignite-<name>`` on the bridge
    the first version derived, host_names' names); a near miss is not."""
    import hashlib

    old_bridge = "ign-" + hashlib.sha256(b"lab").hexdigest()[:10]
    cases = [
        ("default", conflist.bridge_conflist(conflist.DEFAULT_NAME, conflist.DEFAULT_BRIDGE,
                                             conflist.DEFAULT_SUBNET), True),
        ("lab", conflist.bridge_conflist("ignite-lab", old_bridge, "10.77.0.0/24"), True),
        ("lab", conflist.bridge_conflist(*networks.host_names(tmp_path, "lab"),
                                         "10.77.0.0/24"), True),
        ("lab", conflist.bridge_conflist("ignite-lab", "cni0", "10.77.0.0/24"), False),
        ("lab", conflist.bridge_conflist("lab", old_bridge, "10.77.0.0/24"), False),
        ("default", conflist.bridge_conflist("cbr0", "cni0", "10.77.0.0/24"), False),
        ("lab", conflist.bridge_conflist("x", "cni0", "10.77.0.0/24", network="other"), False),
        ("lab", conflist.bridge_conflist("x", "cni0", "10.77.0.0/24", network="lab"), True),
    ]
    for name, conf, want in cases:
        assert networks.own(tmp_path, name, conf) is want, (name, conf)
    made = networks.create(tmp_path, "web", "10.78.0.0/24")
    assert made.conf["ignitevm"] == {"network": "web"}
    assert networks.get(tmp_path, "web").own
    assert conflist.load(tmp_path)["ignitevm"] == {"network": "default"}


def test_a_broken_foreign_conflist_does_not_break_the_listing(
        tmp_path: Path, host: list[list[str]]) -> None:
    d = tmp_path / "shared"
    d.mkdir()
    (d / "bad.conflist").write_text("{not json")
    (d / "Odd_Name.conflist").write_text("{}")
    (d / "slash.conflist").write_text(json.dumps(
        {"name": "/", "plugins": [{"type": "bridge", "bridge": "cni0"}]}))
    assert [n.name for n in networks.listing(tmp_path)] == ["default"]
    with pytest.raises(InvalidInput, match="invalid network name '/'"):
        networks.get(tmp_path, "slash")
    with pytest.raises(NotFound):
        networks.get(tmp_path, "nothing")


def _lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ipam: object) -> Path:
    monkeypatch.delenv("IGNITE_CNI_CONF_DIR", raising=False)
    conf = conflist.bridge_conflist("ignite-lab", "ign-lab", "10.77.0.0/24", network="lab")
    conf["plugins"][0]["ipam"] = ipam
    conflist.write(tmp_path, "lab", conf)
    return tmp_path


@pytest.mark.parametrize("ipam", [
    {"type": "host-local", "ranges": [[{"subnet": "fd00::/64", "gateway": "fd00:0::0001"}]]},
    {"type": "host-local", "ranges": [[{"subnet": "fd00::/64"}]]},
    {"type": "host-local", "subnet": "FD00::/64", "gateway": "FD00::1"},
])
def test_the_gateway_is_refused_however_it_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ipam: object) -> None:
    from ignitevm.providers.network.cni.vm import check_wants

    root = _lab(tmp_path, monkeypatch, ipam)
    for ip in ("fd00::1", "fd00:0:0::1"):
        with pytest.raises(InvalidInput, match="is the gateway of network 'lab'"):
            check_wants(root, [("lab", ip)])
    check_wants(root, [("lab", "fd00::2")])


@pytest.mark.parametrize("ipam", [
    "host-local",
    {"type": "host-local", "ranges": 5},
    {"type": "host-local", "ranges": {"subnet": "10.77.0.0/24"}},
    {"type": "host-local", "ranges": [5]},
    {"type": "host-local", "ranges": [[5]]},
    {"type": "host-local", "ranges": [[{"subnet": 5}]]},
    {"type": "host-local", "ranges": [[{"subnet": "10.77.0.0/33"}]]},
    {"type": "host-local", "ranges": [[{"subnet": "10.77.0.0/24", "gateway": "gw"}]]},
    {"type": "host-local", "subnet": ["10.77.0.0/24"]},
])
def test_a_malformed_ipam_is_no_conflist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         ipam: object) -> None:
    """A hand-edited ipam section of the wrong shape is one clear error when the
    network is used, not a TypeError; the listing leaves it out."""
    from ignitevm.providers.network.cni.vm import check_wants

    root = _lab(tmp_path, monkeypatch, ipam)
    with pytest.raises(InvalidInput, match="is not a CNI conflist: the ipam of its 'bridge'"):
        check_wants(root, [("lab", "10.77.0.5")])
    assert [n.name for n in networks.listing(root)] == ["default"]
