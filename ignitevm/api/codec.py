"""Decoding and encoding API objects (JSON and YAML), with one error shape."""

from __future__ import annotations

import functools
from typing import Any, TypeVar

# isort: off
from ignitevm.api import msgspec_import  # noqa: F401  (first: see there)
import msgspec
# isort: on

from ignitevm.api.types import GROUP, KINDS, Size
from ignitevm.errors import IgniteError, InvalidInput

T = TypeVar("T")


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Size):
        from ignitevm.util.sizes import format_size

        return format_size(obj.bytes)
    raise NotImplementedError(type(obj))


def _dec_hook(typ: type, obj: Any) -> Any:
    if typ is Size:
        try:
            return Size.parse(obj)
        except IgniteError as exc:
            raise ValueError(str(exc)) from None
    raise NotImplementedError(typ)


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj, enc_hook=_enc_hook)


def to_json(obj: Any, *, indent: int = 2) -> str:
    raw = _encoder.encode(obj)
    return msgspec.json.format(raw, indent=indent).decode() if indent else raw.decode()


def to_yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(to_builtins(obj), sort_keys=True, default_flow_style=False)


def from_builtins(data: Any, typ: type[T], source: str = "object") -> T:
    try:
        return msgspec.convert(data, typ, dec_hook=_dec_hook, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid {source}: {exc}") from None


def decode_json(raw: bytes, typ: type[T], source: str = "object") -> T:
    try:
        return msgspec.json.decode(raw, type=typ, dec_hook=_dec_hook, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid {source}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"{source} is not valid JSON: {exc}") from None


def _keep_strings(meta: dict[str, Any], text: str) -> None:
    """YAML reads an unquoted all-digit UID (``uid: 0123456789012345``) or name
    as a number (even as octal); take them as the file spells them."""
    import re

    for key in ("uid", "name"):
        value = meta.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            m = re.search(rf"^\s+{key}:\s*([^\s#]+)\s*(?:#.*)?$", text, re.M)
            meta[key] = m.group(1).strip("'\"") if m else str(value)


@functools.cache
def safe_loader() -> type:
    """PyYAML's SafeLoader without aliases: ``*ref`` lets a small hostile file
    expand into an exponentially large object ("billion laughs"); manifests
    and the host Configuration never need them."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not "
                                                  "allowed here", mark)
            return super().compose_node(parent, index)

    return NoAliasLoader


def yaml_problem(exc: Exception, text: str = "") -> tuple[str, str]:
    """PyYAML's error as ``(":line:column", problem)``, on one line: its own
    message spans lines and quotes the file. ``text``: what was parsed (to
    place a character the reader refused)."""
    import yaml

    where, problem = "", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            where = f":{mark.line + 1}:{mark.column + 1}"
        problem = exc.problem or exc.context or problem
        if exc.problem and exc.context and exc.context_mark is not None:
            cm = exc.context_mark
            problem = f"{problem} ({exc.context} at {cm.line + 1}:{cm.column + 1})"
    elif isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.position, int) and text:
        before = text[:exc.position]
        where = f":{before.count(chr(10)) + 1}:{exc.position - before.rfind(chr(10))}"
    problem = " ".join(str(problem).split())
    return where, "".join(c if c.isprintable() else repr(c)[1:-1] for c in problem)[:300]


# What PyYAML's constructors let through from Python on a value they cannot
# build (a date, a number); a bug of ours (NameError...) is not a user's error.
CONSTRUCTOR_ERRORS = (ValueError, TypeError, ArithmeticError)


def load_manifest(text: str, source: str) -> dict[str, Any]:
    """Parse a YAML or JSON manifest into a dict and check its apiVersion/kind.
    Every failure of the reader is one InvalidInput line: a syntax error, and
    what its recursion and constructors raise on a hostile file (5,000 ``[``:
    RecursionError; ``2001-13-45`` or a 5,000-digit number: ValueError)."""
    import yaml

    try:
        data = yaml.load(text, Loader=safe_loader())  # a SafeLoader
    except RecursionError:
        raise InvalidInput(f"{source}: not valid YAML or JSON: nested too deeply") from None
    except (yaml.YAMLError, *CONSTRUCTOR_ERRORS) as exc:
        where, problem = yaml_problem(exc, text)
        raise InvalidInput(f"{source}{where}: not valid YAML or JSON: {problem}") from None
    meta = data.get("metadata") if isinstance(data, dict) else None
    if isinstance(meta, dict):
        _keep_strings(meta, text)
    if not isinstance(data, dict) or not data.get("kind") or not data.get("apiVersion"):
        raise InvalidInput(
            f"invalid file {source}: kind and apiVersion must be set",
            hint="start the file with 'apiVersion: ignite.weave.works/v1alpha4' and a kind",
        )
    api_version = str(data["apiVersion"])
    group, _, version = api_version.partition("/")
    if group != GROUP:
        raise InvalidInput(f"{source}: unknown apiVersion {api_version!r}",
                           hint=f"use {GROUP}/v1alpha4")
    if version == "v1alpha1":
        raise InvalidInput(
            f"{source}: apiVersion {api_version} is no longer supported",
            hint="convert it to v1alpha4: replace 'ociClaim: {ref: X}' with 'oci: X' and "
            "'status.state' with 'status.running'",
        )
    if version not in ("v1alpha2", "v1alpha3", "v1alpha4"):
        raise InvalidInput(f"{source}: unknown apiVersion {api_version!r}",
                           hint=f"use {GROUP}/v1alpha4")
    if version == "v1alpha2":
        status = data.get("status")
        if isinstance(status, dict) and "ipAddresses" in status:
            ips = status.pop("ipAddresses")
            status.setdefault("network", {})["ipAddresses"] = ips
    data["apiVersion"] = f"{GROUP}/v1alpha4"
    return data


def decode_object(data: dict[str, Any], source: str) -> Any:
    kind = data.get("kind")
    typ = KINDS.get(str(kind))
    if typ is None:
        raise InvalidInput(f"{source}: unknown kind {kind!r}", hint="use VM, Image or Kernel")
    return from_builtins(data, typ, source)
