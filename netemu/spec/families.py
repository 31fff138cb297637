"""IP families of a lab: IPv4 only (the seeds'), dual-stack with IPv4 first, or IPv6 only (IPv6-primary
dual-stack labs are not built).

A dual-stack lab writes its ranges the way kubeadm and the components' flags take them, one per family
separated by a comma (``podCIDR: 172.16.0.0/16,fd00:10:244::/56``; a YAML list works too). The model
splits them at load into the IPv4 field (``network``, ``podCIDR`` ...) and its IPv6 twin (``network6``,
``podCIDR6`` ...), so code that knows only IPv4 reads what it always read. A value that cannot be split
(two of one family, IPv6 first, more than two) is left whole for validation to explain.
"""
from __future__ import annotations

from typing import Any, Optional

IPV4, IPV6 = "IPv4", "IPv6"

# Lab spec keys (as written) that take one value per family -> the IPv6 twin's key
DUAL_KEYS = {"network": "network6", "gateway": "gateway6", "podCIDR": "podCIDR6", "serviceCIDR": "serviceCIDR6"}
# the same for a node or a router of the lab
DUAL_NODE_KEYS = {"ip": "ip6"}


def family_of(text: str) -> str:
    """IPv6 when the address or CIDR has a colon (enough to route a value to its field; parsing
    and its errors come later, in validation)."""
    return IPV6 if ":" in text else IPV4


def split_dual(value: Any) -> Optional[tuple[str, str]]:
    """"v4,v6" (or [v4, v6]) -> (v4, v6); None when the value is not exactly IPv4 then IPv6."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
    elif isinstance(value, (list, tuple)) and all(isinstance(p, str) for p in value):
        parts = [p.strip() for p in value]
    else:
        return None
    if len(parts) != 2 or [family_of(p) for p in parts] != [IPV4, IPV6]:
        return None
    return parts[0], parts[1]


def split_document(data: Any, keys: dict[str, str]) -> Any:
    """The mapping with each splittable dual value moved into its two keys (a pydantic before-validator)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for key, twin in keys.items():
        for name in (key, _snake(key)):
            if name in out and (pair := split_dual(out[name])) is not None:
                if twin in out or _snake(twin) in out:
                    continue  # both forms written: validation reports the clash on the whole value
                out[name], out[twin] = pair
            elif name in out and isinstance(out[name], list) and len(out[name]) == 1:
                out[name] = out[name][0]
    return out


def _snake(key: str) -> str:
    return {"podCIDR": "pod_cidr", "serviceCIDR": "service_cidr", "podCIDR6": "pod_cidr6",
            "serviceCIDR6": "service_cidr6"}.get(key, key)


def dual_stack(spec) -> bool:
    """Whether a LabSpec declares IPv6 beside IPv4 (validation makes sure it declares all of it)."""
    return bool(getattr(spec, "network6", None) or getattr(spec, "pod_cidr6", None)
                or getattr(spec, "service_cidr6", None))


def primary_family(spec) -> str:
    """The lab's primary family: its network's (IPv6 only in an IPv6-only lab; a value left whole for
    validation, such as "v6,v4", counts by its first entry)."""
    return family_of(str(getattr(spec, "network", "") or "").split(",", 1)[0])


def ipv6_only(spec) -> bool:
    return primary_family(spec) == IPV6


def lab_families(spec) -> list[str]:
    """The lab's families in order, primary first (kube-apiserver's --service-cluster-ip-range order)."""
    if ipv6_only(spec):
        return [IPV6]
    return [IPV4, IPV6] if dual_stack(spec) else [IPV4]


# the LabSpec fields that hold one value per family: the primary's, and the dual-stack twin's
FAMILY_FIELDS = {"network": "network6", "gateway": "gateway6", "pod_cidr": "pod_cidr6",
                 "node_pod_prefix": "node_pod_prefix6", "service_cidr": "service_cidr6"}


def family_value(spec, field: str, family: str) -> Any:
    """A LabSpec field's value for one family (``field`` a primary field's name, e.g. "service_cidr"):
    the primary field for the primary family, its ``...6`` twin for a dual-stack lab's IPv6; None when
    the lab lacks the family."""
    if family == primary_family(spec):
        return getattr(spec, field)
    if family == IPV6 and dual_stack(spec):
        return getattr(spec, FAMILY_FIELDS[field], None)
    return None


def member_ip(member, spec, family: str) -> Optional[str]:
    """A node's or router's address of one family on the lab segment (ip for the primary, ip6 for a
    dual-stack lab's IPv6), None when the lab lacks the family."""
    if family == primary_family(spec):
        return member.ip
    return getattr(member, "ip6", None) if family == IPV6 and dual_stack(spec) else None
