"""`image inspect` / `kernel inspect`: the platform kept at import, the image config's run
settings, and records and configs read as untrusted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ignitevm.api.platform import checked_platform, config_platform
from ignitevm.api.types import Image, ObjectMeta
from ignitevm.cli.describe import digest_of, image_view, run_config, text
from tests.conftest import Ignite

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("config", "platform"), [
    ({"os": "linux", "architecture": "amd64"}, "linux/amd64"),
    ({"os": "linux", "architecture": "arm64", "variant": "v8"}, "linux/arm64/v8"),
    ({"os": "linux", "architecture": "arm", "variant": ""}, "linux/arm"),
    ({"os": "linux"}, ""),
    ({"os": "linux", "architecture": 64}, ""),
    ({"os": "linux", "architecture": "amd64\x1b[2J"}, ""),
    ({"os": "Linux", "architecture": "AMD64"}, ""),
    ({"os": "linux", "architecture": "a/b"}, ""),
    ({"os": "linux", "architecture": "x" * 33}, ""),
    ([], ""),
])
def test_config_platform(config: object, platform: str) -> None:
    assert config_platform(config) == platform


def test_checked_platform() -> None:
    assert checked_platform("linux/ppc64le") == "linux/ppc64le"
    for bad in ("", "linux", "linux/", "/amd64", "linux/amd64/v8/x", "linux/amd64\n", None, 3):
        assert checked_platform(bad) == ""


def test_run_config_keeps_only_what_has_the_right_type() -> None:
    cfg = run_config({"Entrypoint": "/bin/sh", "Cmd": ["/sbin/init", 3], "Env": {"A": "1"},
                      "ExposedPorts": ["80/tcp"], "Labels": {"a": "b", "n": 1},
                      "WorkingDir": ["/"], "User": "app", "Volumes": {"/data": {}}})
    assert cfg == {"Entrypoint": None, "Cmd": None, "Env": [], "ExposedPorts": {},
                   "Labels": {"a": "b"}, "WorkingDir": "", "User": "app"}
    assert run_config({})["Env"] == [] and run_config({})["Entrypoint"] is None


def test_digest_of() -> None:
    assert digest_of(f"oci://localhost:5000/app@{D}") == D
    assert digest_of(D) == D
    assert digest_of("deb://linux-image-cloud-amd64@6.1") is None
    assert digest_of(None) is None and digest_of("oci://x@sha256:12") is None


def _image(platform: str) -> Image:
    image = Image(metadata=ObjectMeta(name="app:1", uid="0123456789abcdef",
                                      created="2026-01-01T00:00:00Z"))
    image.status.oci_source.id = f"oci://localhost:5000/app@{D}"
    image.status.platform = platform
    return image


def test_view_and_text() -> None:
    view = image_view(_image("linux/amd64"), {
        "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "Env": ["A=1", "B=2"],
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "Labels": {"x": "y\x1b[2J"}})
    assert (view["digest"], view["platform"]) == (D, "linux/amd64")
    assert view["repoDigests"] == [f"localhost:5000/app@{D}"]
    shown = text(view)
    assert "\x1b" not in shown and "x=y\\x1b[2J" in shown
    lines = shown.splitlines()
    assert f"Digest:       {D}" in lines and "Platform:     linux/amd64" in lines
    assert 'Entrypoint:   ["/bin/sh", "-c"]' in lines
    assert lines[lines.index("Env:          A=1") + 1] == "              B=2"
    assert "ExposedPorts: 53/udp" in lines and "              80/tcp" in lines


def test_damaged_or_old_platform_reads_as_unknown() -> None:
    view = image_view(_image("linux/amd64\x1b]0;owned\x07"), {})
    assert view["platform"] is None and view["status"]["platform"] == ""
    assert "Platform:     unknown" in text(view).splitlines()
    assert image_view(_image(""), {})["platform"] is None


def test_import_keeps_the_platform_and_old_records_read(ignite: Ignite, tmp_path: Path) -> None:
    """An archive's platform is kept at import; a record made before (no platform) and one
    whose platform was tampered with still read, showing it as unknown."""
    from tests.helpers.images import OCILayout, busybox_layers, write_docker_archive

    layers = busybox_layers()
    write_docker_archive(tmp_path / "box.tar", "box:1", layers,
                         {"Cmd": ["/sbin/init"], "Labels": {"k": "v"}})
    ignite("image", "import", str(tmp_path / "box.tar"))
    [doc] = json.loads(ignite("image", "inspect", "-o", "json", "box:1").stdout)
    assert doc["platform"] == doc["status"]["platform"] == "linux/amd64"
    assert doc["config"]["Labels"] == {"k": "v"} and doc["digest"] == doc["status"][
        "ociSource"]["id"]

    layout = OCILayout(tmp_path / "oci")
    layout.tag(layout.image(layers, {"Cmd": ["/sbin/init"]}, arch="arm64", variant="v8"),
               "armbox")
    ignite("image", "import", "--name", "armbox", str(tmp_path / "oci"))
    assert "Platform:     linux/arm64/v8" in ignite("image", "inspect", "armbox").stdout

    record = ignite.root / "image" / doc["metadata"]["uid"] / "metadata.json"
    data = json.loads(record.read_text())
    del data["status"]["platform"]
    record.write_text(json.dumps(data))
    assert "Platform:     unknown" in ignite("image", "inspect", "box:1").stdout
    assert ignite("image", "ls", "-q").stdout.count("\n") == 2
    data["status"]["platform"] = "linux/amd64\x1b[2J"
    record.write_text(json.dumps(data))
    shown = ignite("image", "inspect", "box:1").stdout
    assert "Platform:     unknown" in shown and "\x1b" not in shown


HOSTILE = "x\x9b2J\u202eevil\x7f\u2028\u2029\u200b\ufeff\x1b[0m\x00 é\xa0😀"


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_structured_output_escapes_hostile_text(fmt: str) -> None:
    """`-o json` / `-o yaml` write an image config's text with every control, format or
    non-ASCII character escaped (nothing raw for a terminal), and it reads back the same."""
    import yaml

    from ignitevm.cli.common import dump

    view = image_view(_image("linux/amd64"), {"Labels": {"k\u202e": HOSTILE},
                                              "Cmd": [HOSTILE]})
    out = dump([view], fmt)
    assert out.isascii() and "\x7f" not in out and "\x1b" not in out and "\x00" not in out
    doc = json.loads(out) if fmt == "json" else yaml.safe_load(out)
    assert doc[0]["config"]["Labels"] == {"k\u202e": HOSTILE}
    assert doc[0]["config"]["Cmd"] == [HOSTILE]


def test_printable_escapes_controls_format_and_separators() -> None:
    from ignitevm.api.validation import printable

    assert printable(HOSTILE) == ("x\\x9b2J\\u202eevil\\x7f\\u2028\\u2029\\u200b\\ufeff"
                                  "\\x1b[0m\\x00 é\xa0😀")
    assert printable("plain text, é ü 😀") == "plain text, é ü 😀"
    assert printable("a\tb\nc\u0085\ud800") == "a\\tb\\nc\\x85\\ud800"
    shown = text(image_view(_image("linux/amd64"), {"Labels": {"k": HOSTILE}}))
    assert "\u202e" not in shown and "k=x\\x9b2J\\u202eevil" in shown


@pytest.mark.parametrize("platform", [5, None, {"os": "linux", "architecture": "amd64"},
                                      ["linux/amd64"], "linux/amd64\x1b[2J", "linux/amd64"])
def test_a_platform_of_another_form_does_not_hide_the_record(ignite: Ignite,
                                                             platform: object) -> None:
    """A record's platform that is no string (damaged, or a later form) reads as unknown:
    the image and the kernel stay listed and inspectable. A kernel's version is written
    even when empty, as Ignite's records have it."""
    from ignitevm.api import codec
    from ignitevm.api.types import Kernel

    for kind, uid, name in (("image", "00000000000000a1", "app:1"),
                            ("kernel", "00000000000000b1", "k:1")):
        obj: dict[str, object] = {
            "kind": kind.capitalize(), "apiVersion": "ignite.weave.works/v1alpha4",
            "metadata": {"name": name, "uid": uid, "created": "2026-01-01T00:00:00Z"},
            "spec": {"oci": name},
            "status": {"ociSource": {"id": f"oci://localhost:5000/{name.split(':')[0]}@{D}",
                                     "size": "1MB"}, "platform": platform}}
        if kind == "kernel":
            obj["status"]["version"] = ""  # type: ignore[index]
        folder = ignite.root / kind / uid
        folder.mkdir(parents=True)
        (folder / "metadata.json").write_text(json.dumps(obj))
        assert ignite(kind, "ls", "-q").stdout.split() == [uid]
        [doc] = json.loads(ignite(kind, "inspect", "-o", "json", uid).stdout)
        want = "linux/amd64" if platform == "linux/amd64" else None
        assert doc["platform"] == want and doc["status"].get("platform", "") == (want or "")
        [listed] = json.loads(ignite(kind, "ls", "-o", "json").stdout)
        assert listed["metadata"]["uid"] == uid
    assert json.loads(codec.to_json(Kernel()))["status"]["version"] == ""
