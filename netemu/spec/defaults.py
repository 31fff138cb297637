"""Kubernetes' API defaults, in one place: what the API server fills in when an object is created, so
that the rest of netemu (and ``get -o yaml``) sees the same object a real cluster would show.

Also the default lab: the seeds' four machines, used when a lab file has no Lab document.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Optional

from netemu.spec.models import (
    NAMESPACED, ClientIPConfig, Container, Deployment, DeploymentStrategy, EndpointSlice, K8sModel, Lab, LabNode,
    Pod, PodSpec, Probe, ReplicaSet, Service, SessionAffinityConfig,
)

DEFAULT_NAMESPACE = "default"
CLIENT_IP_TIMEOUT_SECONDS = 10800  # 3 hours, as kube-apiserver
LAB_NAME_MAX = 20  # kernel object names carry the lab's name; keep room for the rest
DEFAULT_LAB_NAME = "lab"

# the seeds' machines: name, last part of the address on the lab network, role
SEED_NODES = (("m-k8s", 10, "control-plane"), ("w1-k8s", 101, "worker"), ("w2-k8s", 102, "worker"),
              ("w3-k8s", 103, "worker"))
KUBELET_MAX_PODS = 110  # kubelet's default --max-pods (maxPods)
KUBEADM_NODE_POD_PREFIX = 24  # the node pod subnet kubelet's default was sized for
# a Linux bridge has BR_MAX_PORTS (1,024) port numbers and never uses 0: a node's cni0 holds 1,023 pod veths
BRIDGE_MAX_PODS = 1023


# --------------------------------------------------------------------------- objects
def apply_defaults(obj: K8sModel) -> K8sModel:
    """Fill in what the API server would, in place; returns ``obj``."""
    if obj.kind in NAMESPACED and not obj.metadata.namespace:
        obj.metadata.namespace = DEFAULT_NAMESPACE
    if isinstance(obj, Pod):
        default_pod_spec(obj.spec)
        from netemu.spec.podresources import default_requests, qos_class

        default_requests([*obj.spec.containers, *(obj.spec.init_containers or [])])
        if obj.status.qos_class is None:  # the API server sets it when the pod is created
            obj.status.qos_class = qos_class(obj.spec)
    elif obj.kind == "DaemonSet":
        _default_daemonset(obj)
    elif obj.kind == "Job":
        _default_job(obj)
    elif isinstance(obj, Deployment):
        _default_deployment(obj)
    elif isinstance(obj, ReplicaSet):
        default_pod_spec(obj.spec.template.spec)
    elif isinstance(obj, Service):
        _default_service(obj)
    elif isinstance(obj, EndpointSlice):
        for p in obj.ports or []:
            p.protocol = p.protocol or "TCP"
    elif obj.kind == "HorizontalPodAutoscaler":
        from netemu.spec.autoscaling import default_hpa

        default_hpa(obj)  # autoscaling/v1 -> v2, minReplicas 1, cpu 80%, behavior rules
    return obj


def _default_deployment(d: Deployment) -> None:
    spec = d.spec
    if spec.replicas is None:
        spec.replicas = 1
    if spec.strategy is None:
        spec.strategy = DeploymentStrategy()
    if spec.strategy.type is None:
        spec.strategy.type = "RollingUpdate"
    if spec.strategy.type == "RollingUpdate":
        rolling = dict(spec.strategy.rolling_update or {})
        rolling.setdefault("maxSurge", "25%")
        rolling.setdefault("maxUnavailable", "25%")
        spec.strategy.rolling_update = rolling
    if spec.revision_history_limit is None:
        spec.revision_history_limit = 10
    if spec.progress_deadline_seconds is None:
        spec.progress_deadline_seconds = 600
    default_pod_spec(spec.template.spec)


def _default_daemonset(ds) -> None:
    from netemu.spec.models import DaemonSetUpdateStrategy, RollingUpdateDaemonSet

    spec = ds.spec
    st = spec.update_strategy = spec.update_strategy or DaemonSetUpdateStrategy()
    st.type = st.type or "RollingUpdate"
    if st.type == "RollingUpdate":
        ru = st.rolling_update = st.rolling_update or RollingUpdateDaemonSet()
        if ru.max_unavailable is None:
            ru.max_unavailable = 1
        if ru.max_surge is None:
            ru.max_surge = 0
    if spec.revision_history_limit is None:
        spec.revision_history_limit = 10
    if spec.template is not None:
        default_pod_spec(spec.template.spec)


def _default_job(job) -> None:
    spec = job.spec
    if spec.completions is None and spec.parallelism is None:
        spec.completions = 1
    if spec.parallelism is None:
        spec.parallelism = 1
    if spec.backoff_limit is None:
        spec.backoff_limit = 6
    spec.completion_mode = spec.completion_mode or "NonIndexed"
    if spec.suspend is None:
        spec.suspend = False
    spec.pod_replacement_policy = spec.pod_replacement_policy or "TerminatingOrFailed"
    if spec.template is not None:
        default_pod_spec(spec.template.spec)


def default_pod_spec(spec: PodSpec) -> None:
    spec.restart_policy = spec.restart_policy or "Always"
    spec.dns_policy = spec.dns_policy or "ClusterFirst"
    if spec.termination_grace_period_seconds is None:
        spec.termination_grace_period_seconds = 30
    for c in [*spec.containers, *(spec.init_containers or [])]:
        _default_container(c)


def image_pull_policy(image: Optional[str]) -> str:
    """Always for ``:latest`` or no tag, else IfNotPresent (a digest counts as a fixed version)."""
    if not image:
        return "Always"
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]  # a registry's port (host:5000/x) is not a tag
    tag = last.split(":", 1)[1] if ":" in last else None
    return "Always" if tag in (None, "latest") else "IfNotPresent"


def _default_container(c: Container) -> None:
    c.image_pull_policy = c.image_pull_policy or image_pull_policy(c.image)
    for p in c.ports or []:
        p.protocol = p.protocol or "TCP"
    for probe in (c.readiness_probe, c.liveness_probe, c.startup_probe):
        if probe is not None:
            _default_probe(probe)


def _default_probe(p: Probe) -> None:
    for field, value in (("initial_delay_seconds", 0), ("period_seconds", 10), ("timeout_seconds", 1),
                         ("failure_threshold", 3), ("success_threshold", 1)):
        if getattr(p, field) is None:
            setattr(p, field, value)
    if p.http_get is not None:
        p.http_get.path = p.http_get.path or "/"
        p.http_get.scheme = p.http_get.scheme or "HTTP"


def _default_service(s: Service) -> None:
    spec = s.spec
    spec.type = spec.type or "ClusterIP"
    for p in spec.ports or []:
        p.protocol = p.protocol or "TCP"
        if p.target_port is None:
            p.target_port = p.port
    spec.session_affinity = spec.session_affinity or "None"
    if spec.session_affinity == "ClientIP":
        cfg = spec.session_affinity_config = spec.session_affinity_config or SessionAffinityConfig()
        cfg.client_ip = cfg.client_ip or ClientIPConfig()
        if cfg.client_ip.timeout_seconds is None:
            cfg.client_ip.timeout_seconds = CLIENT_IP_TIMEOUT_SECONDS
    if spec.type in ("NodePort", "LoadBalancer") and spec.external_traffic_policy is None:
        spec.external_traffic_policy = "Cluster"
    if spec.type != "ExternalName" and spec.internal_traffic_policy is None:
        spec.internal_traffic_policy = "Cluster"


# --------------------------------------------------------------------------- the lab
def lab_name_from_file(stem: str) -> str:
    """A file's stem as a lab name: a DNS label of at most LAB_NAME_MAX characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", stem.lower())
    name = re.sub(r"-{2,}", "-", name).strip("-")[:LAB_NAME_MAX].strip("-")
    return name or DEFAULT_LAB_NAME


def pod_addresses(node_pod_prefix: int, bits: int = 32) -> int:
    """The pod addresses of a node's /node_pod_prefix subnet: all but its network, broadcast and bridge
    (gateway) addresses. bits 128 (an IPv6-only lab's pod subnets): all but its first (the subnet-router
    anycast address) and cni0's ::1; IPv6 has no broadcast address."""
    if bits == 128:
        return max(0, 2 ** (128 - node_pod_prefix) - 2)
    return max(0, 2 ** (32 - node_pod_prefix) - 3)


def pod_bits(spec) -> int:
    """The address length of the lab's (primary) pod CIDR: 128 in an IPv6-only lab, else 32."""
    return 128 if ":" in str(spec.pod_cidr) else 32


def node_pod_limit(node_pod_prefix: int, bits: int = 32) -> tuple[int, str]:
    """The most pods a node can hold, and why: each takes an address of its pod subnet and a port of its
    bridge."""
    addresses = pod_addresses(node_pod_prefix, bits)
    if addresses < BRIDGE_MAX_PODS:
        return addresses, (f"each pod takes an address of the node's pod subnet, a /{node_pod_prefix} of "
                           f"podCIDR (spec.nodePodPrefix), which has {addresses}")
    return BRIDGE_MAX_PODS, (f"each pod takes a port of the node's bridge (cni0), and a Linux bridge holds "
                             f"{BRIDGE_MAX_PODS:,}")


def default_max_pods(node_pod_prefix: int, bits: int = 32) -> int:
    """kubelet's maxPods for a node of the lab: 110, raised to fill a pod subnet wider than kubeadm's /24,
    and never more than the node can hold (node_pod_limit). IPv6 pod subnets (bits 128): 110, kubeadm's
    /64 being the usual size."""
    limit, _ = node_pod_limit(node_pod_prefix, bits)
    if bits == 128:
        return min(KUBELET_MAX_PODS, limit)
    return limit if node_pod_prefix < KUBEADM_NODE_POD_PREFIX else min(KUBELET_MAX_PODS, limit)


def default_lab(lab: Lab, *, file_stem: Optional[str] = None, name: Optional[str] = None) -> Lab:
    """Fill the Lab in place: its name (``name`` from the caller wins, then the document's, then the
    file's stem), the seeds' nodes when it lists none, and addresses derived from its network (and, in a
    dual-stack lab, from network6: gateway6 and each node's and router's ip6)."""
    if name:
        lab.metadata.name = name
    elif not lab.metadata.name:
        lab.metadata.name = lab_name_from_file(file_stem or DEFAULT_LAB_NAME)
    spec = lab.spec
    _default_lab4(spec)
    _default_lab6(spec)
    _default_ipv6_only(spec)
    return lab


def _default_lab4(spec) -> None:
    try:
        network = ipaddress.ip_network(spec.network, strict=False)
    except ValueError:
        return  # validation reports it; nothing can be derived from it
    if network.version != 4:
        return  # an IPv6 network: an IPv6-only lab (_default_ipv6_only)
    # a lab moved to another network keeps the seeds' layout on it: .1 host, .10 and .101-103 nodes
    if "gateway" not in spec.model_fields_set:
        spec.gateway = str(network.network_address + 1)
    if spec.nodes is None and network.num_addresses > max(n for _, n, _ in SEED_NODES) + 1:
        spec.nodes = [LabNode(name=n, ip=str(network.network_address + host), role=role)
                      for n, host, role in SEED_NODES]
    if "cluster_dns" not in spec.model_fields_set:
        try:
            service = ipaddress.ip_network(spec.service_cidr, strict=False)
            if service.version == 4:  # kube-dns is SingleStack in the primary family
                spec.cluster_dns = str(service.network_address + 10)
        except ValueError:
            pass


# an IPv6-only lab's ranges when it names only its network (kubeadm has no IPv6 defaults: these are the
# dual-stack lab's IPv6 ranges, topologies/dualstack.yaml)
IPV6_ONLY_POD_CIDR = "fd00:10:244::/56"
IPV6_ONLY_SERVICE_CIDR = "fd00:10:96::/112"
IPV6_NODE_POD_PREFIX = 64  # kube-controller-manager's --node-cidr-mask-size for an IPv6 cluster CIDR


def _default_ipv6_only(spec) -> None:
    """An IPv6-only lab (an IPv6 network): the seeds' layout on it (gateway ::1, nodes ::10 and
    ::101-::103, the last numbers read as hex digits as default_ip6 does), IPv6 pod and service ranges
    when not written, /64 node pod subnets, and kube-dns at the service range's 10th address (kubeadm's
    pick: fd00:10:96::a)."""
    try:
        network = ipaddress.ip_network(spec.network, strict=False)
    except ValueError:
        return
    if network.version != 6:
        return
    if "gateway" not in spec.model_fields_set and network.num_addresses > 1:
        spec.gateway = str(network.network_address + 1)
    if spec.nodes is None and network.num_addresses > int(str(max(n for _, n, _ in SEED_NODES)), 16) + 1:
        spec.nodes = [LabNode(name=n, ip=str(network.network_address + int(str(host), 16)), role=role)
                      for n, host, role in SEED_NODES]
    if "pod_cidr" not in spec.model_fields_set:
        spec.pod_cidr = IPV6_ONLY_POD_CIDR
    if "service_cidr" not in spec.model_fields_set:
        spec.service_cidr = IPV6_ONLY_SERVICE_CIDR
    if "node_pod_prefix" not in spec.model_fields_set and ":" in str(spec.pod_cidr):
        spec.node_pod_prefix = IPV6_NODE_POD_PREFIX
    if "cluster_dns" not in spec.model_fields_set:
        try:
            service = ipaddress.ip_network(spec.service_cidr, strict=False)
            if service.version == 6:
                spec.cluster_dns = str(service.network_address + 10)
        except ValueError:
            pass


def default_ip6(network6: str, ip: str) -> Optional[str]:
    """A node's or router's IPv6 address on the lab segment: network6's prefix and the IPv4 address's last
    number written as is (192.168.1.101 -> fd00:192:168:1::101), so the two read alike; None when either
    does not parse or the result falls outside network6."""
    try:
        net = ipaddress.ip_network(network6, strict=False)
        v4 = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if net.version != 6 or v4.version != 4:
        return None
    # the decimal digits read as hex: "101" -> ::101, as a person would write it
    offset = int(str(v4).rsplit(".", 1)[1], 16)
    if offset >= net.num_addresses:
        return None
    return str(net.network_address + offset)


def _default_lab6(spec) -> None:
    """gateway6 is network6's first address; each node's and router's ip6 follows its IPv4 address."""
    if not spec.network6:
        return
    try:
        net = ipaddress.ip_network(spec.network6, strict=False)
    except ValueError:
        return
    if net.version != 6:
        return  # validation says so
    if spec.gateway6 is None and net.num_addresses > 1:
        spec.gateway6 = str(net.network_address + 1)
    for m in [*(spec.nodes or []), *(spec.routers or [])]:
        if m.ip6 is None:
            m.ip6 = default_ip6(spec.network6, m.ip)
