"""Semantic checks of Services and EndpointSlices, one at a time; clashes between Services (node
ports, cluster IPs) are checked in :mod:`netemu.spec.validate`."""
from __future__ import annotations

import ipaddress

from netemu.spec.errors import Location, Report, join_path
from netemu.spec.models import EndpointSlice, LabSpec, Service
from netemu.spec.rules import (
    check_dns_label, check_dns_subdomain, check_port, check_port_name, parse_cidr, parse_ip, parse_port_range,
)
from netemu.spec.validate_pods import check_labels

MAX_AFFINITY_TIMEOUT = 86400  # one day, as kube-apiserver
EXTERNAL_TYPES = ("NodePort", "LoadBalancer")


def check_service(svc: Service, lab: LabSpec, loc: Location, report: Report) -> None:
    spec = svc.spec
    stype = spec.type or "ClusterIP"
    headless = spec.cluster_ip == "None"
    check_labels(spec.selector, "spec.selector", loc, report)
    _check_ports(svc, stype, headless, lab, loc, report)
    _check_cluster_ip(svc, stype, headless, lab, loc, report)
    if stype == "ExternalName":
        if not spec.external_name:
            report.error(loc, "spec.externalName", "required for type ExternalName")
        elif (why := check_dns_subdomain(spec.external_name.rstrip("."))) is not None:
            report.error(loc, "spec.externalName", why)
    _check_affinity(svc, loc, report)
    if spec.external_traffic_policy is not None and stype not in EXTERNAL_TYPES:
        report.error(loc, "spec.externalTrafficPolicy", f"may only be set for NodePort or LoadBalancer, not {stype}")
    if spec.load_balancer_source_ranges:
        if stype != "LoadBalancer":
            report.error(loc, "spec.loadBalancerSourceRanges", f"may only be set for LoadBalancer, not {stype}")
        for i, cidr in enumerate(spec.load_balancer_source_ranges):
            try:
                ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                report.lab_refuses(loc, f"spec.loadBalancerSourceRanges[{i}]",
                                   f"must be a CIDR like 10.0.0.0/8, got {cidr!r}")
    if spec.load_balancer_ip and (why := parse_ip(spec.load_balancer_ip)[1]) is not None:
        report.lab_refuses(loc, "spec.loadBalancerIP", why)
    for i, ip in enumerate(spec.external_ips or []):
        if (why := parse_ip(ip)[1]) is not None:
            report.lab_refuses(loc, f"spec.externalIPs[{i}]", why)


def _check_ports(svc: Service, stype: str, headless: bool, lab: LabSpec, loc: Location, report: Report) -> None:
    ports = svc.spec.ports or []
    if not ports and stype != "ExternalName" and not headless:
        report.error(loc, "spec.ports", "required: a Service needs at least one port (only ExternalName and "
                                        "headless Services, clusterIP: None, may have none)")
    node_port_range, _ = parse_port_range(lab.node_port_range)
    names: set[str] = set()
    seen: set[tuple[int, str]] = set()
    for i, p in enumerate(ports):
        path = f"spec.ports[{i}]"
        if (why := check_port(p.port)) is not None:
            report.error(loc, join_path(path, "port"), why)
        if len(ports) > 1 and not p.name:
            report.error(loc, join_path(path, "name"), "required when a Service has more than one port")
        if p.name:
            if (why := check_dns_label(p.name)) is not None:
                report.error(loc, join_path(path, "name"), why)
            elif p.name in names:
                report.error(loc, join_path(path, "name"), f"duplicate port name {p.name!r}")
            names.add(p.name)
        key = (p.port, p.protocol or "TCP")
        if key in seen:
            report.error(loc, path, f"duplicate port {p.port}/{key[1]}")
        seen.add(key)
        if isinstance(p.target_port, int):
            # targetPort defaults to port: a bad port is reported once, as the port
            if p.target_port != p.port and (why := check_port(p.target_port)) is not None:
                report.error(loc, join_path(path, "targetPort"), why)
        elif p.target_port is not None and (why := check_port_name(p.target_port)) is not None:
            report.error(loc, join_path(path, "targetPort"), f"a port name {why}")
        if p.node_port is not None:
            if stype not in EXTERNAL_TYPES:
                report.error(loc, join_path(path, "nodePort"),
                             f"may only be set for type NodePort or LoadBalancer, not {stype}")
            elif node_port_range and not node_port_range[0] <= p.node_port <= node_port_range[1]:
                report.lab_refuses(loc, join_path(path, "nodePort"),
                                   f"{p.node_port} is outside the lab's nodePortRange {lab.node_port_range}")


def _check_cluster_ip(svc: Service, stype: str, headless: bool, lab: LabSpec, loc: Location,
                      report: Report) -> None:
    ip_text = svc.spec.cluster_ip
    if headless and stype in EXTERNAL_TYPES:
        report.error(loc, "spec.clusterIP", f"may not be None (headless) for type {stype}")
    if not ip_text or headless:
        return
    if stype == "ExternalName":
        report.error(loc, "spec.clusterIP", "must be empty for type ExternalName")
        return
    ip, why = parse_ip(ip_text)
    if ip is None:
        report.lab_refuses(loc, "spec.clusterIP", f'{why} (or "None" for a headless Service, or empty)')
        return
    net, _ = parse_cidr(lab.service_cidr)
    if net is None:
        return  # the lab's own error says why
    if ip not in net or ip in (net.network_address, net.broadcast_address):
        report.lab_refuses(loc, "spec.clusterIP", f"{ip} is not in the lab's serviceCIDR {lab.service_cidr}")
    elif str(ip) == lab.cluster_dns:
        report.lab_refuses(loc, "spec.clusterIP", f"{ip} is the cluster DNS address (clusterDNS)")


def _check_affinity(svc: Service, loc: Location, report: Report) -> None:
    spec = svc.spec
    cfg = spec.session_affinity_config
    if spec.session_affinity == "ClientIP":
        timeout = cfg.client_ip.timeout_seconds if cfg and cfg.client_ip else None
        if timeout is not None and not 1 <= timeout <= MAX_AFFINITY_TIMEOUT:
            report.error(loc, "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                         f"must be between 1 and {MAX_AFFINITY_TIMEOUT}, got {timeout}")
    elif cfg is not None and cfg.client_ip is not None:
        report.error(loc, "spec.sessionAffinityConfig", "may only be set when sessionAffinity is ClientIP")


def check_endpoint_slice(es: EndpointSlice, loc: Location, report: Report) -> None:
    for i, ep in enumerate(es.endpoints):
        if not ep.addresses:
            report.error(loc, f"endpoints[{i}].addresses", "must have at least one address")
        if es.address_type == "IPv4":
            for j, address in enumerate(ep.addresses):
                if (why := parse_ip(address)[1]) is not None:
                    report.lab_refuses(loc, f"endpoints[{i}].addresses[{j}]", why)
    for i, p in enumerate(es.ports or []):
        if p.port is not None and (why := check_port(p.port)) is not None:
            report.error(loc, f"ports[{i}].port", why)
