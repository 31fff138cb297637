"""PodDisruptionBudgets: the disruption controller's status, and the eviction subresource's check.

The controller computes, for each budget, the pods it covers (its selector in its namespace; an empty
selector covers them all), how many are expected (minAvailable as a number: the pods there are;
maxUnavailable or a percentage: the scale of their controllers), how many must stay healthy, how
many are (Ready and not being deleted) and so how many disruptions are allowed now.

`evict` is what POST pods/<name>/eviction does: a pod covered by a budget that allows no disruption
is refused with 429 TooManyRequests and kube-apiserver's words (`kubectl drain` then retries every
5 s: "Cannot evict pod as it would violate the pod's disruption budget."); otherwise the budget's
allowance is decremented and the pod deleted gracefully.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from netemu.control import labels as label_sel
from netemu.control.pods import controller_of, is_ready, is_terminating
from netemu.control.store import parse_rfc3339, rfc3339
from netemu.spec.models import Condition, Pod, PodDisruptionBudget

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

DELETION_TIMEOUT = 120.0  # the controller forgets an eviction it never saw finish after 2 minutes
TOO_MANY = "Cannot evict pod as it would violate the pod's disruption budget."


class EvictionRefused(Exception):
    """The API server's answer to an eviction it refuses: code, reason, message, details."""

    def __init__(self, code: int, reason: str, message: str, details: Optional[dict] = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message,
               "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


def covered(pdb: PodDisruptionBudget, pod: Pod) -> bool:
    if (pod.metadata.namespace or "default") != (pdb.metadata.namespace or "default"):
        return False
    sel = pdb.spec.selector
    if sel is None:
        return False  # a nil selector selects nothing (an empty one everything), as policy/v1 says
    return label_sel.matches(sel, pod.metadata.labels)


def _scaled(v, total: int) -> int:
    if isinstance(v, str) and v.endswith("%"):
        return math.ceil(int(v[:-1]) * total / 100)
    return int(v)


def _expected_scale(c: "Cluster", pods: list[Pod]) -> int:
    """The sum of the scales of the controllers of these pods (a ReplicaSet of a Deployment counts as
    its Deployment), each counted once; pods without a controller count for themselves."""
    seen: set = set()
    total = 0
    for p in pods:
        ref = controller_of(p)
        if ref is None:
            total += 1
            continue
        key = (ref.kind, ref.uid)
        owner = c.store.find(ref.kind, p.metadata.namespace, ref.name) if ref.kind in (
            "ReplicaSet", "Deployment", "StatefulSet", "ReplicationController") else None
        if owner is not None and ref.kind == "ReplicaSet":
            dep_ref = controller_of(owner)
            if dep_ref is not None and dep_ref.kind == "Deployment":
                dep = c.store.find("Deployment", p.metadata.namespace, dep_ref.name)
                if dep is not None:
                    owner, key = dep, ("Deployment", dep.metadata.uid)
        if key in seen:
            continue
        seen.add(key)
        if owner is None:
            total += 1
            continue
        total += _replicas(owner)
    return total


def _replicas(owner) -> int:
    spec = getattr(owner, "spec", None)
    if spec is not None and not isinstance(spec, dict) and hasattr(spec, "replicas"):
        return spec.replicas if spec.replicas is not None else 1
    return int(((owner.model_extra or {}).get("spec") or {}).get("replicas", 1))


def budget(c: "Cluster", pdb: PodDisruptionBudget, pods: list[Pod]) -> tuple[int, int, int]:
    """(expected pods, desired healthy, current healthy) for the pods a budget covers."""
    spec = pdb.spec
    healthy = sum(1 for p in pods if not is_terminating(p) and is_ready(p))
    if spec.max_unavailable is not None:
        expected = _expected_scale(c, pods)
        desired = max(0, expected - _scaled(spec.max_unavailable, expected))
    elif spec.min_available is not None:
        if isinstance(spec.min_available, int):
            expected, desired = len(pods), spec.min_available
        else:
            expected = _expected_scale(c, pods)
            desired = _scaled(spec.min_available, expected)
    else:
        expected, desired = len(pods), 0
    return expected, desired, healthy


def reconcile(c: "Cluster") -> None:
    pdbs = c.store.list("PodDisruptionBudget")
    if not pdbs:
        return
    now = c.clock()
    for pdb in pdbs:
        pods = [p for p in c.store.list("Pod", pdb.metadata.namespace) if covered(pdb, p)
                and p.status.phase not in ("Succeeded", "Failed")]
        expected, desired, healthy = budget(c, pdb, pods)
        st = pdb.status
        disrupted = dict(st.disrupted_pods or {})
        names = {p.metadata.name: p for p in pods}
        for name, when in list(disrupted.items()):
            p = names.get(name)
            t = parse_rfc3339(when) or now
            if p is None or is_terminating(p) or now - t >= DELETION_TIMEOUT:
                del disrupted[name]  # gone (or being deleted: no longer counted healthy)
            else:
                c.wake_at(t + DELETION_TIMEOUT)
        allowed = max(0, healthy - desired - len(disrupted))
        cond = Condition(type="DisruptionAllowed", status="True" if allowed > 0 else "False",
                         reason="SufficientPods" if allowed > 0 else "InsufficientPods", message="")
        old = next((x for x in st.conditions or [] if x.type == "DisruptionAllowed"), None)
        cond.last_transition_time = old.last_transition_time if old is not None and old.status == cond.status \
            else c.now_str()
        cond.__pydantic_extra__["observedGeneration"] = pdb.metadata.generation
        new = dict(expected_pods=expected, desired_healthy=desired, current_healthy=healthy,
                   disruptions_allowed=allowed, observed_generation=pdb.metadata.generation,
                   disrupted_pods=disrupted or None)
        changed = any(getattr(st, k) != v for k, v in new.items()) or old is None or old.dump() != cond.dump()
        if changed:
            for k, v in new.items():
                setattr(st, k, v)
            st.conditions = [cond]
            c.store.update(pdb)


def evict(c: "Cluster", pod: Pod, grace: Optional[int] = None) -> None:
    """The eviction subresource: delete the pod gracefully unless a budget forbids it now (raises
    EvictionRefused, as kube-apiserver answers)."""
    check_eviction(c, pod)
    c.delete_pod(pod, grace=grace)


def check_eviction(c: "Cluster", pod: Pod) -> None:
    if pod.status.phase in ("Succeeded", "Failed", "Pending") or is_terminating(pod):
        return  # canIgnorePDB
    pdbs = [p for p in c.store.list("PodDisruptionBudget", pod.metadata.namespace) if covered(p, pod)]
    if not pdbs:
        return
    if len(pdbs) > 1:
        raise EvictionRefused(500, "InternalError", "This pod has more than one PodDisruptionBudget, which the "
                              "eviction subresource does not support.")
    pdb = pdbs[0]
    reconcile(c)  # the budget as of now (the eviction reads the controller's status)
    st = pdb.status
    if not is_ready(pod):
        policy = pdb.spec.unhealthy_pod_eviction_policy or "IfHealthyBudget"
        if policy == "AlwaysAllow" or (st.current_healthy >= st.desired_healthy and st.desired_healthy > 0):
            return
    if (st.observed_generation or 0) < (pdb.metadata.generation or 0):
        raise _too_many(pdb, f"The disruption budget {pdb.metadata.name} is still being processed by the server.")
    if st.disruptions_allowed <= 0:
        raise _too_many(pdb, f"The disruption budget {pdb.metadata.name} needs {st.desired_healthy} healthy pods and "
                             f"has {st.current_healthy} currently")
    st.disruptions_allowed -= 1
    st.disrupted_pods = {**(st.disrupted_pods or {}), pod.metadata.name: rfc3339(c.clock())}
    if st.disruptions_allowed == 0:
        for cond in st.conditions or []:
            if cond.type == "DisruptionAllowed":
                cond.status, cond.reason, cond.last_transition_time = "False", "InsufficientPods", c.now_str()
    c.store.update(pdb)


def _too_many(pdb: PodDisruptionBudget, cause: str) -> EvictionRefused:
    return EvictionRefused(429, "TooManyRequests", TOO_MANY, {
        "causes": [{"reason": "DisruptionBudget", "message": cause}], "retryAfterSeconds": 0})
