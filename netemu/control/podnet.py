"""Pod addresses: a bound pod on a Ready node gets the next free IP of its node's pod subnet."""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Optional

from netemu.control.ipam import Exhausted, next_free_pod_ip
from netemu.control.nodes import internal_ip, internal_ip6, node_pod_cidr6
from netemu.control.kubeadm import is_control_process_pod
from netemu.control.pods import is_terminal, is_terminating, set_creating
from netemu.control.scheduler import node_ready
from netemu.spec.models import Pod, PodIP

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

LAST_IP_ANNOTATION = "netemu.dev/last-pod-ip"
LAST_IP6_ANNOTATION = "netemu.dev/last-pod-ip6"  # the same for the node's IPv6 pod subnet (dual-stack)


def _awaiting_address(p: Pod) -> Optional[bool]:
    return True if p.spec.node_name and not p.status.pod_ip else None


def reconcile(c: "Cluster") -> None:
    nodes = {n.metadata.name: n for n in c.store.list("Node")}
    waiting = [p for p in c.store.indexed("pod-awaiting-address", "Pod", _awaiting_address, True)
               if not is_terminating(p) and not is_terminal(p)]
    if not waiting:
        return
    # the pods of the nodes concerned (not of the whole lab)
    pods = [p for name in sorted({p.spec.node_name for p in waiting}) for p in c.store.on_node(name)]
    used: dict[str, set[int]] = {}  # per node, as integers: parsed once per pass, not once per new pod
    used6: dict[str, set[int]] = {}  # the same for the IPv6 addresses of a dual-stack lab
    for p in pods:
        if p.status.pod_ip:
            used.setdefault(p.spec.node_name, set()).add(int(ipaddress.ip_address(p.status.pod_ip)))
        for extra in (p.status.pod_ips or [])[1:]:
            if ":" in extra.ip:
                used6.setdefault(p.spec.node_name, set()).add(int(ipaddress.ip_address(extra.ip)))
    admitted: Optional[dict] = None
    for pod in sorted(waiting, key=lambda p: (p.metadata.creation_timestamp or "", p.metadata.name)):
        node = nodes.get(pod.spec.node_name)
        if node is not None and node_ready(node) and not is_control_process_pod(pod):
            if admitted is None:
                admitted = _admitted(c, pods, nodes)
            if not _admit(c, pod, admitted[pod.spec.node_name]):
                continue
        if node is None or not node_ready(node) or pod.spec.host_network:
            if node is not None and pod.spec.host_network and node_ready(node):
                # a host-network pod has its node's addresses, one per family
                pod.status.pod_ip = pod.status.host_ip = internal_ip(node)
                ip6 = internal_ip6(node)
                pod.status.pod_ips = [PodIP(ip=pod.status.pod_ip), *([PodIP(ip=ip6)] if ip6 else [])]
                c.store.update(pod)
            continue
        ann = node.metadata.annotations = node.metadata.annotations or {}
        cidr6 = node_pod_cidr6(node)
        try:
            ip = next_free_pod_ip(node.spec.pod_cidr, used.get(node.metadata.name, set()),
                                  ann.get(LAST_IP_ANNOTATION))
            # dual-stack: an address of each family, or none (the CNI's ADD fails as a whole)
            ip6 = next_free_pod_ip(cidr6, used6.get(node.metadata.name, set()),
                                   ann.get(LAST_IP6_ANNOTATION)) if cidr6 else None
        except Exhausted as e:
            c.event(pod, "FailedCreatePodSandBox", str(e), type_="Warning", source="kubelet")
            continue
        used.setdefault(node.metadata.name, set()).add(int(ipaddress.ip_address(ip)))
        ann[LAST_IP_ANNOTATION] = ip
        if ip6:
            used6.setdefault(node.metadata.name, set()).add(int(ipaddress.ip_address(ip6)))
            ann[LAST_IP6_ANNOTATION] = ip6
        c.store.update(node)
        pod.status.pod_ip = ip
        pod.status.pod_ips = [PodIP(ip=ip), *([PodIP(ip=ip6)] if ip6 else [])]
        pod.status.host_ip = internal_ip(node)
        if not is_control_process_pod(pod):
            set_creating(pod, c.now_str())  # the kubelet took it: ContainerCreating until it runs
        c.store.update(pod)


def _admitted(c: "Cluster", pods, nodes) -> dict:
    """What each node's kubelet has admitted: the pods it runs (started, not finished)."""
    from netemu.control.scheduler import NodeInfo, pod_info

    infos = {name: NodeInfo(n) for name, n in nodes.items()}
    for p in pods:
        if p.spec.node_name in infos and p.status.pod_ip and not is_terminal(p):
            infos[p.spec.node_name].add(pod_info(c, p))
    return infos


def _admit(c: "Cluster", pod, node) -> bool:
    """kubelet's admission (canAdmitPod): a pod bound straight to a node (spec.nodeName, not by the
    scheduler) that does not fit there is rejected, Failed with OutOf<resource> as kubelet words it."""
    from netemu.control.scheduler import fits_resources, pod_info
    from netemu.spec.podresources import PODS

    pi = pod_info(c, pod)
    why = fits_resources(pi, node)
    if not why:
        node.add(pi)
        return True
    name = PODS if why[0] == "Too many pods" else why[0].split(" ", 1)[1]
    if name == PODS:
        detail = f"requested: 1, used: {len(node.pods)}, capacity: {node.allowed_pods}"
    else:
        # kubelet prints cpu in millicores, the others in units
        detail = (f"requested: {pi.requests.get(name, 0)}, used: {node.requested.get(name, 0)}, "
                  f"capacity: {node.allocatable.get(name, 0)}")
    message = f"Pod was rejected: Node didn't have enough resource: {name}, {detail}"
    pod.status.phase, pod.status.reason, pod.status.message = "Failed", f"OutOf{name}", message
    c.store.update(pod)
    c.event(pod, f"OutOf{name}", f"Node didn't have enough resource: {name}, {detail}", type_="Warning",
            source="kubelet")
    return False
