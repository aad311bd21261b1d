"""The part of Go templates that Ignite's ``-t`` and ``-f`` flags use: field paths.

``{{.ObjectMeta.Name}} {{.Spec.CPUs}}`` walks the object by Go field names
and prints values as Go would (``true``, ``[a b]``, ``map[k:v]``, ``<nil>``,
sizes as ``512.0 MB``).
"""

from __future__ import annotations

import re
from typing import Any

from ignitevm.api.types import Size
from ignitevm.errors import InvalidInput

_SPECIAL = {
    "ObjectMeta": "metadata", "CPUs": "cpus", "OCI": "oci", "UID": "uid",
    "IPAddresses": "ip_addresses", "IDPrefix": "id_prefix", "SSH": "ssh", "ID": "id",
    "CmdLine": "cmd_line", "TypeMeta": None,
}
_FIELD_RE = re.compile(r"\{\{\s*(\.[A-Za-z0-9_.]*)\s*\}\}")
_FILTER_RE = re.compile(r"^\s*\{\{\s*(\.[A-Za-z0-9_.]*)\s*\}\}\s*(==|=~|!~|!=|=)\s*([^,]*)$")


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def lookup(obj: Any, path: str) -> Any:
    cur = obj
    for part in filter(None, path.split(".")):
        if part in ("Kind", "APIVersion") and hasattr(obj, "kind"):
            cur = obj.kind if part == "Kind" else obj.api_version
            continue
        attr = _SPECIAL.get(part, _snake(part))
        if attr is None:
            continue
        if isinstance(cur, dict):
            cur = cur.get(part)
            continue
        if cur is None or not hasattr(cur, attr):
            raise InvalidInput(f"template: can't evaluate field {part} in {path!r}",
                               hint="fields look like .ObjectMeta.Name, .Spec.CPUs, "
                               ".Status.Running")
        cur = getattr(cur, attr)
    if path.endswith(".SSH") and cur is not None:
        # Go held spec.ssh as a struct {Generate bool; PublicKey string}.
        return _GoStruct((cur is True, "" if isinstance(cur, bool) else cur))
    return cur


class _GoStruct(tuple):  # type: ignore[type-arg]
    """Field values of a Go struct with no counterpart here, printed as Go would."""


def go_str(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Size):
        return str(value)
    if isinstance(value, list):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_str(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, _GoStruct):
        return "{" + " ".join(go_str(v) for v in value) + "}"
    if hasattr(value, "__struct_fields__"):
        return "{" + " ".join(go_str(getattr(value, f)) for f in value.__struct_fields__) + "}"
    return str(value)


def render(template: str, obj: Any) -> str:
    if "{{" in template and not _FIELD_RE.search(template):
        raise InvalidInput(f"invalid template {template!r}",
                           hint="write fields as {{.ObjectMeta.Name}}")
    return _FIELD_RE.sub(lambda m: go_str(lookup(obj, m.group(1))), template)


def apply_filter(objs: list[Any], expr: str) -> list[Any]:
    rules = []
    for part in expr.split(","):
        m = _FILTER_RE.match(part)
        if not m:
            raise InvalidInput(f"failed to extract keys-values from filter list [{expr}]",
                               hint="write {{.ObjectMeta.Name}}=value, joined by commas; "
                               "operators: = == != =~ !~")
        rules.append(m.groups())
    out = []
    for obj in objs:
        ok = True
        for path, op, want in rules:
            got = go_str(lookup(obj, path))
            want = want.strip()
            if op in ("=", "=="):
                ok = got == want
            elif op == "!=":
                ok = got != want
            elif op == "=~":
                ok = want in got
            else:
                ok = want not in got
            if not ok:
                break
        if ok:
            out.append(obj)
    return out
