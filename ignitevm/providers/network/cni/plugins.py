"""Run one CNI plugin as the spec says: the command and identity in CNI_*
environment variables, the network config on stdin, a result (or an error)
as JSON on stdout."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ignitevm.errors import IgniteError, MissingTool

SEARCH_PATH = ("/usr/lib/cni", "/opt/cni/bin")
PACKAGE = "containernetworking-plugins"


class CNIError(IgniteError):
    """A CNI plugin refused or failed; carries the spec's error code."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = ""):
        why = msg + (f" ({details})" if details and details not in msg else "")
        super().__init__(f"CNI plugin {plugin} failed on {command}: {why}",
                         hint="--log-level debug shows the network config it was given")
        self.plugin, self.command, self.code = plugin, command, code


def search_path() -> list[str]:
    extra = os.environ.get("IGNITE_CNI_PATH", "")
    return [p for p in (*extra.split(":"), *SEARCH_PATH) if p]


def find(plugin: str) -> Path:
    """The plugin's executable; a missing one names the package that has it."""
    if not plugin or "/" in plugin or plugin.startswith("."):
        raise IgniteError(f"invalid CNI plugin type {plugin!r}")
    for d in search_path():
        exe = Path(d) / plugin
        if os.access(exe, os.X_OK):
            return exe
    raise MissingTool(f"CNI plugin {plugin!r} is not installed "
                      f"(looked in {', '.join(search_path())})",
                      hint=f"install it with: apt-get install {PACKAGE}")


def invoke(command: str, conf: dict[str, Any], *, container_id: str, netns: str,
           ifname: str, args: str = "") -> dict[str, Any] | None:
    """Run ``conf['type']`` with ``command`` (ADD, DEL, CHECK, VERSION); the
    parsed result for ADD, None otherwise."""
    from ignitevm.util.proc import run

    plugin = str(conf.get("type", ""))
    exe = find(plugin)
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": args,
        "CNI_PATH": ":".join(search_path()),
    }
    res = run([exe], input=json.dumps(conf), env=env, check=False)
    if res.returncode != 0:
        raise _error(plugin, command, res.stdout, res.stderr, res.returncode)
    if command != "ADD":
        return None
    try:
        result = json.loads(res.stdout)
    except ValueError as exc:
        raise CNIError(plugin, command, 999, f"not a JSON result: {res.stdout[:200]!r}") from exc
    if not isinstance(result, dict):
        raise CNIError(plugin, command, 999, "the result is not a JSON object")
    return result


def _error(plugin: str, command: str, stdout: str, stderr: str, rc: int) -> CNIError:
    try:
        err = json.loads(stdout)
    except ValueError:
        err = None
    if isinstance(err, dict) and "msg" in err:
        return CNIError(plugin, command, int(err.get("code") or 0), str(err["msg"]),
                        str(err.get("details") or ""))
    text = (stderr or stdout).strip().splitlines()
    return CNIError(plugin, command, 999, text[-1] if text else f"exit code {rc}")


def strays(container_id: str) -> list[int]:
    """Plugins still working for ``container_id`` (their CLI was killed)."""
    from ignitevm.util.proc import pids_where

    tag = f"CNI_CONTAINERID={container_id}".encode()
    return pids_where("environ", lambda env: tag in env.split(b"\0"))


def stop_strays(container_id: str) -> None:
    """A plugin must not go on working while the attachment is released:
    end those a killed CLI left, and wait for them to be gone."""
    from ignitevm.util.proc import kill_and_wait

    for pid in strays(container_id):
        kill_and_wait(pid)
