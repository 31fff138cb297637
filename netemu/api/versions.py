"""Serving one stored form at every version of a kind. Most kinds' versions agree on the fields the
lab reads, so only apiVersion changes; autoscaling/v1's HorizontalPodAutoscaler has its own shape
(targetCPUUtilizationPercentage), converted from the stored autoscaling/v2 form as the API server
converts it."""
from __future__ import annotations

from netemu.api.registry import Resource


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
    cpu = None
    for m in spec.pop("metrics", None) or []:
        r = m.get("resource") or {}
        if m.get("type") == "Resource" and r.get("name") == "cpu":
            cpu = (r.get("target") or {}).get("averageUtilization")
    spec.pop("behavior", None)
    if cpu is not None:
        spec["targetCPUUtilizationPercentage"] = cpu
    status = dict(obj.get("status") or {})
    current = None
    for m in status.pop("currentMetrics", None) or []:
        r = m.get("resource") or {}
        if m.get("type") == "Resource" and r.get("name") == "cpu":
            current = (r.get("current") or {}).get("averageUtilization")
    status.pop("conditions", None)
    if current is not None:
        status["currentCPUUtilizationPercentage"] = current
    status.setdefault("currentReplicas", 0)
    status.setdefault("desiredReplicas", 0)
    return dict(obj, spec=spec, status=status)
