"""Network providers. ``user`` (QEMU user-mode networking, no root needed) today;
CNI behind the same small interface later."""

from __future__ import annotations

from ignitevm.errors import InvalidInput
from ignitevm.providers.network.base import NetPlan

PLUGINS = ("user", "none")


def plan(plugin: str, ports: list[tuple[str, str, int, int]], ssh: bool) -> NetPlan | None:
    """The network of one VM start; ports are (proto, host ip, host port, guest port)."""
    if plugin in ("", "user"):
        from ignitevm.providers.network.usermode import plan as user_plan

        return user_plan(ports, ssh)
    if plugin == "none":
        if ports or ssh:
            raise InvalidInput("--network-plugin none: port forwards and --ssh need a network")
        return None
    raise InvalidInput(f"network plugin {plugin!r} is not available on this host yet",
                       hint="use --network-plugin user (the default) or none")
