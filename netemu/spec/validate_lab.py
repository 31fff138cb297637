"""Semantic checks of the Lab document: addresses that fit together, nodes that can be built."""
from __future__ import annotations

import ipaddress
from typing import Optional

from netemu.spec.defaults import LAB_NAME_MAX, default_max_pods, node_pod_limit
from netemu.spec.errors import Location, Report
from netemu.spec.models import Lab
from netemu.spec.rules import IPNetwork, check_dns_label, check_dns_subdomain, parse_cidr, parse_ip, parse_port_range
from netemu.spec.validate_pods import check_labels

IPVS_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh")
MAX_NODE_POD_PREFIX = 30  # a node's pod subnet needs its bridge address and room for pods


def check_lab_name(name: str) -> Optional[str]:
    if len(name) > LAB_NAME_MAX:
        return f"must be no more than {LAB_NAME_MAX} characters (kernel object names carry it), got {len(name)}"
    return check_dns_label(name)


def _cidr(value: str, path: str, loc: Location, report: Report) -> Optional[IPNetwork]:
    net, why = parse_cidr(value)
    if why:
        report.error(loc, path, why)
    return net


def _usable(ip: ipaddress.IPv4Address, net: IPNetwork) -> bool:
    return ip in net and ip not in (net.network_address, net.broadcast_address)


def validate_lab(lab: Lab, loc: Location, report: Report) -> None:
    spec = lab.spec
    if lab.metadata.name and (why := check_lab_name(lab.metadata.name)) is not None:
        report.error(loc, "metadata.name", why)
    ranges = {"network": _cidr(spec.network, "spec.network", loc, report),
              "podCIDR": _cidr(spec.pod_cidr, "spec.podCIDR", loc, report),
              "serviceCIDR": _cidr(spec.service_cidr, "spec.serviceCIDR", loc, report)}
    named = list(ranges.items())
    for i, (a, net_a) in enumerate(named):
        for b, net_b in named[i + 1:]:
            if net_a and net_b and net_a.overlaps(net_b):
                report.error(loc, f"spec.{b}", f"{net_b} overlaps spec.{a} {net_a}: the ranges must be disjoint")
    network = ranges["network"]
    gateway, why = parse_ip(spec.gateway)
    if why:
        report.error(loc, "spec.gateway", why)
    elif network and not _usable(gateway, network):
        report.error(loc, "spec.gateway", f"{gateway} must be a host address inside spec.network {network}")
    _check_nodes(lab, network, gateway, loc, report)
    _check_routers(lab, network, gateway, loc, report)
    _check_pod_cidr(lab, ranges["podCIDR"], loc, report)
    service_cidr = ranges["serviceCIDR"]
    dns, why = parse_ip(spec.cluster_dns)
    if why:
        report.error(loc, "spec.clusterDNS", why)
    elif service_cidr and not _usable(dns, service_cidr):
        report.error(loc, "spec.clusterDNS", f"{dns} must be a host address inside spec.serviceCIDR {service_cidr}")
    if (why := check_dns_subdomain(spec.cluster_domain)) is not None:
        report.error(loc, "spec.clusterDomain", why)
    _, why = parse_port_range(spec.node_port_range)
    if why:
        report.error(loc, "spec.nodePortRange", why)
    if spec.ipvs_scheduler not in IPVS_SCHEDULERS:
        report.error(loc, "spec.ipvsScheduler",
                     f"must be one of {', '.join(IPVS_SCHEDULERS)}, got {spec.ipvs_scheduler!r}")
    for name, value in (("dnsTTL", spec.dns_ttl), ("podEvictionTimeoutSeconds", spec.pod_eviction_timeout_seconds),
                        ("restartBackoffSeconds", spec.restart_backoff_seconds),
                        ("hpaDownscaleStabilizationSeconds", spec.hpa_downscale_stabilization_seconds),
                        ("hpaTolerance", spec.hpa_tolerance),
                        ("hpaCpuInitializationPeriodSeconds", spec.hpa_cpu_initialization_period_seconds),
                        ("hpaInitialReadinessDelaySeconds", spec.hpa_initial_readiness_delay_seconds)):
        if value < 0:
            report.error(loc, f"spec.{name}", f"must be >= 0, got {value}")
    for name, value in (("metricResolutionSeconds", spec.metric_resolution_seconds),
                        ("hpaSyncPeriodSeconds", spec.hpa_sync_period_seconds)):
        if value <= 0:
            report.error(loc, f"spec.{name}", f"must be > 0, got {value}")
    if spec.restart_backoff_max_seconds < spec.restart_backoff_seconds:
        report.error(loc, "spec.restartBackoffMaxSeconds", "must be >= restartBackoffSeconds")


def _check_nodes(lab: Lab, network: Optional[IPNetwork], gateway, loc: Location, report: Report) -> None:
    nodes = lab.spec.nodes
    if nodes is None:
        report.error(loc, "spec.nodes", f"no nodes: the default nodes (.10, .101-.103) do not fit in "
                                        f"spec.network {lab.spec.network}; list the nodes")
        return
    names: dict[str, int] = {}
    ips: dict[str, int] = {}
    for i, node in enumerate(nodes):
        path = f"spec.nodes[{i}]"
        if (why := check_dns_label(node.name)) is not None:
            report.error(loc, f"{path}.name", why)
        elif node.name in names:
            report.error(loc, f"{path}.name",
                         f"duplicate node name {node.name!r} (also spec.nodes[{names[node.name]}])")
        names.setdefault(node.name, i)
        check_labels(node.labels, f"{path}.labels", loc, report)
        _check_resources(node, path, lab.spec.node_pod_prefix, loc, report)
        if node.taints:
            from netemu.spec.validate_scheduling import check_taint_list

            check_taint_list(node.taints, f"{path}.taints", loc, report)
        ip = _lab_address(node.ip, f"{path}.ip", network, gateway, loc, report)
        if ip is None:
            continue
        if str(ip) in ips:
            report.error(loc, f"{path}.ip", f"duplicate node address {ip} (also spec.nodes[{ips[str(ip)]}])")
        ips.setdefault(str(ip), i)
    if not any(n.role == "worker" for n in nodes):
        report.error(loc, "spec.nodes", "needs at least one node with role worker (pods run on workers)")


ASN_MAX = 4294967295


def _lab_address(text: str, path: str, network: Optional[IPNetwork], gateway, loc: Location, report: Report):
    """A node's or router's address on the lab segment: parsed, a host of spec.network, not the gateway.
    None when it does not parse (the other checks then say nothing more)."""
    ip, why = parse_ip(text)
    if why:
        report.error(loc, path, why)
        return None
    if network and not _usable(ip, network):
        report.error(loc, path, f"{ip} must be a host address inside spec.network {network}")
    if gateway is not None and ip == gateway:
        report.error(loc, path, f"{ip} is the gateway (the host's address on the lab network)")
    return ip


def _check_routers(lab: Lab, network: Optional[IPNetwork], gateway, loc: Location, report: Report) -> None:
    """Routers: names unique among nodes and routers (both are namespaces ne-<lab>_<name>), an address on
    the lab network that nobody else has, an ASN of 1..4294967295 (32-bit ASNs, RFC 6793)."""
    nodes = lab.spec.nodes or []
    names = {n.name: f"spec.nodes[{i}]" for i, n in enumerate(nodes)}
    ips = {n.ip: f"spec.nodes[{i}]" for i, n in enumerate(nodes)}
    for i, r in enumerate(lab.spec.routers or []):
        path = f"spec.routers[{i}]"
        if (why := check_dns_label(r.name)) is not None:
            report.error(loc, f"{path}.name", why)
        elif r.name in names:
            report.error(loc, f"{path}.name", f"duplicate name {r.name!r} (also {names[r.name]}): nodes and "
                                              f"routers share one namespace each")
        names.setdefault(r.name, path)
        if not 1 <= r.asn <= ASN_MAX:
            report.error(loc, f"{path}.asn", f"must be between 1 and {ASN_MAX}, got {r.asn}")
        ip = _lab_address(r.ip, f"{path}.ip", network, gateway, loc, report)
        if ip is None:
            continue
        if str(ip) in ips:
            report.error(loc, f"{path}.ip", f"{ip} is taken (also {ips[str(ip)]})")
        ips.setdefault(str(ip), path)
        if r.upstream:
            report.error(loc, f"{path}.upstream", "a BGP session with the host is not built yet: leave it false")


RESOURCE_NAMES = ("cpu", "memory", "pods", "ephemeral-storage")


def _check_resources(node, path: str, node_pod_prefix: int, loc: Location, report: Report) -> None:
    """capacity and allocatable: quantities Kubernetes accepts, allocatable within capacity, whole pods
    and no more than the node can hold."""
    from netemu.spec.autoscaling import QuantityError, parse_quantity
    from netemu.spec.rules import check_label_key

    parsed: dict[str, dict] = {}
    for part in ("capacity", "allocatable"):
        for name, q in (getattr(node, part) or {}).items():
            qpath = f"{path}.{part}.{name}" if "/" not in name and "." not in name else f'{path}.{part}["{name}"]'
            if name not in RESOURCE_NAMES and not name.startswith("hugepages-") and (
                    "/" not in name or check_label_key(name) is not None):
                report.error(loc, qpath, "must be cpu, memory, pods, ephemeral-storage, hugepages-<size> or an "
                                         "extended resource (a domain-prefixed name such as example.com/gpu)")
                continue
            try:
                v = parse_quantity(q)
            except QuantityError as e:
                report.error(loc, qpath, str(e))
                continue
            if v < 0:
                report.error(loc, qpath, f"must be >= 0, got {q}")
            elif name == "pods" and v.denominator != 1:
                report.error(loc, qpath, f"must be a whole number of pods, got {q}")
            parsed.setdefault(part, {})[name] = v
    cap = parsed.get("capacity") or {}
    for name, v in (parsed.get("allocatable") or {}).items():
        if name in cap and v > cap[name]:
            report.error(loc, f"{path}.allocatable.{name}",
                         f"must be <= capacity ({(node.capacity or {})[name]}), got {(node.allocatable or {})[name]}")
    if node_pod_prefix <= MAX_NODE_POD_PREFIX:  # else spec.nodePodPrefix's own error says so
        _check_pods(node, parsed, path, node_pod_prefix, loc, report)


def _check_pods(node, parsed: dict[str, dict], path: str, node_pod_prefix: int, loc: Location,
                report: Report) -> None:
    """Each pod takes an address of its node's pod subnet and a port of the node's bridge: pods past
    either would fail at sandbox creation for ever, so such a capacity is refused here."""
    limit, why = node_pod_limit(node_pod_prefix)
    for part in ("capacity", "allocatable"):
        pods = (parsed.get(part) or {}).get("pods")
        if pods is not None and pods > limit:
            got = getattr(node, part)["pods"]
            report.error(loc, f"{path}.{part}.pods", f"must be <= {limit}, got {got}: {why}")
    default = default_max_pods(node_pod_prefix)
    pods = (parsed.get("allocatable") or {}).get("pods")
    if "pods" not in (node.capacity or {}) and pods is not None and default < pods <= limit:
        report.error(loc, f"{path}.allocatable.pods", f"must be <= capacity ({default}, kubelet's maxPods for "
                                                      f"this pod subnet), got {node.allocatable['pods']}")


def _check_pod_cidr(lab: Lab, pod_cidr: Optional[IPNetwork], loc: Location, report: Report) -> None:
    prefix = lab.spec.node_pod_prefix
    if pod_cidr is None:
        return
    if not pod_cidr.prefixlen <= prefix <= MAX_NODE_POD_PREFIX:
        report.error(loc, "spec.nodePodPrefix", f"must be between the podCIDR's prefix /{pod_cidr.prefixlen} "
                                                f"and /{MAX_NODE_POD_PREFIX}, got /{prefix}")
        return
    count = len(lab.spec.nodes or [])
    room = 2 ** (prefix - pod_cidr.prefixlen)
    if count > room:
        report.error(loc, "spec.podCIDR", f"{pod_cidr} has room for {room} node subnets of /{prefix}, "
                                          f"but the lab has {count} nodes")
