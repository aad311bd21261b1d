"""``ignite image inspect`` / ``ignite kernel inspect``: the object, and what Docker and
Podman users look for in an image: its digest, platform and run config.

``-o json`` / ``-o yaml`` print a list (one entry per name, as ``docker image
inspect``): each the object as ``ignite inspect`` prints it, plus ``digest``,
``repoDigests``, ``platform`` and (images) ``config`` with the image config's
Entrypoint, Cmd, Env, ExposedPorts, Labels, WorkingDir and User. The default is
the same as aligned text. What a record or an image config holds is untrusted:
values of the wrong type are left out, a malformed platform reads as unknown, and
text is printed with control and format characters escaped (JSON and YAML: every
character that is not printable ASCII, as ``\\uXXXX`` / YAML escapes).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ignitevm.api.types import Image, Kernel
from ignitevm.cli.common import context, dump, emit

_LISTS = ("Entrypoint", "Cmd")


def cmd_image_inspect(args: argparse.Namespace) -> int:
    from ignitevm.operations.images import image_config

    ctx = context(args)
    images = [ctx.store.resolve(Image, q) for q in args.images]
    _show([image_view(i, image_config(ctx, i)) for i in images], args.output)
    return 0


def cmd_kernel_inspect(args: argparse.Namespace) -> int:
    ctx = context(args)
    kernels = [ctx.store.resolve(Kernel, q) for q in args.kernels]
    _show([kernel_view(k) for k in kernels], args.output)
    return 0


def _show(views: list[dict[str, Any]], fmt: str) -> None:
    if fmt in ("json", "yaml"):
        emit(dump(views, fmt))
    else:
        emit("\n\n".join(text(v) for v in views))


def digest_of(source_id: str | None) -> str | None:
    """The manifest digest an ``ociSource.id`` names (``oci://REPO@sha256:…`` or a bare
    ``sha256:…``), or None (a Debian kernel, a kernel file, a malformed record)."""
    from ignitevm.images.blobs import DIGEST

    digest = (source_id or "").rpartition("@")[2]
    return digest if DIGEST.fullmatch(digest) else None


def _common(obj: Image | Kernel) -> dict[str, Any]:
    from ignitevm.api import codec
    from ignitevm.api.platform import checked_platform

    view: dict[str, Any] = codec.to_builtins(obj)
    source = obj.status.oci_source.id or ""
    digest = digest_of(source)
    view["digest"] = digest
    repo = source.removeprefix("oci://").rpartition("@")[0]
    view["repoDigests"] = [f"{repo}@{digest}"] if source.startswith("oci://") and digest \
        and repo else []
    view["platform"] = checked_platform(obj.status.platform) or None
    if obj.status.platform and not view["platform"]:  # (a damaged record: not shown as is)
        view["status"]["platform"] = ""
    return view


def image_view(image: Image, config: dict[str, object]) -> dict[str, Any]:
    """What ``image inspect`` shows of ``image``, whose image config is ``config``."""
    view = _common(image)
    view["config"] = run_config(config)
    return view


def kernel_view(kernel: Kernel) -> dict[str, Any]:
    return _common(kernel)


def run_config(config: dict[str, object]) -> dict[str, Any]:
    """The run settings of an image config, each kept only if it has the right type."""
    out: dict[str, Any] = {}
    for key in _LISTS:
        value = config.get(key)
        out[key] = value if _strings(value) else None
    env = config.get("Env")
    out["Env"] = env if _strings(env) else []
    ports = config.get("ExposedPorts")
    out["ExposedPorts"] = ({k: {} for k in sorted(ports) if isinstance(k, str)}
                           if isinstance(ports, dict) else {})
    labels = config.get("Labels")
    out["Labels"] = ({k: v for k, v in sorted(labels.items())
                      if isinstance(k, str) and isinstance(v, str)}
                     if isinstance(labels, dict) else {})
    for key in ("WorkingDir", "User"):
        value = config.get(key)
        out[key] = value if isinstance(value, str) else ""
    return out


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def text(view: dict[str, Any]) -> str:
    """A view as aligned ``Field: value`` lines (several values: one a line)."""
    from ignitevm.api.validation import printable
    from ignitevm.util.human import age

    meta, status = view.get("metadata") or {}, view.get("status") or {}
    source = status.get("ociSource") or {}
    rows: list[tuple[str, list[str]]] = [
        ("Name", [meta.get("name") or ""]),
        ("ID", [meta.get("uid") or ""]),
        ("Created", [f"{meta.get('created') or '?'} ({age(meta.get('created'))} ago)"]),
        ("Source", [source.get("id") or "<none>"]),
        ("Digest", [view.get("digest") or "<none>"]),
        ("Platform", [view.get("platform") or "unknown"]),
        ("Size", [str(source.get("size") or "")]),
    ]
    if view.get("kind") == "Kernel":
        rows.append(("Version", [status.get("version") or "unknown"]))
    config = view.get("config")
    if isinstance(config, dict):
        for key in _LISTS:
            value = config.get(key)
            rows.append((key, [json.dumps(value)] if value is not None else ["<none>"]))
        rows.append(("Env", list(config.get("Env") or []) or ["<none>"]))
        rows.append(("ExposedPorts", list(config.get("ExposedPorts") or {}) or ["<none>"]))
        labels = config.get("Labels") or {}
        rows.append(("Labels", [f"{k}={v}" for k, v in labels.items()] or ["<none>"]))
        rows.append(("WorkingDir", [config.get("WorkingDir") or "<none>"]))
        rows.append(("User", [config.get("User") or "<none>"]))
    width = max(len(key) for key, _ in rows) + 2
    lines = []
    for key, values in rows:
        for n, value in enumerate(values):
            label = f"{key}:" if n == 0 else ""
            lines.append(f"{label:<{width}}{printable(str(value))}")
    return "\n".join(lines)
