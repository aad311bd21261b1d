"""The host Configuration file (``kind: Configuration``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ignitevm.errors import InvalidInput

DEFAULT_PATH = Path("/etc/ignite/config.yaml")


def load_configuration(path: str | None) -> dict[str, Any] | None:
    if not path:
        if not DEFAULT_PATH.exists():
            return None
        path = str(DEFAULT_PATH)
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise InvalidInput(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not data.get("kind") or not data.get("apiVersion"):
        raise InvalidInput(f"invalid config file {path}, Kind and APIVersion must be set")
    if data["kind"] != "Configuration":
        raise InvalidInput(f"config file {path} is a {data['kind']}, not a Configuration")
    return data
