"""What kubeadm puts in every cluster: the `kubernetes` Service, and CoreDNS behind `kube-dns`.

The objects follow kubeadm's manifests (labels, ports, probes, tolerations), with two lab
differences: the Corefile has no `forward` (nothing may leave the lab), and the DNS pods get
the address of the lab's control process, which feeds them the zone as the API server would.
"""
from __future__ import annotations

import ipaddress

from netemu.spec.defaults import apply_defaults
from netemu.spec.models import ConfigMap, Deployment, EndpointSlice, K8sModel, Lab, Service
from netemu.wellknown import CONTROL_PLANE_TAINT, ENDPOINTSLICE_CONTROLLER, MANAGED_BY_LABEL, OS_LABEL, SERVICE_NAME_LABEL

COREDNS_IMAGE = "registry.k8s.io/coredns/coredns:v1.11.3"
API_SERVER_PORT = 6443

COREFILE = """\
.:53 {{
    errors
    health {{
       lameduck 5s
    }}
    ready
    kubernetes {domain} in-addr.arpa ip6.arpa {{
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl {ttl}
    }}
    prometheus :9153
    cache 30
    loop
    reload
    loadbalance
}}
"""


def kubernetes_service(lab: Lab, control_plane_ip: str) -> list[K8sModel]:
    """default/kubernetes at the first service address, its endpoint the control plane's :6443."""
    ip = str(next(ipaddress.ip_network(lab.spec.service_cidr).hosts()))
    svc = Service.model_validate({
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": ip,
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": API_SERVER_PORT}]},
    })
    eps = EndpointSlice.model_validate({
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {SERVICE_NAME_LABEL: "kubernetes",
                                MANAGED_BY_LABEL: f"{ENDPOINTSLICE_CONTROLLER}/apiserver"}},
        "addressType": "IPv6" if ":" in control_plane_ip else "IPv4",  # an IPv6-only lab's control plane
        "endpoints": [{"addresses": [control_plane_ip], "conditions": {"ready": True, "serving": True,
                                                                        "terminating": False}}],
        "ports": [{"name": "https", "port": API_SERVER_PORT, "protocol": "TCP"}],
    })
    return _defaulted([svc, eps])


def coredns(lab: Lab, api_socket: str) -> list[K8sModel]:
    spec = lab.spec
    labels = {"k8s-app": "kube-dns"}
    cm = ConfigMap.model_validate({
        "metadata": {"name": "coredns", "namespace": "kube-system"},
        "data": {"Corefile": COREFILE.format(domain=spec.cluster_domain, ttl=spec.dns_ttl)},
    })
    dep = Deployment.model_validate({
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": "coredns",
                    "dnsPolicy": "Default",
                    "nodeSelector": {OS_LABEL: "linux"},
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"},
                                    {"key": CONTROL_PLANE_TAINT, "effect": "NoSchedule"}],
                    "containers": [{
                        "name": "coredns",
                        "image": COREDNS_IMAGE,
                        "args": ["-conf", "/etc/coredns/Corefile"],
                        "env": [{"name": "NETEMU_API_SOCKET", "value": api_socket}],
                        "resources": {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}},
                        "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                  {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                  {"name": "metrics", "containerPort": 9153, "protocol": "TCP"}],
                        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "initialDelaySeconds": 60,
                                          "timeoutSeconds": 5, "successThreshold": 1, "failureThreshold": 5},
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}},
                    }],
                },
            },
        },
    })
    svc = Service.model_validate({
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {**labels, "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"},
                     "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
        "spec": {"selector": labels, "clusterIP": spec.cluster_dns,
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                           {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]},
    })
    return _defaulted([cm, dep, svc])


def _defaulted(objs: list[K8sModel]) -> list[K8sModel]:
    for o in objs:
        apply_defaults(o)
    return objs
