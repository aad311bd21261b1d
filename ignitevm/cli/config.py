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
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"config file {path} is not UTF-8 text (byte {exc.start + 1})",
                           hint="a Configuration is YAML in UTF-8") from None
    from ignitevm.api.codec import safe_loader

    try:
        data = yaml.load(text, Loader=safe_loader())  # (a SafeLoader without aliases)
    except RecursionError:  # ``[[[[...``: PyYAML recurses per level
        raise InvalidInput(f"config file {path}: not valid YAML: nested too deeply") from None
    except (yaml.YAMLError, ValueError, TypeError, ArithmeticError) as exc:
        # also a constructor's error (2001-13-45: ValueError), as codec.CONSTRUCTOR_ERRORS
        from ignitevm.api.codec import yaml_problem

        where, problem = yaml_problem(exc, text)
        raise InvalidInput(f"config file {path}{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict) or not data.get("kind") or not data.get("apiVersion"):
        raise InvalidInput(f"invalid config file {path}, Kind and APIVersion must be set")
    if data["kind"] != "Configuration":
        raise InvalidInput(f"config file {path} is a {data['kind']}, not a Configuration")
    return data
