"""Which fields Kubernetes knows, for the kinds of its core groups: strict field validation as the API
server does it (`fieldValidation=Strict|Warn|Ignore`), from the same field tables that decode protobuf
bodies (netemu.spec.protobuf_schema, derived from Kubernetes' generated.proto and json tags).

The lab's typed models hold only what the lab acts on; every other Kubernetes field is kept and
served as written. So "unknown" here means unknown to Kubernetes (a typo such as `replcas` or the
seed's `target:`), not merely to netemu's models.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Optional

from netemu.spec.protobuf_schema import MESSAGES, VERSIONS

TIME, MICROTIME, QUANTITY, INTSTR, RAWEXT, FIELDSV1 = (
    "meta.v1.Time", "meta.v1.MicroTime", "resource.Quantity", "intstr.IntOrString", "runtime.RawExtension",
    "meta.v1.FieldsV1")
SPECIAL = {TIME, MICROTIME, QUANTITY, INTSTR, RAWEXT, FIELDSV1}  # messages with a JSON form of their own
_ALWAYS = {"apiVersion", "kind"}


@lru_cache(maxsize=None)
def _fields(message: str) -> dict[str, tuple[str, str]]:
    """json name -> (type, flags) of a message, with inlined (embedded) structs' fields merged in."""
    out: dict[str, tuple[str, str]] = {}
    for name, typ, flags in MESSAGES.get(message, {}).values():
        if "x" in flags:
            continue
        if "n" in flags:
            out.update(_fields(typ))
        else:
            out[name] = (typ, flags)
    return out


def message_of(api_version: str, kind: str) -> Optional[str]:
    pkg = VERSIONS.get(api_version)
    name = f"{pkg}.{kind}" if pkg else None
    return name if name in MESSAGES else None


def unknown_fields(obj: dict) -> Optional[list[str]]:
    """Paths (`spec.replcas`, `spec.ports[0].target`) of fields Kubernetes does not know in ``obj``;
    None when this kind's schema is not in the tables (custom resources, MetalLB's kinds, ...)."""
    message = message_of(str(obj.get("apiVersion")), str(obj.get("kind")))
    if message is None:
        return None
    out: list[str] = []
    _walk(obj, message, "", out, top=True)
    return out


def _walk(value: Any, message: str, path: str, out: list[str], top: bool = False) -> None:
    if not isinstance(value, dict):
        return
    known = _fields(message)
    for key, v in value.items():
        here = f"{path}.{key}" if path else str(key)
        if top and key in _ALWAYS:
            continue
        spec = known.get(key)
        if spec is None:
            out.append(here)
            continue
        typ, flags = spec
        if typ in SPECIAL or len(typ) == 1:  # scalars have one-letter types
            continue
        if "m" in flags:
            if isinstance(v, dict):
                for k, item in v.items():
                    _walk(item, typ, f"{here}.{k}", out)
        elif "r" in flags:
            if isinstance(v, list):
                for i, item in enumerate(v):
                    _walk(item, typ, f"{here}[{i}]", out)
        else:
            _walk(v, typ, here, out)
