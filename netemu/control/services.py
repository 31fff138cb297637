"""Service admission, as the API server's service REST storage does it: cluster IPs and node
ports are allocated (or the asked ones checked) when a Service is created or changed."""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Optional

from netemu.control.ipam import Exhausted, allocate_cluster_ip, allocate_node_port, in_cidr, parse_port_range
from netemu.spec.families import IPV4, IPV6, family_value, lab_families
from netemu.spec.models import K8sModel, Service
from netemu.spec.validate_services import init_ip_families, prepare_cluster_ips, upgrade_downgrade_errors

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

    # cluster IPs: ExternalName has none; None means headless; empty keeps the current or allocates
    if stype == "ExternalName":
        _external_name_fields(svc, current)
        svc.spec.cluster_ip = None
        svc.spec.cluster_ips = None
    else:
        _admit_cluster_ips(c, svc, current, others)

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


def _invalid(svc: Service, errors: list[tuple[str, str]]) -> Exception:
    """The API server's 422 for field errors: 'Service "x" is invalid: path: text' ([a, b] for several)."""
    from netemu.control.cluster import AdmissionError

    parts = [f"{path}: {text}" for path, text in errors]
    text = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return AdmissionError(f'Service "{svc.metadata.name}" is invalid: {text}')


def _external_name_fields(svc: Service, current: Optional[Service]) -> None:
    """An ExternalName Service has no IP families: set on create they are refused (ValidateService); an
    update that carries the old type's values unchanged has them dropped (dropTypeDependentFields)."""
    spec, old = svc.spec, current.spec if current is not None else None
    carried = old is not None and (old.type or "ClusterIP") != "ExternalName"
    errors = []
    if spec.ip_families and not (carried and list(spec.ip_families) == list(old.ip_families or [])):
        errors.append(("spec.ipFamilies", "Forbidden: may not be set for ExternalName services"))
    if spec.ip_family_policy is not None and not (carried and spec.ip_family_policy == old.ip_family_policy):
        errors.append(("spec.ipFamilyPolicy", "Forbidden: may not be set for ExternalName services"))
    if errors:
        raise _invalid(svc, errors)
    spec.ip_families = None
    spec.ip_family_policy = None


def _admit_cluster_ips(c: "Cluster", svc: Service, current: Optional[Service], others: list[Service]) -> None:
    """ipFamilyPolicy and ipFamilies defaulted for the lab's families, then one cluster IP per family
    (asked for, kept, or allocated), in ipFamilies order; clusterIP is the first."""
    from netemu.control.cluster import AdmissionError

    spec = c.lab.spec
    old = current.spec if current is not None else None
    prepare_cluster_ips(svc.spec, old)
    errors = init_ip_families(svc.spec, old, lab_families(spec))
    if not errors and old is not None:
        errors = upgrade_downgrade_errors(svc.spec, old)
    if errors:
        raise _invalid(svc, errors)
    if svc.spec.cluster_ip == "None":
        svc.spec.cluster_ips = ["None"]
        return
    # (an IPv6-only lab's IPv6 range is its serviceCIDR)
    ranges = {IPV4: family_value(spec, "service_cidr", IPV4), IPV6: family_value(spec, "service_cidr", IPV6)}
    used = {ip for s in others for ip in (s.spec.cluster_ips or [s.spec.cluster_ip]) if ip}
    asked_ips = list(svc.spec.cluster_ips or [])
    out: list[str] = []
    for i, fam in enumerate(svc.spec.ip_families or []):
        asked = asked_ips[i] if i < len(asked_ips) else ""
        cidr = ranges[fam]
        if asked:
            field = "spec.clusterIP" if i == 0 else f"spec.clusterIPs[{i}]"
            if not in_cidr(asked, cidr):
                raise AdmissionError(f'Service "{svc.metadata.name}": {field}: Invalid value: "{asked}": '
                                     f"provided IP is not in the valid range. The range of valid IPs is {cidr}")
            if asked in used:
                raise AdmissionError(f'Service "{svc.metadata.name}": spec.clusterIPs: Invalid value: ["{asked}"]: '
                                     "failed to allocate IP: provided IP is already allocated")
            ip = str(ipaddress.ip_address(asked))
        else:
            try:
                ip = allocate_cluster_ip(cidr, used | {spec.cluster_dns}, c.store.rng)
            except Exhausted as e:
                raise AdmissionError(str(e)) from None
        out.append(ip)
    svc.spec.cluster_ips = out
    svc.spec.cluster_ip = out[0]
