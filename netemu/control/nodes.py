"""Nodes: made from the Lab document, kept by the node lifecycle controller.

A node reports the capacity and allocatable of the seeds' Vagrant VMs unless the Lab document says
otherwise, registers tainted not-ready, and holds a Lease its kubelet renews. Its Ready condition
comes from the data plane (is its kubelet alive, is its link up). When a node stops being Ready it is
tainted not-ready / unreachable (NoSchedule and NoExecute, as TaintNodesByCondition and taint-based
eviction do), its pods become NotReady at once (their endpoints leave the services), and the taint
eviction controller deletes the pods whose tolerations run out: every pod tolerates a failed node for
the lab's podEvictionTimeoutSeconds (the API server's default tolerations), DaemonSet pods for ever.
Any NoExecute taint (`kubectl taint ... :NoExecute`) evicts the pods that do not tolerate it.
"""
from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Optional

from netemu import __version__
from netemu.control.ipam import node_pod_cidrs
from netemu.control.pods import is_terminal, is_terminating, set_condition
from netemu.control.store import parse_rfc3339
from netemu.spec.defaults import default_max_pods, pod_bits
from netemu.spec.families import dual_stack
from netemu.spec.models import Condition, Lab, Node, NodeAddress, NodeSpec, NodeStatus, ObjectMeta, Taint
from netemu.wellknown import (
    CONTROL_PLANE_LABEL, CONTROL_PLANE_TAINT, EXCLUDE_FROM_LB_LABEL, HOSTNAME_LABEL, NOT_READY_TAINT, OS_LABEL,
    UNREACHABLE_TAINT, UNSCHEDULABLE_TAINT,
)

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

KUBELET_VERSION = "v1.32.0-netemu"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION = 40  # kubelet's nodeLeaseDurationSeconds; it renews every quarter of it
LEASE_RENEW = LEASE_DURATION / 4

# the seeds' Vagrant VMs (sysnet4admin/_Book_k8sInfra ch3 Vagrantfile): m-k8s 2 CPUs and 3072 MB, the
# workers 1 CPU and 2560 MB, each on the box's 40 GB disk (pods: kubelet's maxPods, default_max_pods)
SEED_CAPACITY = {
    "control-plane": {"cpu": "2", "memory": "3145728Ki", "ephemeral-storage": "41943040Ki",
                      "hugepages-1Gi": "0", "hugepages-2Mi": "0"},
    "worker": {"cpu": "1", "memory": "2621440Ki", "ephemeral-storage": "41943040Ki",
               "hugepages-1Gi": "0", "hugepages-2Mi": "0"},
}
# kubelet's default hard eviction thresholds (kubeadm sets no reservations): allocatable is capacity
# less memory.available<100Mi and nodefs.available<10%
EVICTION_MEMORY = 100 * 1024 * 1024
EVICTION_NODEFS = 0.10

PRESSURE_CONDITIONS = (  # type, reason, message while healthy
    ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
)


def _quantity_text(q) -> str:
    return str(q) if not isinstance(q, float) or not q.is_integer() else str(int(q))


def node_capacity(lab: Lab, ln) -> tuple[dict[str, str], dict[str, str]]:
    """(capacity, allocatable) of a node of the Lab document, as its kubelet reports them."""
    from netemu.spec.autoscaling import parse_quantity

    capacity = {**SEED_CAPACITY[ln.role], "pods": str(default_max_pods(lab.spec.node_pod_prefix, pod_bits(lab.spec)))}
    for k, v in (ln.capacity or {}).items():
        capacity[k] = _quantity_text(v)
    allocatable = dict(capacity)
    try:
        mem = parse_quantity(capacity["memory"])
        allocatable["memory"] = f"{max(0, int(mem) - EVICTION_MEMORY) // 1024}Ki"
        eph = parse_quantity(capacity["ephemeral-storage"])
        allocatable["ephemeral-storage"] = str(int(eph - eph * EVICTION_NODEFS))
    except (KeyError, ValueError):
        pass
    for k, v in (ln.allocatable or {}).items():
        allocatable[k] = _quantity_text(v)
    return capacity, allocatable


def nodes_from_lab(lab: Lab, now: str) -> list[Node]:
    spec = lab.spec
    count = len(spec.nodes or [])
    cidrs = node_pod_cidrs(spec.pod_cidr, spec.node_pod_prefix, count)
    # dual-stack: each node gets a subnet of each family (kube-controller-manager's --cluster-cidr v4,v6)
    cidrs6 = node_pod_cidrs(spec.pod_cidr6, spec.node_pod_prefix6, count) if dual_stack(spec) else [None] * count
    out = []
    for ln, cidr, cidr6 in zip(spec.nodes or [], cidrs, cidrs6):
        labels = {
            HOSTNAME_LABEL: ln.name,
            OS_LABEL: "linux",
            "kubernetes.io/arch": _arch(),
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": _arch(),
            **(ln.labels or {}),
        }
        # kubelet registers its node not-ready (the node lifecycle controller lifts it once Ready)
        taints = [Taint(key=NOT_READY_TAINT, effect="NoSchedule")]
        if ln.role == "control-plane":
            labels[CONTROL_PLANE_LABEL] = ""
            # as kubeadm labels it: load balancers (MetalLB) do not announce from here
            labels[EXCLUDE_FROM_LB_LABEL] = ""
            taints.insert(0, Taint(key=CONTROL_PLANE_TAINT, effect="NoSchedule"))
        for t in ln.taints or []:
            taints.insert(len(taints) - 1, t.model_copy())
        capacity, allocatable = node_capacity(lab, ln)
        conditions = [Condition(type=t, status="False", reason=r, message=m, last_transition_time=now,
                                last_heartbeat_time=now) for t, r, m in PRESSURE_CONDITIONS]
        conditions.append(Condition(type="Ready", status="False", reason="KubeletNotReady",
                                    message="node is being built", last_transition_time=now,
                                    last_heartbeat_time=now))
        out.append(Node(
            metadata=ObjectMeta(name=ln.name, labels=labels,
                                annotations={"node.alpha.kubernetes.io/ttl": "0",
                                             "volumes.kubernetes.io/controller-managed-attach-detach": "true"}),
            spec=NodeSpec(pod_cidr=cidr, pod_cidrs=[cidr, cidr6] if cidr6 else [cidr], taints=taints),
            status=NodeStatus(
                conditions=conditions,
                # kubelet's --node-ip v4,v6: an InternalIP of each family, the primary (IPv4) first
                addresses=[NodeAddress(type="InternalIP", address=ln.ip),
                           *([NodeAddress(type="InternalIP", address=ln.ip6)] if cidr6 and ln.ip6 else []),
                           NodeAddress(type="Hostname", address=ln.name)],
                node_info={"machineID": _machine_id(lab, ln.name), "systemUUID": _machine_id(lab, ln.name, "uuid"),
                           "bootID": _machine_id(lab, ln.name, "boot"),
                           "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
                           "osImage": "netemu (network namespace)",
                           "kernelVersion": platform.release(), "containerRuntimeVersion": f"netemu://{__version__}",
                           "operatingSystem": "linux", "architecture": _arch()},
                capacity=capacity,
                allocatable=allocatable,
            ),
        ))
    return out


def _machine_id(lab: Lab, node: str, what: str = "machine") -> str:
    import hashlib

    h = hashlib.sha256(f"{lab.metadata.name}/{lab.spec.seed}/{node}/{what}".encode()).hexdigest()[:32]
    return h if what == "machine" else f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def internal_ip(node: Node) -> str:
    """The node's first InternalIP: its address of the lab's primary family (IPv4, or IPv6 in an
    IPv6-only lab)."""
    for a in node.status.addresses or []:
        if a.type == "InternalIP":
            return a.address
    return ""


def internal_ip6(node: Node) -> Optional[str]:
    """The node's IPv6 InternalIP beside its IPv4 one in a dual-stack lab, else None (an IPv6-only lab's
    node has its IPv6 address as its first, primary InternalIP: internal_ip)."""
    ips = [a.address for a in node.status.addresses or [] if a.type == "InternalIP"]
    return next((ip for ip in ips[1:] if ":" in ip), None)


def node_pod_cidr6(node: Node) -> Optional[str]:
    """The node's IPv6 pod subnet beside its IPv4 one (spec.podCIDRs[1]) in a dual-stack lab, else None
    (an IPv6-only lab's is spec.podCIDR)."""
    return next((c for c in (node.spec.pod_cidrs or [])[1:] if ":" in c), None)


def is_control_plane(node: Node) -> bool:
    return CONTROL_PLANE_LABEL in (node.metadata.labels or {})


def set_ready(c: "Cluster", node: Node, ready: bool, reason: str, message: str) -> None:
    """Called when the data plane observes the node (kubelet up / link down). As the node lifecycle
    controller does: a node whose kubelet stops posting has its conditions Unknown and is tainted
    node.kubernetes.io/unreachable (NoSchedule, and NoExecute for taint-based eviction); a NotReady node
    node.kubernetes.io/not-ready likewise; a Ready node has neither."""
    cond = next(x for x in node.status.conditions or [] if x.type == "Ready")
    value = "True" if ready else "Unknown" if reason == "NodeStatusUnknown" else "False"
    if cond.status == value and cond.reason == reason:
        return
    now = c.now_str()
    if cond.status != value:
        cond.last_transition_time = now
        c.node_transitions[node.metadata.name] = c.clock()
    cond.status, cond.reason, cond.message = value, reason, message
    cond.last_heartbeat_time = now
    for pc in node.status.conditions or []:  # pressure conditions: Unknown while nobody reports them
        for t, r, m in PRESSURE_CONDITIONS:
            if pc.type != t:
                continue
            want = ("Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.") if value == "Unknown" \
                else ("False", r, m)
            if (pc.status, pc.reason, pc.message) != want:
                if pc.status != want[0]:
                    pc.last_transition_time = now
                pc.status, pc.reason, pc.message = want
                pc.last_heartbeat_time = now
    _set_condition_taints(node, value, now)
    c.store.update(node)
    c.event(node, "NodeReady" if ready else "NodeNotReady",
            f"Node {node.metadata.name} status is now: {'NodeReady' if ready else 'NodeNotReady'}",
            source="node-controller")


def _set_condition_taints(node: Node, ready: str, now: str) -> None:
    keep = [t for t in node.spec.taints or [] if t.key not in (UNREACHABLE_TAINT, NOT_READY_TAINT)]
    old = {(t.key, t.effect): t for t in node.spec.taints or []}
    if ready != "True":
        key = UNREACHABLE_TAINT if ready == "Unknown" else NOT_READY_TAINT
        for effect in ("NoSchedule", "NoExecute"):
            t = old.get((key, effect)) or Taint(key=key, effect=effect,
                                                time_added=now if effect == "NoExecute" else None)
            keep.append(t)
    node.spec.taints = keep or None


def set_unschedulable(c: "Cluster", node: Node, value: bool) -> bool:
    if bool(node.spec.unschedulable) == value:
        return False
    node.spec.unschedulable = value or None
    _set_unschedulable_taint(c, node)
    c.store.update(node)
    return True


def _set_unschedulable_taint(c: "Cluster", node: Node) -> None:
    taints = [t for t in node.spec.taints or [] if t.key != UNSCHEDULABLE_TAINT]
    if node.spec.unschedulable:
        taints.append(Taint(key=UNSCHEDULABLE_TAINT, effect="NoSchedule", time_added=c.now_str()))
    node.spec.taints = taints or None


def _sync_unschedulable_taint(c: "Cluster", node: Node) -> None:
    """The node lifecycle controller's part: a cordoned node (spec.unschedulable, however it was set)
    carries the node.kubernetes.io/unschedulable:NoSchedule taint, and only then."""
    has = any(t.key == UNSCHEDULABLE_TAINT for t in node.spec.taints or [])
    if has != bool(node.spec.unschedulable):
        _set_unschedulable_taint(c, node)
        c.store.update(node)


def _stamp_no_execute(c: "Cluster", node: Node) -> None:
    """NoExecute taints carry the time they were added (the API server stamps taints given without it):
    tolerationSeconds count from there."""
    stamped = False
    for t in node.spec.taints or []:
        if t.effect == "NoExecute" and not t.time_added:
            t.time_added = c.now_str()
            stamped = True
    if stamped:
        c.store.update(node)


def reconcile(c: "Cluster") -> None:
    now = c.clock()
    by_node: Optional[dict[str, list]] = None  # the pods of each node, listed once a node needs them
    for node in c.store.list("Node"):
        _sync_unschedulable_taint(c, node)
        _stamp_no_execute(c, node)
        cond = next((x for x in node.status.conditions or [] if x.type == "Ready"), None)
        built = cond is not None and cond.reason != "KubeletNotReady"  # a node still being built has no pods
        not_ready = cond is not None and cond.status != "True" and built
        no_execute = built and any(t.effect == "NoExecute" for t in node.spec.taints or [])
        if not (not_ready or no_execute):
            continue
        if by_node is None:
            by_node = _pods_by_node(c)
        pods = by_node.get(node.metadata.name, [])
        if not_ready:
            for pod in pods:
                if set_condition(pod, "Ready", False, c.now_str(), "NodeNotReady", "node is not ready"):
                    c.store.update(pod)
        if no_execute:
            _evict_untolerating(c, node, pods, now)
    _leases(c, now)


def _pods_by_node(c: "Cluster") -> dict[str, list]:
    out: dict[str, list] = {}
    for p in c.store.list("Pod"):
        if p.spec.node_name:
            out.setdefault(p.spec.node_name, []).append(p)
    return out


def _evict_untolerating(c: "Cluster", node: Node, pods: list, now: float) -> None:
    """The taint eviction controller: a pod that does not tolerate a NoExecute taint of its node is
    deleted at once; one that tolerates them for tolerationSeconds, that long after the taint came."""
    from netemu.control.scheduler import toleration_matches

    taints = [t for t in node.spec.taints or [] if t.effect == "NoExecute"]
    for pod in pods:
        if is_terminating(pod) or is_terminal(pod):
            continue
        due: Optional[float] = None
        evict = False
        for taint in taints:
            used = next((t for t in pod.spec.tolerations or [] if toleration_matches(t, taint)), None)
            if used is None:
                evict = True
                break
            if used.toleration_seconds is None:
                continue
            since = _taint_since(c, node, taint, now)
            at = since + max(0, used.toleration_seconds)
            due = at if due is None else min(due, at)
        if not evict and due is not None:
            if now >= due:
                evict = True
            else:
                c.wake_at(due)
        if evict:
            c.event(pod, "TaintManagerEviction", f"Marking for deletion Pod {pod.metadata.namespace}/{pod.metadata.name}",
                    source="taint-eviction-controller")
            c.delete_pod(pod)


def _taint_since(c: "Cluster", node: Node, taint: Taint, now: float) -> float:
    if taint.key in (UNREACHABLE_TAINT, NOT_READY_TAINT) and node.metadata.name in c.node_transitions:
        return c.node_transitions[node.metadata.name]
    return parse_rfc3339(taint.time_added) or now


def _leases(c: "Cluster", now: float) -> None:
    """Each Ready node's kubelet holds its Lease in kube-node-lease and renews it every 10 s (what
    `kubectl describe node` shows under Lease); a node that is down stops renewing."""
    from netemu.spec.models import StoredObject

    if c.store.find("Namespace", "", LEASE_NAMESPACE) is None:
        return
    for node in c.store.list("Node"):
        name = node.metadata.name
        cond = next((x for x in node.status.conditions or [] if x.type == "Ready"), None)
        lease = c.store.find("Lease", LEASE_NAMESPACE, name)
        up = cond is not None and cond.status == "True"
        renew = _micro(now)
        if lease is None:
            if not up:
                continue
            lease = StoredObject.model_validate({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node.metadata.uid or ""}]},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION, "renewTime": renew}})
            c.store.create(lease)
        elif up:
            spec = (lease.model_extra or {}).get("spec") or {}
            last = _parse_micro(spec.get("renewTime"))
            if last is None or now - last >= LEASE_RENEW:
                lease.__pydantic_extra__["spec"] = {**spec, "renewTime": renew}
                c.store.update(lease)
            else:
                c.wake_at(last + LEASE_RENEW)
                continue
        else:
            continue
        c.wake_at(now + LEASE_RENEW)


def _micro(t: float) -> str:
    import time as _time

    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(t)) + f".{int((t % 1) * 1e6):06d}Z"


def _parse_micro(s: Optional[str]) -> Optional[float]:
    if not s:
        return None
    head, _, frac = s.rstrip("Z").partition(".")
    base = parse_rfc3339(head + "Z")
    return None if base is None else base + (float("0." + frac) if frac else 0.0)
