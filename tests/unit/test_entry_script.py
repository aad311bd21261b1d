"""The ``ignite`` command is the project's own script (bin/ignite, installed through
setuptools' script-files), not pip's entry-point wrapper, which imports re: installed
by ``pip install .`` and by the editable install scripts/setup.sh does, it runs the CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_installed_script(tmp_path: Path, editable: bool) -> None:
    project = tmp_path / "project"  # (a copy: a build leaves build/ and egg-info behind)
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, project / name)
    for name in ("bin", "ignitevm"):
        shutil.copytree(REPO / name, project / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    # (the system's setuptools and wheel build it: no package index is needed)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, capture_output=True)
    python = venv / "bin" / "python"
    if subprocess.run([python, "-c", "import setuptools, wheel"],
                      capture_output=True).returncode:
        pytest.skip("the system Python has no setuptools and wheel to build with")
    where = ["-e", str(project), "--config-settings", "editable_mode=compat"] if editable \
        else [str(project)]
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-deps", "--no-build-isolation", "--no-index", *where],
                   check=True, capture_output=True, cwd=tmp_path)
    script = venv / "bin" / "ignite"
    first, rest = script.read_text().split("\n", 1)
    assert first.startswith(f"#!{venv}/bin/python")  # (#!python, rewritten by pip)
    assert rest == (REPO / "bin" / "ignite").read_text().split("\n", 1)[1]
    assert (venv / "bin" / "ignited").exists()  # (still an entry point)
    # Run with this environment's dependencies (the scratch one has none of its own).
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": sysconfig.get_paths()["purelib"],
           "IGNITE_ROOT": str(tmp_path / "root")}
    version = subprocess.run([script, "version"], env=env, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("Ignite version:"), version
    where_from = subprocess.run([python, "-c", "import ignitevm; print(ignitevm.__file__)"],
                                env=env, capture_output=True, text=True, check=True,
                                cwd=tmp_path)
    assert where_from.stdout.startswith(str(project if editable else venv))
    usage = subprocess.run([script, "--help"], env=env, capture_output=True, text=True)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: ignite ")  # (argv[0])
    missing = subprocess.run([script, "image", "inspect", "nosuch"], env=env,
                             capture_output=True, text=True)
    assert missing.returncode != 0 and missing.stderr.startswith("error: ")
    assert "Traceback" not in missing.stderr
