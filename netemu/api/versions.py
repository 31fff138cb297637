"""Serving one stored form at every version of a kind. Most kinds' versions agree on the fields the
lab reads, so only apiVersion changes; autoscaling/v1's HorizontalPodAutoscaler has its own shape
(targetCPUUtilizationPercentage), converted from the stored autoscaling/v2 form as the API server
converts it."""
from __future__ import annotations

from typing import Optional

from netemu.spec.registry import Resource


def at_version(res: Resource, version: str, obj: dict) -> dict:
    want = f"{res.group}/{version}" if res.group else version
    if obj.get("apiVersion") == want or res.kind == "Event":
        return obj
    out = dict(obj, apiVersion=want)
    if res.kind == "HorizontalPodAutoscaler" and version == "v1":
        out = _hpa_v1(out)
    return out


def _hpa_v1(obj: dict) -> dict:
    spec = dict(obj.get("spec") or {})
    cpu = _cpu_utilization(spec.pop("metrics", None), "target")
    spec.pop("behavior", None)
    if cpu is not None:
        spec["targetCPUUtilizationPercentage"] = cpu
    status = dict(obj.get("status") or {})
    current = _cpu_utilization(status.pop("currentMetrics", None), "current")
    status.pop("conditions", None)
    if current is not None:
        status["currentCPUUtilizationPercentage"] = current
    status.setdefault("currentReplicas", 0)
    status.setdefault("desiredReplicas", 0)
    return dict(obj, spec=spec, status=status)


def _cpu_utilization(metrics: Optional[list], key: str) -> Optional[int]:
    """The averageUtilization under ``key`` (target or current) of the last cpu Resource metric."""
    out = None
    for m in metrics or []:
        r = m.get("resource") or {}
        if m.get("type") == "Resource" and r.get("name") == "cpu":
            out = (r.get(key) or {}).get("averageUtilization")
    return out
