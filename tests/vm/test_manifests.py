"""Ignite's command-line and manifest surface against the real CLI and store."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import Ignite


def test_twenty_creates_at_once_make_twenty_vms(cli: Ignite, testbox: str) -> None:
    def one(i: int) -> str:
        args = ["create", testbox, "--size", "256MB", "-q"]
        if i % 4 == 0:
            args += ["--name", "contested"]
        res = cli(*args, check=False)
        return res.stdout.strip() if res.returncode == 0 else f"error:{res.stderr}"

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    made = [r for r in results if not r.startswith("error:")]
    refused = [r for r in results if r.startswith("error:")]
    assert len(made) == 16 and len(refused) == 4  # one "contested" wins, four lose
    assert all("already exists" in r for r in refused)
    rows = json.loads(cli("ps", "-a", "-o", "json").stdout)
    names = [vm["metadata"]["name"] for vm in rows]
    assert len(names) == len(set(names))
    assert set(made) <= {vm["metadata"]["uid"] for vm in rows}
    # `ignite ps -q | xargs ignite rm -f`, as Ignite users write it.
    cli("rm", "-f", *cli("ps", "-a", "-q").stdout.split())
    assert cli("ps", "-a", "-q").stdout == ""
    assert not list((cli.root / "tmp").iterdir())


def test_config_manifest_create_filter_template_and_rm(cli: Ignite, testbox: str,
                                                      tmp_path: Path) -> None:
    manifest = tmp_path / "vm.yaml"
    manifest.write_text(f"""apiVersion: ignite.weave.works/v1alpha4
kind: VM
metadata:
  name: from-manifest
  labels:
    team: blue
spec:
  image:
    oci: {testbox}
  cpus: 2
  memory: 300MB
  diskSize: 512MB
""")
    cli("create", "--config", str(manifest))
    wide = cli("ps", "-a", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-4:] == ["NETWORK", "ACCEL", "SSH", "LABELS"]
    assert any(line.endswith("team=blue") for line in wide)
    out = cli("ps", "-a", "-f", "{{.ObjectMeta.Name}}=~manifest,{{.Spec.CPUs}}=2",
              "-t", "{{.ObjectMeta.Name}} {{.Spec.Memory}} {{.ObjectMeta.Labels}}").stdout
    assert out == "from-manifest 300.0 MB map[team:blue]\n"
    assert cli("ps", "-a", "-f", "{{.Spec.CPUs}}=4", "-t", "{{.ObjectMeta.Name}}").stdout == ""
    tmpl = cli("inspect", "vm", "from-manifest", "-t",
               "{{.Spec.Image.OCI}} {{.Spec.DiskSize}} {{.Status.Running}}").stdout
    assert tmpl == f"{testbox} 512.0 MB false\n"
    yaml_out = cli("inspect", "vm", "from-manifest", "-o", "yaml").stdout
    assert "apiVersion: ignite.weave.works/v1alpha4" in yaml_out
    res = cli("rm", "--config", str(manifest), "from-manifest", check=False)
    assert res.returncode == 1 and "not both" in res.stderr
    res = cli("ps", "-a", "-t", "{{.Spec.Nope}}", check=False)
    assert res.returncode == 1 and "can't evaluate field Nope" in res.stderr
    cli("rm", "--config", str(manifest))
    assert "from-manifest" not in cli("ps", "-a").stdout
