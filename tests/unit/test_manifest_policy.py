"""What a manifest read by ignited may take from the host: only files below the
Configuration's spec.manifestPolicy.copyFilesFrom and devices it lists."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ignitevm.api.types import VM, BlockDevice, FileMapping, ObjectMeta, Volume, VolumeMount
from ignitevm.daemon.policy import ManifestPolicy
from ignitevm.errors import InvalidInput


def _vm(**spec: object) -> VM:
    vm = VM(metadata=ObjectMeta(name="m", uid="0123456789abcdef"))
    vm.spec.image.oci = "base:latest"
    for key, value in spec.items():
        setattr(vm.spec, key, value)
    return vm


def _copy(path: str | Path) -> VM:
    return _vm(copy_files=[FileMapping(host_path=str(path), vm_path="/x")])


def _volume(path: str | Path) -> VM:
    vm = _vm()
    vm.spec.storage.volumes = [Volume(name="v0", block_device=BlockDevice(path=str(path)))]
    vm.spec.storage.volume_mounts = [VolumeMount(name="v0", mount_path="/mnt")]
    return vm


def test_nothing_is_allowed_by_default() -> None:
    policy = ManifestPolicy()
    with pytest.raises(InvalidInput, match="copyFilesFrom") as info:
        policy.check(_copy("/etc/shadow"))
    assert "nothing allowed" in str(info.value) and "--ignite-config" in (info.value.hint or "")
    with pytest.raises(InvalidInput, match=r"spec.manifestPolicy.volumes"):
        policy.check(_volume("/dev/sda"))
    with pytest.raises(InvalidInput, match="ssh public key"):
        policy.check(_vm(ssh="/root/.ssh/id_ed25519.pub"))
    with pytest.raises(InvalidInput, match="local archive"):
        policy.check(_vm(image=type(_vm().spec.image)(oci="/srv/secret.tar")))
    policy.check(_vm(ssh=True))  # a generated key pair reads no host file


def test_copy_files_below_an_allowed_folder(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "secret"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "ok").write_text("ok")
    (outside / "key").write_text("secret")
    (allowed / "link").symlink_to(outside / "key")
    (allowed / "dirlink").symlink_to(outside)
    policy = ManifestPolicy(copy_files_from=(str(allowed),))
    policy.check(_copy(allowed / "ok"))
    policy.check(_copy(allowed))
    for escape in (allowed / "link", allowed / "dirlink" / "key", f"{allowed}/../secret/key",
                   f"{allowed}x/y", "/etc/shadow"):
        with pytest.raises(InvalidInput, match="is not below a folder"):
            policy.check(_copy(escape))
    (allowed / "id.pub").write_text("ssh-ed25519 AAAA")
    policy.check(_vm(ssh=str(allowed / "id")))  # .pub is added, as the CLI does


def test_volumes_allowed_by_device_or_glob(tmp_path: Path) -> None:
    """Device nodes stand in as plain files: the policy only compares resolved paths."""
    dev, by_id = tmp_path / "dev", tmp_path / "by-id"
    dev.mkdir()
    by_id.mkdir()
    for name in ("vdb", "vdc", "sda"):
        (dev / name).write_text("")
    (by_id / "virtio-data-1").symlink_to(dev / "vdc")
    (by_id / "virtio-root").symlink_to(dev / "sda")
    policy = ManifestPolicy(volumes=(str(dev / "vdb"), str(by_id / "virtio-data-*")))
    policy.check(_volume(dev / "vdb"))
    policy.check(_volume(by_id / "virtio-data-1"))
    policy.check(_volume(dev / "vdc"))  # what an allowed by-id link names
    for refused in (dev / "sda", by_id / "virtio-root", f"{by_id}/virtio-data-1/../../dev/sda",
                    f"{dev}/vdb/../sda"):
        with pytest.raises(InvalidInput, match="is not allowed"):
            policy.check(_volume(refused))


def test_policy_from_the_configuration(tmp_path: Path) -> None:
    cfg = {"spec": {"manifestPolicy": {"copyFilesFrom": ["/srv/files"],
                                       "volumes": ["/dev/vd[b-z]"]}}}
    policy = ManifestPolicy.from_configuration(cfg, "/etc/ignite/config.yaml")
    assert policy.copy_files_from == ("/srv/files",) and policy.volumes == ("/dev/vd[b-z]",)
    assert ManifestPolicy.from_configuration(None, "x") == ManifestPolicy(where="x")
    for bad in ({"copyFilesFrom": "/srv"}, {"volumes": ["relative"]}, {"copyFiles": []}, [1]):
        with pytest.raises(InvalidInput, match="manifestPolicy"):
            ManifestPolicy.from_configuration({"spec": {"manifestPolicy": bad}}, "x")


def test_reconciler_refuses_a_manifest_that_reads_host_files(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ignitevm.daemon.manifests import ManifestReader
    from ignitevm.daemon.reconcile import Reconciler
    from ignitevm.operations.context import Context

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "vm.yaml").write_text(
        "apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nmetadata:\n  name: thief\n"
        "  uid: 0123456789abcdef\nspec:\n  image:\n    oci: base\n  copyFiles:\n"
        "  - hostPath: /etc/shadow\n    vmPath: /shadow\nstatus:\n  running: true\n")
    ctx = Context(root=tmp_path / "root")
    with caplog.at_level(logging.ERROR, logger="ignitevm"):
        Reconciler(ctx, f"dir:{folder}").sync(ManifestReader(folder).read())
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "thief" in said and "/etc/shadow" in said and "copyFilesFrom" in said
    assert ctx.store.list(VM) == []


def test_ignited_reads_the_policy_from_its_configuration(tmp_path: Path) -> None:
    from ignitevm.daemon.main import _policy, build_parser

    cfg = tmp_path / "config.yaml"
    cfg.write_text("apiVersion: ignite.weave.works/v1alpha4\nkind: Configuration\nspec:\n"
                   f"  manifestPolicy:\n    copyFilesFrom: [{tmp_path}]\n")
    args = build_parser().parse_args(["daemon", "--ignite-config", str(cfg)])
    policy = _policy(args)
    assert policy.copy_files_from == (str(tmp_path),) and policy.where == str(cfg)
