"""Run a conflist: ADD plugin by plugin with each result handed to the next as
``prevResult``; DEL in reverse order with the cached final result.

DEL goes on past a failing plugin (the others still release what they hold)
and raises the first failure at the end; DEL is safe to repeat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ignitevm.errors import IgniteError
from ignitevm.log import log
from ignitevm.providers.network.cni.plugins import invoke


class Attachment(NamedTuple):
    """Who is attached where: the spec's identity of one network attachment."""

    container_id: str
    netns: str  # path of the network namespace
    ifname: str
    args: str = ""  # CNI_ARGS, e.g. IgnoreUnknown=1;IP=10.61.0.9
    runtime: dict[str, Any] | None = None  # capability args, e.g. {"portMappings": [...]}


def plugin_config(conflist: dict[str, Any], plugin: dict[str, Any],
                  prev: dict[str, Any] | None, runtime: dict[str, Any]) -> dict[str, Any]:
    """The network config one plugin of the chain reads on stdin."""
    conf = dict(plugin)
    conf["cniVersion"] = conflist.get("cniVersion", "1.0.0")
    conf["name"] = conflist["name"]
    caps = plugin.get("capabilities") or {}
    rc = {k: v for k, v in runtime.items() if caps.get(k)}
    if rc:
        conf["runtimeConfig"] = rc
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def add(conflist: dict[str, Any], att: Attachment) -> dict[str, Any]:
    """Run the chain's ADD; the final result. On failure the caller runs DEL."""
    result: dict[str, Any] | None = None
    for plugin in conflist["plugins"]:
        out = invoke("ADD", plugin_config(conflist, plugin, result, att.runtime or {}),
                     container_id=att.container_id, netns=att.netns, ifname=att.ifname,
                     args=att.args)
        result = out if out is not None else result
    if result is None:
        raise IgniteError(f"network {conflist['name']!r} gave no result")
    return result


def delete(conflist: dict[str, Any], att: Attachment, result: dict[str, Any] | None,
           before_last: Callable[[], None] | None = None) -> None:
    """Run the chain's DEL in reverse order with the cached ``result``;
    ``before_last`` is called right before the last DEL (the chain's first
    plugin)."""
    first: IgniteError | None = None
    for i, plugin in enumerate(reversed(conflist["plugins"])):
        if before_last is not None and i == len(conflist["plugins"]) - 1:
            before_last()
        try:
            invoke("DEL", plugin_config(conflist, plugin, result, att.runtime or {}),
                   container_id=att.container_id, netns=att.netns, ifname=att.ifname,
                   args=att.args)
        except IgniteError as exc:
            log.debug("CNI DEL: %s", exc)
            first = first or exc
    if first is not None:
        raise first
