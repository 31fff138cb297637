"""Service admission, as the API server's service REST storage does it: cluster IPs and node
ports are allocated (or the asked ones checked) when a Service is created or changed."""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Optional

from netemu.control.ipam import Exhausted, allocate_cluster_ip, allocate_node_port, in_cidr, parse_port_range
from netemu.spec.models import K8sModel, Service

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster


def admit(c: "Cluster", obj: K8sModel, current: Optional[K8sModel]) -> None:
    if obj.kind in ("Pod", "Job"):  # priority, default tolerations, a Job's generated selector
        from netemu.control import admission

        admission.admit(c, obj, current)
    if isinstance(obj, Service):
        _admit_service(c, obj, current if isinstance(current, Service) else None)


def _admit_service(c: "Cluster", svc: Service, current: Optional[Service]) -> None:
    from netemu.control.cluster import AdmissionError

    spec = c.lab.spec
    stype = svc.spec.type or "ClusterIP"
    me = (svc.metadata.namespace, svc.metadata.name)
    others = [s for s in c.store.list("Service") if (s.metadata.namespace, s.metadata.name) != me]

    # cluster IP: ExternalName has none; None means headless; empty keeps the current or allocates
    if stype == "ExternalName":
        svc.spec.cluster_ip = None
        svc.spec.cluster_ips = None
    elif svc.spec.cluster_ip != "None":
        asked = svc.spec.cluster_ip or (current.spec.cluster_ip if current and current.spec.cluster_ip != "None" else None)
        used = {s.spec.cluster_ip for s in others}
        if asked:
            if not in_cidr(asked, spec.service_cidr):
                raise AdmissionError(f'Service "{svc.metadata.name}": spec.clusterIP: Invalid value: "{asked}": '
                                     f"provided IP is not in the valid range. The range of valid IPs is {spec.service_cidr}")
            if asked in used:
                raise AdmissionError(f'Service "{svc.metadata.name}": spec.clusterIPs: Invalid value: ["{asked}"]: '
                                     "failed to allocate IP: provided IP is already allocated")
            ip = str(ipaddress.ip_address(asked))
        else:
            try:
                ip = allocate_cluster_ip(spec.service_cidr, used | {spec.cluster_dns}, c.store.rng)
            except Exhausted as e:
                raise AdmissionError(str(e)) from None
        svc.spec.cluster_ip = ip
        svc.spec.cluster_ips = [ip]
    else:
        svc.spec.cluster_ips = ["None"]

    # node ports: NodePort and LoadBalancer (unless allocateLoadBalancerNodePorts is false)
    wants_node_ports = stype == "NodePort" or (stype == "LoadBalancer" and svc.spec.allocate_load_balancer_node_ports is not False)
    used_ports = {(p.node_port, p.protocol or "TCP") for s in others for p in s.spec.ports or [] if p.node_port}
    lo, hi = parse_port_range(spec.node_port_range)
    previous = {(p.port, p.protocol or "TCP"): p.node_port for p in (current.spec.ports or [] if current else [])}
    mine: set[tuple[int, str]] = set()
    for p in svc.spec.ports or []:
        proto = p.protocol or "TCP"
        if not wants_node_ports:
            if p.node_port and stype not in ("NodePort", "LoadBalancer"):
                raise AdmissionError(f'Service "{svc.metadata.name}": spec.ports.nodePort: Forbidden: '
                                     f"may not be used when `type` is '{stype}'")
            continue
        if p.node_port:
            if not lo <= p.node_port <= hi:
                raise AdmissionError(f'Service "{svc.metadata.name}": spec.ports.nodePort: Invalid value: {p.node_port}: '
                                     f"provided port is not in the valid range. The range of valid ports is {lo}-{hi}")
            if (p.node_port, proto) in used_ports or (p.node_port, proto) in mine:
                raise AdmissionError(f'Service "{svc.metadata.name}": spec.ports.nodePort: Invalid value: {p.node_port}: '
                                     "provided port is already allocated")
        else:
            keep = previous.get((p.port, proto))
            if keep and (keep, proto) not in used_ports and (keep, proto) not in mine:
                p.node_port = keep
            else:
                try:
                    p.node_port = allocate_node_port(spec.node_port_range,
                                                     {n for n, _ in used_ports | mine}, c.store.rng)
                except Exhausted as e:
                    raise AdmissionError(str(e)) from None
        mine.add((p.node_port, proto))
    if current is not None:
        svc.status = current.status  # the load balancer status is not the user's to set
