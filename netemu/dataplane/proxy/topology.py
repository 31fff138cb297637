"""Which endpoints a service port uses on this node (pkg/proxy/topology.go CategorizeEndpoints).

Cluster traffic policy uses ready endpoints (filtered by topology hints when usable) and falls
back to serving+terminating ones when none is ready. Local traffic policy uses local ready
endpoints, else local serving+terminating ones. Topology hints follow the hint-driven logic of
kube-proxy 1.33+: hints are used when every ready endpoint carries one and one matches this node.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from netemu.dataplane.proxy.view import EndpointView, ServicePortView


class Categorized(NamedTuple):
    cluster: tuple[EndpointView, ...]
    local: tuple[EndpointView, ...]
    all_reachable: tuple[EndpointView, ...]   # every endpoint some rule of this node may DNAT to
    has_any: bool                             # a usable endpoint exists on some node


def _topology_filter(endpoints: tuple[EndpointView, ...], node_name: str, zone: Optional[str]):
    ready = [e for e in endpoints if e.ready]
    if not ready or not (ready[0].node_hints or ready[0].zone_hints):
        return None  # the common case: no hints at all
    if all(e.node_hints for e in ready) and any(node_name in e.node_hints for e in ready):
        return lambda e: node_name in e.node_hints
    if zone and all(e.zone_hints for e in ready) and any(zone in e.zone_hints for e in ready):
        return lambda e: zone in e.zone_hints
    return None


def categorize_endpoints(svc: ServicePortView, node_name: str, zone: Optional[str] = None) -> Categorized:
    endpoints = svc.endpoints
    cluster: tuple[EndpointView, ...] = ()
    local: tuple[EndpointView, ...] = ()
    has_any = False
    use_topology = False
    if svc.uses_cluster_endpoints:
        wanted = _topology_filter(endpoints, node_name, zone)
        use_topology = wanted is not None
        cluster = tuple(e for e in endpoints if e.ready and (wanted is None or wanted(e)))
        if not cluster:
            # Best effort to keep connections alive: terminating endpoints that still serve.
            cluster = tuple(e for e in endpoints if e.serving and e.terminating)
        has_any = bool(cluster)
    if not svc.uses_local_endpoints:
        return Categorized(cluster, local, cluster, has_any)

    local_ready = local_terminating = False
    for e in endpoints:
        if e.ready:
            has_any = True
            local_ready = local_ready or e.is_local
        elif e.serving and e.terminating:
            has_any = True
            local_terminating = local_terminating or e.is_local
    use_terminating = False
    if local_ready:
        local = tuple(e for e in endpoints if e.is_local and e.ready)
    elif local_terminating:
        use_terminating = True
        local = tuple(e for e in endpoints if e.is_local and e.serving and e.terminating)

    if not svc.uses_cluster_endpoints:
        return Categorized(cluster, local, local, has_any)
    if not use_topology and not use_terminating:
        # cluster then holds every ready endpoint, a superset of the local ones
        return Categorized(cluster, local, cluster, has_any)
    # kube-proxy merges through a map (random order); endpoint-string order is deterministic
    merged = {e.endpoint: e for e in cluster}
    merged.update((e.endpoint, e) for e in local)
    return Categorized(cluster, local, tuple(merged[k] for k in sorted(merged)), has_any)
