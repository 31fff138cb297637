"""Nodes: made from the Lab document, kept by the node lifecycle controller.

A node's Ready condition comes from the data plane (is its kubelet alive, is its link up).
When a node stops being Ready its pods become NotReady at once (their endpoints leave the
services) and, after the lab's pod eviction timeout, they are deleted so that their owners
recreate them elsewhere, as the node lifecycle controller and taint manager do.
"""
from __future__ import annotations

import platform
from typing import TYPE_CHECKING

from netemu import __version__
from netemu.control.ipam import node_pod_cidrs
from netemu.control.pods import is_terminating, set_condition
from netemu.control.store import parse_rfc3339
from netemu.spec.models import Condition, Lab, Node, NodeAddress, NodeSpec, NodeStatus, ObjectMeta, Taint

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
KUBELET_VERSION = "v1.32.0-netemu"


def nodes_from_lab(lab: Lab, now: str) -> list[Node]:
    spec = lab.spec
    cidrs = node_pod_cidrs(spec.pod_cidr, spec.node_pod_prefix, len(spec.nodes or []))
    out = []
    for ln, cidr in zip(spec.nodes or [], cidrs):
        labels = {
            "kubernetes.io/hostname": ln.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": _arch(),
            **(ln.labels or {}),
        }
        taints = None
        if ln.role == "control-plane":
            labels[CONTROL_PLANE_TAINT] = ""
            # as kubeadm labels it: load balancers (MetalLB) do not announce from here
            labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
            taints = [Taint(key=CONTROL_PLANE_TAINT, effect="NoSchedule")]
        out.append(Node(
            metadata=ObjectMeta(name=ln.name, labels=labels),
            spec=NodeSpec(pod_cidr=cidr, pod_cidrs=[cidr], taints=taints),
            status=NodeStatus(
                conditions=[Condition(type="Ready", status="False", reason="KubeletNotReady",
                                      message="node is being built", last_transition_time=now)],
                addresses=[NodeAddress(type="InternalIP", address=ln.ip), NodeAddress(type="Hostname", address=ln.name)],
                node_info={"kubeletVersion": KUBELET_VERSION, "osImage": "netemu (network namespace)",
                           "kernelVersion": platform.release(), "containerRuntimeVersion": f"netemu://{__version__}",
                           "operatingSystem": "linux", "architecture": _arch()},
                capacity={"cpu": "2", "memory": "2Gi", "pods": "110"},
                allocatable={"cpu": "2", "memory": "2Gi", "pods": "110"},
            ),
        ))
    return out


def _arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def internal_ip(node: Node) -> str:
    for a in node.status.addresses or []:
        if a.type == "InternalIP":
            return a.address
    return ""


def is_control_plane(node: Node) -> bool:
    return CONTROL_PLANE_TAINT in (node.metadata.labels or {})


def set_ready(c: "Cluster", node: Node, ready: bool, reason: str, message: str) -> None:
    """Called when the data plane observes the node (kubelet up / link down)."""
    cond = next(x for x in node.status.conditions or [] if x.type == "Ready")
    value = "True" if ready else "Unknown" if reason == "NodeStatusUnknown" else "False"
    if cond.status == value and cond.reason == reason:
        return
    if cond.status != value:
        cond.last_transition_time = c.now_str()
        c.node_transitions[node.metadata.name] = c.clock()
    cond.status, cond.reason, cond.message = value, reason, message
    taints = [t for t in node.spec.taints or [] if t.key != UNREACHABLE_TAINT]
    if not ready:
        taints.append(Taint(key=UNREACHABLE_TAINT, effect="NoExecute"))
    node.spec.taints = taints or None
    c.store.update(node)
    c.event(node, "NodeReady" if ready else "NodeNotReady",
            f"Node {node.metadata.name} status is now: {'NodeReady' if ready else 'NodeNotReady'}",
            source="node-controller")


def set_unschedulable(c: "Cluster", node: Node, value: bool) -> bool:
    if bool(node.spec.unschedulable) == value:
        return False
    node.spec.unschedulable = value or None
    taints = [t for t in node.spec.taints or [] if t.key != UNSCHEDULABLE_TAINT]
    if value:
        taints.append(Taint(key=UNSCHEDULABLE_TAINT, effect="NoSchedule"))
    node.spec.taints = taints or None
    c.store.update(node)
    return True


def _sync_unschedulable_taint(c: "Cluster", node: Node) -> None:
    """The node lifecycle controller's part: a cordoned node (spec.unschedulable, however it was set)
    carries the node.kubernetes.io/unschedulable:NoSchedule taint, and only then."""
    has = any(t.key == UNSCHEDULABLE_TAINT for t in node.spec.taints or [])
    if has != bool(node.spec.unschedulable):
        taints = [t for t in node.spec.taints or [] if t.key != UNSCHEDULABLE_TAINT]
        if node.spec.unschedulable:
            taints.append(Taint(key=UNSCHEDULABLE_TAINT, effect="NoSchedule"))
        node.spec.taints = taints or None
        c.store.update(node)


def reconcile(c: "Cluster") -> None:
    now = c.clock()
    timeout = c.lab.spec.pod_eviction_timeout_seconds
    for node in c.store.list("Node"):
        _sync_unschedulable_taint(c, node)
        cond = next((x for x in node.status.conditions or [] if x.type == "Ready"), None)
        if cond is None or cond.status == "True":
            continue
        if cond.reason == "KubeletNotReady":  # still being built: nothing to evict
            continue
        since = c.node_transitions.get(node.metadata.name) or parse_rfc3339(cond.last_transition_time) or now
        for pod in c.store.list("Pod"):
            if pod.spec.node_name != node.metadata.name:
                continue
            if set_condition(pod, "Ready", False, c.now_str(), "NodeNotReady", "node is not ready"):
                c.store.update(pod)
            if now - since >= timeout and not is_terminating(pod):
                c.event(pod, "TaintManagerEviction", f"Marking for deletion Pod {pod.metadata.namespace}/{pod.metadata.name}",
                        source="taint-eviction-controller")
                c.delete_pod(pod)
        c.wake_at(since + timeout)
