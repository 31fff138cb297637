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

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

ANNOTATION = "netemu.dev/run-by"  # "control-process": the lab's control process is this pod's program
MIRROR = "kubernetes.io/config.mirror"
K8S_VERSION = "v1.32.0"

STATIC_PODS = {  # component -> (image, command)
    "etcd": ("registry.k8s.io/etcd:3.5.16-0", ["etcd", "--advertise-client-urls=https://{ip}:2379"]),
    "kube-apiserver": (f"registry.k8s.io/kube-apiserver:{K8S_VERSION}",
                       ["kube-apiserver", "--advertise-address={ip}", "--secure-port=6443"]),
    "kube-controller-manager": (f"registry.k8s.io/kube-controller-manager:{K8S_VERSION}",
                                ["kube-controller-manager", "--leader-elect=true"]),
    "kube-scheduler": (f"registry.k8s.io/kube-scheduler:{K8S_VERSION}", ["kube-scheduler", "--leader-elect=true"]),
}


def is_control_process_pod(pod: Pod) -> bool:
    return (pod.metadata.annotations or {}).get(ANNOTATION) == "control-process"


def kube_proxy_daemonset(mode: str) -> StoredObject:
    labels = {"k8s-app": "kube-proxy"}
    return StoredObject.model_validate({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": labels, "generation": 1},
        "spec": {"selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": _proxy_spec(mode)},
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}},
        "status": {}})


def _proxy_spec(mode: str) -> dict:
    return {"hostNetwork": True, "priorityClassName": "system-node-critical", "serviceAccountName": "kube-proxy",
            "nodeSelector": {"kubernetes.io/os": "linux"}, "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "kube-proxy", "image": f"registry.k8s.io/kube-proxy:{K8S_VERSION}",
                            "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf",
                                        f"--proxy-mode={mode}", "--hostname-override=$(NODE_NAME)"],
                            "securityContext": {"privileged": True}}]}


def _pod(name: str, node: Node, labels: dict, spec: dict, annotations: dict, owner: dict) -> Pod:
    pod = Pod.model_validate({
        "metadata": {"name": name, "namespace": "kube-system", "labels": labels,
                     "annotations": {ANNOTATION: "control-process", **annotations}, "ownerReferences": [owner]},
        "spec": {**spec, "nodeName": node.metadata.name}})
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
            for comp, (image, cmd) in STATIC_PODS.items():
                name = f"{comp}-{node.metadata.name}"
                if name in pods:
                    continue
                h = hashlib.sha256(f"{comp}/{node.metadata.name}".encode()).hexdigest()[:32]
                spec = {"hostNetwork": True, "priorityClassName": "system-node-critical",
                        "tolerations": [{"operator": "Exists", "effect": "NoExecute"}],
                        "containers": [{"name": comp, "image": image, "command": [a.format(ip=ip) for a in cmd]}]}
                c.store.create(_pod(name, node, {"component": comp, "tier": "control-plane"}, spec,
                                    {MIRROR: h, "kubernetes.io/config.hash": h, "kubernetes.io/config.source": "file"},
                                    {"apiVersion": "v1", "kind": "Node", "name": node.metadata.name,
                                     "uid": node.metadata.uid, "controller": True}))
        if ds is not None and node.metadata.name not in proxies:
            name = f"kube-proxy-{_suffix(c, node.metadata.name)}"
            spec = dict(_proxy_spec(c.lab.spec.proxy_mode))
            c.store.create(_pod(name, node, {"k8s-app": "kube-proxy", "controller-revision-hash": "netemu",
                                             "pod-template-generation": "1"}, spec, {},
                                {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "kube-proxy",
                                 "uid": ds.metadata.uid, "controller": True, "blockOwnerDeletion": True}))
    _ready(c)
    _service_accounts(c)
    _apiservices(c)
    if ds is not None:
        _daemonset_status(c, ds, len(nodes))


def _suffix(c: "Cluster", node: str) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    h = int(hashlib.sha256(f"{c.lab.spec.seed}/{node}".encode()).hexdigest(), 16)
    return "".join(alphabet[(h >> (5 * i)) % len(alphabet)] for i in range(5))


def _ready(c: "Cluster") -> None:
    """Running and Ready while the node is (their program is the control process itself)."""
    from netemu.control.scheduler import node_ready
    from netemu.control.pods import set_condition
    from netemu.spec.models import ContainerState, ContainerStateRunning, ContainerStatus

    for pod in c.store.list("Pod", "kube-system"):
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
    from netemu.api import registry

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


def _daemonset_status(c: "Cluster", ds: StoredObject, n: int) -> None:
    pods = [p for p in c.store.list("Pod", "kube-system") if (p.metadata.labels or {}).get("k8s-app") == "kube-proxy"]
    ready = sum(1 for p in pods if any(x.type == "Ready" and x.status == "True" for x in p.status.conditions or []))
    status = {"currentNumberScheduled": len(pods), "desiredNumberScheduled": n, "numberMisscheduled": 0,
              "numberReady": ready, "numberAvailable": ready, "updatedNumberScheduled": len(pods),
              "observedGeneration": 1}
    if (ds.model_extra or {}).get("status") != status:
        ds.__pydantic_extra__["status"] = status
        c.store.update(ds)
