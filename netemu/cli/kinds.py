"""Resource names as kubectl accepts them: plural, singular, short names, `kind/name`."""
from __future__ import annotations

from typing import Optional

from netemu.cli.client import CliError

ALIASES: dict[str, str] = {}
for kind, names in {
    "Pod": ("pods", "pod", "po"),
    "Node": ("nodes", "node", "no"),
    "Deployment": ("deployments", "deployment", "deploy", "deployments.apps", "deployment.apps"),
    "ReplicaSet": ("replicasets", "replicaset", "rs", "replicasets.apps", "replicaset.apps"),
    "Service": ("services", "service", "svc"),
    "Endpoints": ("endpoints", "ep"),
    "EndpointSlice": ("endpointslices", "endpointslice", "endpointslices.discovery.k8s.io"),
    "Namespace": ("namespaces", "namespace", "ns"),
    "ConfigMap": ("configmaps", "configmap", "cm"),
    "Secret": ("secrets", "secret"),
    "Event": ("events", "event", "ev"),
    "HorizontalPodAutoscaler": ("horizontalpodautoscalers", "horizontalpodautoscaler", "hpa",
                                "horizontalpodautoscalers.autoscaling", "horizontalpodautoscaler.autoscaling"),
}.items():
    for n in names:
        ALIASES[n] = kind

CLUSTER_SCOPED = {"Node", "Namespace"}


def kind_of(text: str) -> str:
    kind = ALIASES.get(text.lower())
    if kind is None:
        raise CliError(f'the server doesn\'t have a resource type "{text}"')
    return kind


def split_ref(first: str, second: Optional[str]) -> tuple[str, Optional[str]]:
    """`pod np-1`, `pod/np-1` or `pods` -> (kind, name)."""
    if "/" in first and second is None:
        k, _, name = first.partition("/")
        return kind_of(k), name
    return kind_of(first), second
