"""The scheduler: binds pending pods to nodes.

Filters as kube-scheduler does for the cases a lab meets (node Ready, not cordoned, taints
tolerated, nodeSelector, explicit nodeName), then spreads: fewest pods of the same owner on
the node first, then fewest pods overall, then a seeded random tie-break.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Optional

from netemu.control.pods import controller_of, is_active, set_condition
from netemu.spec.models import Node, Pod, Taint, Toleration

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster


def node_ready(node: Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def tolerates(tolerations: Optional[list[Toleration]], taint: Taint) -> bool:
    for t in tolerations or []:
        if t.effect and t.effect != taint.effect:
            continue
        if t.operator == "Exists":
            if not t.key or t.key == taint.key:
                return True
        elif t.key == taint.key and (t.value or "") == (taint.value or ""):
            return True
    return False


def why_not(node: Node, pod: Pod) -> Optional[str]:
    """None if the pod fits the node, else the reason kube-scheduler would print."""
    if not node_ready(node):
        return "node(s) were not ready"
    if node.spec.unschedulable:
        return "node(s) were unschedulable"
    for taint in node.spec.taints or []:
        if taint.effect in ("NoSchedule", "NoExecute") and not tolerates(pod.spec.tolerations, taint):
            return f"node(s) had untolerated taint {{{taint.key}: {taint.value or ''}}}"
    labels = node.metadata.labels or {}
    for k, v in (pod.spec.node_selector or {}).items():
        if labels.get(k) != v:
            return "node(s) didn't match Pod's node affinity/selector"
    return None


def reconcile(c: "Cluster") -> None:
    nodes = sorted(c.store.list("Node"), key=lambda n: n.metadata.name)
    pods = [p for p in c.store.list("Pod") if is_active(p)]
    pending = [p for p in pods if p.spec.node_name is None]
    if not pending:
        return
    per_node = Counter(p.spec.node_name for p in pods if p.spec.node_name)
    per_owner = Counter((p.spec.node_name, _owner_uid(p)) for p in pods if p.spec.node_name)
    for pod in sorted(pending, key=lambda p: (p.metadata.creation_timestamp or "", p.metadata.name)):
        fits, reasons = [], Counter()
        for node in nodes:
            reason = why_not(node, pod)
            if reason is None:
                fits.append(node)
            else:
                reasons[reason] += 1
        if not fits:
            msg = f"0/{len(nodes)} nodes are available: " + ", ".join(
                f"{n} {r}" for r, n in sorted(reasons.items())) + "."
            if set_condition(pod, "PodScheduled", False, c.now_str(), "Unschedulable", msg):
                c.store.update(pod)
                c.event(pod, "FailedScheduling", msg, type_="Warning", source="default-scheduler")
            continue
        owner = _owner_uid(pod)
        rand = {n.metadata.name: c.store.rng.random() for n in fits}
        best = min(fits, key=lambda n: (per_owner[(n.metadata.name, owner)], per_node[n.metadata.name],
                                        rand[n.metadata.name]))
        bind(c, pod, best.metadata.name)
        per_node[best.metadata.name] += 1
        per_owner[(best.metadata.name, owner)] += 1


def bind(c: "Cluster", pod: Pod, node_name: str) -> None:
    pod.spec.node_name = node_name
    set_condition(pod, "PodScheduled", True, c.now_str())
    c.store.update(pod)
    c.event(pod, "Scheduled",
            f"Successfully assigned {pod.metadata.namespace}/{pod.metadata.name} to {node_name}",
            source="default-scheduler")


def _owner_uid(pod: Pod) -> str:
    ref = controller_of(pod)
    return ref.uid if ref else f"pod:{pod.metadata.name}"
