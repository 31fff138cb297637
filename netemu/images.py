"""Container image references, as Kubernetes and container runtimes read them: registry host,
repository path, tag, digest. Images are matched on their repository path, whatever the registry
host, tag or digest (`nginx`, `nginx:1.25`, `docker.io/library/nginx:latest@sha256:...` are all
nginx). Read by the cluster (which pods are add-ons or ingress controllers) and by the stand-ins'
registry (netemu.workloads.registry)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ImageRef:
    registry: Optional[str]
    repository: str  # lower-case, without "library/": "nginx", "kuar-demo/kuard-amd64"
    tag: Optional[str]
    digest: Optional[str]


def parse_image(image: Optional[str]) -> ImageRef:
    ref = (image or "").strip()
    ref, _, digest = ref.partition("@")
    tag = None
    slash = ref.rfind("/")
    if ":" in ref[slash + 1:]:
        ref, tag = ref.rsplit(":", 1)
    parts = ref.split("/")
    registry = None
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry = parts.pop(0)
    repository = "/".join(parts).lower()
    if repository.startswith("library/"):
        repository = repository[len("library/"):]
    return ImageRef(registry, repository, tag or None, digest or None)


# cluster add-ons whose work the lab does itself (netemu.workloads.addon stands in for their pods):
# image repository -> what the lab does instead (for the pod's StandIn event)
ADDONS = {
    "metallb/controller": "MetalLB's controller: the lab allocates LoadBalancer IPs itself",
    "metallb/speaker": "MetalLB's speaker: the lab's own speakers answer ARP for LoadBalancer IPs",
    "metrics-server/metrics-server": "metrics-server: the lab serves metrics.k8s.io from the pods' cgroups",
    "k8s-staging-metrics-server/metrics-server": "metrics-server: the lab serves metrics.k8s.io from the pods' cgroups",
}
