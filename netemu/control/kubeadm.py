"""kube-system as kubeadm leaves it (seed 003 walks through it): the control plane's static pods as
mirror pods on each control-plane node (kube-apiserver, etcd, kube-controller-manager,
kube-scheduler), a `kube-proxy` DaemonSet with one pod per node, and a `default` ServiceAccount in
every namespace (the service-account controller's job).

The mirror pods and kube-proxy pods stand for parts of the lab's control process: no kubelet runs
them (ANNOTATION marks them), they share their node's network (hostNetwork, the node's IP) and are
Ready while their node is. kube-proxy's pod log is the proxier's sync log (netemu.daemon.proxylog).
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from netemu.control.nodes import internal_ip, is_control_plane
from netemu.control.pods import is_terminating
from netemu.spec.defaults import apply_defaults
from netemu.spec.models import Node, Pod, StoredObject
from netemu.wellknown import CONTROLLER_REVISION_HASH_LABEL, MIRROR_ANNOTATION, OS_LABEL

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

ANNOTATION = "netemu.dev/run-by"  # "control-process": the lab's control process is this pod's program
K8S_VERSION = "v1.32.0"

STATIC_PODS = {  # component -> (image, command, requests as kubeadm's manifests ask)
    "etcd": ("registry.k8s.io/etcd:3.5.16-0", ["etcd", "--advertise-client-urls=https://{ip}:2379"],
             {"cpu": "100m", "memory": "100Mi"}),
    "kube-apiserver": (f"registry.k8s.io/kube-apiserver:{K8S_VERSION}",
                       ["kube-apiserver", "--advertise-address={ip}", "--secure-port=6443"], {"cpu": "250m"}),
    "kube-controller-manager": (f"registry.k8s.io/kube-controller-manager:{K8S_VERSION}",
                                ["kube-controller-manager", "--leader-elect=true"], {"cpu": "200m"}),
    "kube-scheduler": (f"registry.k8s.io/kube-scheduler:{K8S_VERSION}", ["kube-scheduler", "--leader-elect=true"],
                       {"cpu": "100m"}),
}
SYSTEM_NODE_CRITICAL = 2000001000


def is_control_process_pod(pod: Pod) -> bool:
    return (pod.metadata.annotations or {}).get(ANNOTATION) == "control-process"


def kube_proxy_daemonset(mode: str):
    """kube-system/kube-proxy, annotated as the control process's own: the DaemonSet controller leaves it
    to this module, which gives every node its kube-proxy pod."""
    from netemu.spec.models import DaemonSet

    labels = {"k8s-app": "kube-proxy"}
    return DaemonSet.model_validate({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": labels, "generation": 1,
                     "annotations": {ANNOTATION: "control-process", "deprecated.daemonset.template.generation": "1"}},
        "spec": {"selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": _proxy_spec(mode)},
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}},
        "status": {}})


def _proxy_spec(mode: str) -> dict:
    return {"hostNetwork": True, "priorityClassName": "system-node-critical", "serviceAccountName": "kube-proxy",
            "nodeSelector": {OS_LABEL: "linux"}, "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "kube-proxy", "image": f"registry.k8s.io/kube-proxy:{K8S_VERSION}",
                            "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf",
                                        f"--proxy-mode={mode}", "--hostname-override=$(NODE_NAME)"],
                            "securityContext": {"privileged": True}}]}


def _pod(name: str, node: Node, labels: dict, spec: dict, annotations: dict, owner: dict) -> Pod:
    pod = Pod.model_validate({
        "metadata": {"name": name, "namespace": "kube-system", "labels": labels,
                     "annotations": {ANNOTATION: "control-process", **annotations}, "ownerReferences": [owner]},
        "spec": {**spec, "nodeName": node.metadata.name, "priority": SYSTEM_NODE_CRITICAL,
                 "preemptionPolicy": "PreemptLowerPriority"}})
    apply_defaults(pod)
    return pod


def reconcile(c: "Cluster") -> None:
    nodes = c.store.list("Node")
    pods = {p.metadata.name: p for p in c.store.list("Pod", "kube-system")}
    ds = c.store.find("DaemonSet", "kube-system", "kube-proxy")
    proxies = {p.spec.node_name: p for p in pods.values() if (p.metadata.labels or {}).get("k8s-app") == "kube-proxy"
               and is_control_process_pod(p)}
    for node in nodes:
        ip = internal_ip(node)
        if is_control_plane(node):
            for comp, (image, cmd, requests) in STATIC_PODS.items():
                name = f"{comp}-{node.metadata.name}"
                if name in pods:
                    continue
                h = hashlib.sha256(f"{comp}/{node.metadata.name}".encode()).hexdigest()[:32]
                spec = {"hostNetwork": True, "priorityClassName": "system-node-critical",
                        "tolerations": [{"operator": "Exists", "effect": "NoExecute"}],
                        "containers": [{"name": comp, "image": image, "command": [a.format(ip=ip) for a in cmd],
                                        "resources": {"requests": requests}}]}
                c.store.create(_pod(name, node, {"component": comp, "tier": "control-plane"}, spec,
                                    {MIRROR_ANNOTATION: h, "kubernetes.io/config.hash": h, "kubernetes.io/config.source": "file"},
                                    {"apiVersion": "v1", "kind": "Node", "name": node.metadata.name,
                                     "uid": node.metadata.uid, "controller": True}))
        if ds is not None and node.metadata.name not in proxies:
            name = f"kube-proxy-{_suffix(c, node.metadata.name)}"
            spec = dict(_proxy_spec(c.lab.spec.proxy_mode))
            c.store.create(_pod(name, node, {"k8s-app": "kube-proxy", CONTROLLER_REVISION_HASH_LABEL: "netemu",
                                             "pod-template-generation": "1"}, spec, {},
                                {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "kube-proxy",
                                 "uid": ds.metadata.uid, "controller": True, "blockOwnerDeletion": True}))
    mark_running(c, c.store.list("Pod", "kube-system"))
    _service_accounts(c)
    _apiservices(c)
    _priority_classes(c)
    if ds is not None:
        _daemonset_status(c, ds, len(nodes))


def _suffix(c: "Cluster", node: str) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    h = int(hashlib.sha256(f"{c.lab.spec.seed}/{node}".encode()).hexdigest(), 16)
    return "".join(alphabet[(h >> (5 * i)) % len(alphabet)] for i in range(5))


def _priority_classes(c: "Cluster") -> None:
    """The built-in PriorityClasses every cluster has (the API server makes them)."""
    from netemu.control.admission import SYSTEM_PRIORITY_CLASSES

    for name, value in SYSTEM_PRIORITY_CLASSES.items():
        if c.store.find("PriorityClass", "", name) is None:
            c.store.create(StoredObject.model_validate({
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
                "value": value, "preemptionPolicy": "PreemptLowerPriority",
                "description": "Used for system critical pods that must not be moved from their current node."
                if name == "system-node-critical" else "Used for system critical pods that must run in the cluster, "
                "but can be moved to another node if necessary."}))


def mark_running(c: "Cluster", pods) -> None:
    """Running and Ready while the node is (their program is the control process itself)."""
    from netemu.control.scheduler import node_ready
    from netemu.control.pods import set_condition
    from netemu.spec.models import ContainerState, ContainerStateRunning, ContainerStatus

    for pod in pods:
        if not is_control_process_pod(pod) or is_terminating(pod) or not pod.status.pod_ip:
            continue
        node = c.store.find("Node", "", pod.spec.node_name or "")
        ready = node is not None and node_ready(node)
        now = c.now_str()
        changed = pod.status.phase != "Running"
        pod.status.phase = "Running"
        pod.status.start_time = pod.status.start_time or now
        for ctype in ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready", "PodScheduled"):
            changed |= bool(set_condition(pod, ctype, ready or ctype in ("Initialized", "PodScheduled"), now))
        if not pod.status.container_statuses or pod.status.container_statuses[0].ready != ready:
            pod.status.container_statuses = [ContainerStatus.model_validate({
                "name": ct.name, "image": ct.image, "imageID": ct.image, "ready": ready, "started": ready,
                "restartCount": 0, "containerID": f"netemu://{pod.metadata.uid}",
                "state": ContainerState(running=ContainerStateRunning(started_at=pod.status.start_time)).dump()})
                for ct in pod.spec.containers]
            changed = True
        if changed:
            c.store.update(pod)


def _service_accounts(c: "Cluster") -> None:
    for ns in c.store.list("Namespace"):
        name = ns.metadata.name
        if ns.metadata.deletion_timestamp or c.store.find("ServiceAccount", name, "default") is not None:
            continue
        c.store.create(StoredObject.model_validate({"apiVersion": "v1", "kind": "ServiceAccount",
                                                    "metadata": {"name": "default", "namespace": name}}))
    if c.store.find("ServiceAccount", "kube-system", "kube-proxy") is None and \
            c.store.find("Namespace", "", "kube-system") is not None:
        c.store.create(StoredObject.model_validate({"apiVersion": "v1", "kind": "ServiceAccount",
                                                    "metadata": {"name": "kube-proxy", "namespace": "kube-system"}}))


def _apiservices(c: "Cluster") -> None:
    """An installer's APIService for an API the lab serves itself (metrics.k8s.io) is Available, as the
    aggregator reports it once the backing server answers; others are not (nothing serves them)."""
    from netemu.spec import registry

    for svc in c.store.list("APIService"):
        spec = (svc.model_extra or {}).get("spec") or {}
        served = spec.get("version") in registry.groups().get(spec.get("group") or "", [])
        cond = {"type": "Available", "status": "True" if served else "False",
                "reason": "Passed" if served else "ServiceNotFound",
                "message": "all checks passed" if served else "the lab does not serve this API"}
        status = (svc.model_extra or {}).get("status") or {}
        old = next((x for x in status.get("conditions") or [] if x.get("type") == "Available"), None)
        if old is None or old.get("status") != cond["status"]:
            svc.__pydantic_extra__["status"] = {"conditions": [dict(cond, lastTransitionTime=c.now_str())]}
            c.store.update(svc)


def _daemonset_status(c: "Cluster", ds, n: int) -> None:
    pods = [p for p in c.store.list("Pod", "kube-system") if (p.metadata.labels or {}).get("k8s-app") == "kube-proxy"]
    ready = sum(1 for p in pods if any(x.type == "Ready" and x.status == "True" for x in p.status.conditions or []))
    new = dict(current_number_scheduled=len(pods), desired_number_scheduled=n, number_misscheduled=0,
               number_ready=ready, number_available=ready or None, number_unavailable=(n - ready) or None,
               updated_number_scheduled=len(pods) or None, observed_generation=ds.metadata.generation or 1)
    st = ds.status
    if any(getattr(st, k) != v for k, v in new.items()):
        for k, v in new.items():
            setattr(st, k, v)
        c.store.update(ds)
