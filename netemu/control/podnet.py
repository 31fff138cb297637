"""Pod addresses: a bound pod on a Ready node gets the next free IP of its node's pod subnet."""
from __future__ import annotations

from typing import TYPE_CHECKING

from netemu.control.ipam import Exhausted, next_pod_ip
from netemu.control.nodes import internal_ip
from netemu.control.pods import is_terminating
from netemu.control.scheduler import node_ready
from netemu.spec.models import PodIP

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

LAST_IP_ANNOTATION = "netemu.dev/last-pod-ip"


def reconcile(c: "Cluster") -> None:
    nodes = {n.metadata.name: n for n in c.store.list("Node")}
    pods = c.store.list("Pod")
    waiting = [p for p in pods if p.spec.node_name and not p.status.pod_ip and not is_terminating(p)]
    if not waiting:
        return
    used: dict[str, set[str]] = {}
    for p in pods:
        if p.spec.node_name and p.status.pod_ip:
            used.setdefault(p.spec.node_name, set()).add(p.status.pod_ip)
    for pod in sorted(waiting, key=lambda p: (p.metadata.creation_timestamp or "", p.metadata.name)):
        node = nodes.get(pod.spec.node_name)
        if node is None or not node_ready(node) or pod.spec.host_network:
            if node is not None and pod.spec.host_network and node_ready(node):
                pod.status.pod_ip = pod.status.host_ip = internal_ip(node)
                pod.status.pod_ips = [PodIP(ip=pod.status.pod_ip)]
                c.store.update(pod)
            continue
        ann = node.metadata.annotations = node.metadata.annotations or {}
        try:
            ip = next_pod_ip(node.spec.pod_cidr, used.get(node.metadata.name, ()), ann.get(LAST_IP_ANNOTATION))
        except Exhausted as e:
            c.event(pod, "FailedCreatePodSandBox", str(e), type_="Warning", source="kubelet")
            continue
        used.setdefault(node.metadata.name, set()).add(ip)
        ann[LAST_IP_ANNOTATION] = ip
        c.store.update(node)
        pod.status.pod_ip = ip
        pod.status.pod_ips = [PodIP(ip=ip)]
        pod.status.host_ip = internal_ip(node)
        c.store.update(pod)
