"""Semantic checks of the Lab document: addresses that fit together, nodes that can be built."""
from __future__ import annotations

import ipaddress
from typing import Optional

from netemu.spec.defaults import LAB_NAME_MAX, default_max_pods, node_pod_limit
from netemu.spec.errors import Location, Report
from netemu.spec.families import IPV4, IPV6, family_of, ipv6_only, split_dual
from netemu.spec.models import Lab
from netemu.spec.rules import IPNetwork, check_dns_label, check_dns_subdomain, parse_cidr, parse_ip, parse_port_range
from netemu.spec.validate_pods import check_labels

IPVS_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh")
MAX_NODE_POD_PREFIX = 30  # a node's pod subnet needs its bridge address and room for pods
# IPv6: a /120 holds 254 pods, an IPv4 /24's worth (kube-controller-manager's default is /64)
MAX_NODE_POD_PREFIX6 = 120
# kube-controller-manager's cidrset: an IPv6 cluster CIDR is cut into at most 2^16 node subnets
CLUSTER_SUBNET_MAX_DIFF = 16
# kube-apiserver's maxCIDRBits: a service range of at most 2^20 addresses (/108 in IPv6)
SERVICE_CIDR_MAX_BITS = 20
# IPv6 ranges that cannot be a lab's: they mean something else to every host
RESERVED6 = (("::/127", "the unspecified and loopback addresses"), ("::ffff:0:0/96", "IPv4-mapped addresses"),
             ("fe80::/10", "link-local addresses"), ("ff00::/8", "multicast addresses"))
# the examples in messages: the IPv4 field's key, its default, and an IPv6 twin (topologies' dual-stack lab)
DUAL_EXAMPLES = {"network": ("192.168.1.0/24", "fd00:192:168:1::/64"), "gateway": ("192.168.1.1", "fd00:192:168:1::1"),
                 "podCIDR": ("172.16.0.0/16", "fd00:10:244::/56"), "serviceCIDR": ("10.96.0.0/12", "fd00:10:96::/112"),
                 "ip": ("192.168.1.101", "fd00:192:168:1::101")}
NOT_BUILT_PRIMARY6 = "IPv6-primary labs are not built yet: write IPv4 first, e.g."
# the examples for an IPv6-only lab's fields (netemu.spec.defaults' IPv6-only defaults)
V6ONLY_EXAMPLES = {"network": "fd00:192:168:1::/64", "gateway": "fd00:192:168:1::1", "podCIDR": "fd00:10:244::/56",
                   "serviceCIDR": "fd00:10:96::/112", "ip": "fd00:192:168:1::101", "clusterDNS": "fd00:10:96::a"}


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
    if _ipv6_only_lab(spec):
        _validate_ipv6_only(lab, loc, report)
        _check_settings(lab, loc, report)
        return
    ranges = {key: None if _whole_value(getattr(spec, attr), f"spec.{key}", getattr(spec, attr + "6"), loc, report)
              else _cidr(getattr(spec, attr), f"spec.{key}", loc, report)
              for key, attr in (("network", "network"), ("podCIDR", "pod_cidr"), ("serviceCIDR", "service_cidr"))}
    named = list(ranges.items())
    for i, (a, net_a) in enumerate(named):
        for b, net_b in named[i + 1:]:
            if net_a and net_b and net_a.overlaps(net_b):
                report.error(loc, f"spec.{b}", f"{net_b} overlaps spec.{a} {net_a}: the ranges must be disjoint")
    network = ranges["network"]
    gateway, why = (None, None) if _whole_value(spec.gateway, "spec.gateway", spec.gateway6, loc, report) \
        else parse_ip(spec.gateway)
    if why:
        report.error(loc, "spec.gateway", why)
    elif gateway is not None and network and not _usable(gateway, network):
        report.error(loc, "spec.gateway", f"{gateway} must be a host address inside spec.network {network}")
    _check_nodes(lab, network, gateway, loc, report)
    _check_routers(lab, network, gateway, loc, report)
    _check_pod_cidr(lab, ranges["podCIDR"], loc, report)
    _validate_lab6(lab, loc, report)
    service_cidr = ranges["serviceCIDR"]
    dns, why = parse_ip(spec.cluster_dns)
    if family_of(str(spec.cluster_dns)) == IPV6:
        report.error(loc, "spec.clusterDNS", f"must be an IPv4 address, got {spec.cluster_dns!r}: kube-dns's Service "
                                             f"is SingleStack in the lab's primary family (IPv4), as kubeadm makes it")
    elif why:
        report.error(loc, "spec.clusterDNS", why)
    elif service_cidr and not _usable(dns, service_cidr):
        report.error(loc, "spec.clusterDNS", f"{dns} must be a host address inside spec.serviceCIDR {service_cidr}")
    _check_settings(lab, loc, report)


def _check_settings(lab: Lab, loc: Location, report: Report) -> None:
    """The settings that have no family."""
    spec = lab.spec
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


def _check_nodes(lab: Lab, network: Optional[IPNetwork], gateway, loc: Location, report: Report,
                 six: bool = False) -> None:
    """six: an IPv6-only lab's nodes (IPv6 addresses in ip, pod subnets of 128-bit addresses)."""
    nodes = lab.spec.nodes
    if nodes is None:
        if six and network is not None:
            report.error(loc, "spec.nodes", f"no nodes: the default nodes (::10, ::101-::103) do not fit in "
                                            f"spec.network {lab.spec.network}; list the nodes")
            return
        if "," in str(lab.spec.network) or family_of(str(lab.spec.network)) == IPV6:
            return  # a value not split into IPv4 and IPv6: its own error says what to write
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
        _check_resources(node, path, lab.spec.node_pod_prefix, loc, report, 128 if six else 32)
        if node.taints:
            from netemu.spec.validate_scheduling import check_taint_list

            check_taint_list(node.taints, f"{path}.taints", loc, report)
        if six:
            ip = _lab_address6(node.ip, f"{path}.ip", network, gateway, loc, report)
        else:
            ip = None if _whole_value(node.ip, f"{path}.ip", node.ip6, loc, report) else \
                _lab_address(node.ip, f"{path}.ip", network, gateway, loc, report)
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
        ip = None if _whole_value(r.ip, f"{path}.ip", r.ip6, loc, report) else \
            _lab_address(r.ip, f"{path}.ip", network, gateway, loc, report)
        if ip is None:
            continue
        if str(ip) in ips:
            report.error(loc, f"{path}.ip", f"{ip} is taken (also {ips[str(ip)]})")
        ips.setdefault(str(ip), path)
        if r.host_asn is not None and not r.upstream:
            report.error(loc, f"{path}.hostASN", "the host's ASN is for the upstream session: set upstream: true")
        elif r.host_asn is not None and not 1 <= r.host_asn <= ASN_MAX:
            report.error(loc, f"{path}.hostASN", f"must be between 1 and {ASN_MAX}, got {r.host_asn}")
        if r.upstream:  # the host has one BGP session per lab (its bgpd peers with this router only)
            first = next(j for j, o in enumerate(lab.spec.routers) if o.upstream)
            if first != i:
                report.error(loc, f"{path}.upstream", f"only one router may have the host's BGP session "
                                                      f"(spec.routers[{first}] has it)")


RESOURCE_NAMES = ("cpu", "memory", "pods", "ephemeral-storage")


def _check_resources(node, path: str, node_pod_prefix: int, loc: Location, report: Report, bits: int = 32) -> None:
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
    if node_pod_prefix <= (MAX_NODE_POD_PREFIX6 if bits == 128 else MAX_NODE_POD_PREFIX):
        _check_pods(node, parsed, path, node_pod_prefix, loc, report, bits)  # else nodePodPrefix's error


def _check_pods(node, parsed: dict[str, dict], path: str, node_pod_prefix: int, loc: Location,
                report: Report, bits: int = 32) -> None:
    """Each pod takes an address of its node's pod subnet and a port of the node's bridge: pods past
    either would fail at sandbox creation for ever, so such a capacity is refused here."""
    limit, why = node_pod_limit(node_pod_prefix, bits)
    for part in ("capacity", "allocatable"):
        pods = (parsed.get(part) or {}).get("pods")
        if pods is not None and pods > limit:
            got = getattr(node, part)["pods"]
            report.error(loc, f"{path}.{part}.pods", f"must be <= {limit}, got {got}: {why}")
    default = default_max_pods(node_pod_prefix, bits)
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


# --------------------------------------------------------------------------- dual-stack
def _whole_value(value, path: str, twin_value: Optional[str], loc: Location, report: Report) -> bool:
    """A value of an IPv4 field that the loader left whole because it is not "IPv4,IPv6" (two of one
    family, IPv6 first, more than two, IPv6 alone), or because the IPv6 twin was written as well. True when
    it is one (and was reported): the IPv4 checks then say nothing more about it."""
    text = str(value)
    parts = [p.strip() for p in text.split(",")]
    families = [family_of(p) for p in parts]
    key = path.rsplit(".", 1)[-1]
    v4_example, v6_example = DUAL_EXAMPLES.get(key, DUAL_EXAMPLES["ip"])
    if len(parts) > 2:
        # kube-apiserver: "--service-cluster-ip-range must not contain more than two entries"
        report.error(loc, path, f"must not contain more than two entries (one IPv4, then one IPv6), got {text!r}")
    elif "" in parts and len(parts) > 1:
        report.error(loc, path, f"has an empty entry, got {text!r}: write one IPv4, then one IPv6")
    elif len(parts) == 2 and families[0] == families[1]:
        # kube-apiserver's words for --service-cluster-ip-range[0] and [1]
        report.error(loc, path, f"[0] {parts[0]} and [1] {parts[1]} must be of different IP family "
                                f"(one IPv4, then one IPv6)")
    elif families == [IPV6, IPV4]:
        report.error(loc, path, f"{NOT_BUILT_PRIMARY6} {key}: {parts[1]},{parts[0]}")
    elif families == [IPV6]:
        # (an IPv6 network makes an IPv6-only lab, validated apart: here the network is IPv4)
        report.error(loc, path, f"is IPv6 but spec.network is IPv4: a dual-stack lab writes IPv4 first, e.g. "
                                f"{key}: {v4_example},{text} (an IPv6-only lab has an IPv6 spec.network too)")
    elif split_dual(text) is not None:
        # "v4,v6" that the loader did not split: the IPv6 twin is written too
        report.error(loc, path, f"{text!r} gives an IPv6 value and {path}6 is set too ({twin_value}): write the "
                                f"IPv6 value once, in one place")
    else:
        return False
    return True


def _reserved6(net) -> Optional[str]:
    for cidr, what in RESERVED6:
        if net.overlaps(ipaddress.ip_network(cidr)):
            return f"{net} overlaps {cidr} ({what})"
    return None


def _cidr6(value: str, path: str, loc: Location, report: Report,
           example: Optional[str] = None) -> Optional[ipaddress.IPv6Network]:
    """An IPv6 network in CIDR form (a twin field, or an IPv6-only lab's field with its example), or
    None after reporting why not."""
    text = str(value)
    example = example or DUAL_EXAMPLES[path[len("spec."):-1]][1]
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        iface = None
    if iface is None or iface.version != 6:
        report.error(loc, path, f"must be an IPv6 CIDR like {example}, got {text!r}")
        return None
    if "/" not in text:
        report.error(loc, path, f"must be a CIDR with a prefix length, like {text}/64, got {text!r}")
        return None
    if iface.ip != iface.network.network_address:
        report.error(loc, path, f"has host bits set: did you mean {iface.network}?")
        return None
    if (why := _reserved6(iface.network)) is not None:
        report.error(loc, path, f"{why}: use a unique local range (fd00::/8) such as {example}")
        return None
    return iface.network


def _ip6(value: str, path: str, loc: Location, report: Report) -> Optional[ipaddress.IPv6Address]:
    try:
        ip = ipaddress.ip_address(str(value))
    except ValueError:
        ip = None
    if ip is None or ip.version != 6:
        report.error(loc, path, f"must be an IPv6 address, got {value!r}")
        return None
    return ip


def _validate_lab6(lab: Lab, loc: Location, report: Report) -> None:
    """The IPv6 half of a dual-stack lab (IPv4 primary): all three ranges or none, each IPv6 and disjoint,
    gateway6 and the nodes' and routers' ip6 hosts of network6, node subnets kube-controller-manager can
    cut from podCIDR6, a serviceCIDR6 kube-apiserver accepts."""
    spec = lab.spec
    members = [(f"spec.nodes[{i}]", n) for i, n in enumerate(spec.nodes or [])] + \
              [(f"spec.routers[{i}]", r) for i, r in enumerate(spec.routers or [])]
    ranges6 = {"network6": spec.network6, "podCIDR6": spec.pod_cidr6, "serviceCIDR6": spec.service_cidr6}
    given = [f"spec.{k}" for k, v in ranges6.items() if v]
    if not given:
        # an IPv4-only lab: IPv6 settings alone would be silently ignored
        stray = [("spec.gateway6", spec.gateway6)] + [(f"{p}.ip6", m.ip6) for p, m in members]
        if "node_pod_prefix6" in spec.model_fields_set:
            stray.append(("spec.nodePodPrefix6", spec.node_pod_prefix6))
        for path, value in stray:
            if value is not None:
                report.error(loc, path, "is set, but the lab is IPv4-only: a dual-stack lab sets spec.network6, "
                                        "spec.podCIDR6 and spec.serviceCIDR6 (e.g. podCIDR: 172.16.0.0/16,fd00:10:244::/56)")
        return
    nets: dict[str, Optional[ipaddress.IPv6Network]] = {}
    for key, value in ranges6.items():
        if not value:
            v4_key = key[:-1]
            v4, v6 = DUAL_EXAMPLES[v4_key]
            report.error(loc, f"spec.{key}", f"must be set too: the lab is dual-stack ({', '.join(given)} set) and "
                                             f"each of network, podCIDR and serviceCIDR needs its IPv6 range, "
                                             f"e.g. {v4_key}: {v4},{v6}")
            nets[key] = None
        else:
            nets[key] = _cidr6(value, f"spec.{key}", loc, report)
    named = list(nets.items())
    for i, (a, net_a) in enumerate(named):
        for b, net_b in named[i + 1:]:
            if net_a and net_b and net_a.overlaps(net_b):
                report.error(loc, f"spec.{b}", f"{net_b} overlaps spec.{a} {net_a}: the ranges must be disjoint")
    network6 = nets["network6"]
    gateway6 = None
    if spec.gateway6 is not None:
        gateway6 = _ip6(spec.gateway6, "spec.gateway6", loc, report)
        if gateway6 is not None and network6 is not None and not _usable6(gateway6, network6):
            report.error(loc, "spec.gateway6", f"{gateway6} must be a host address inside spec.network6 {network6}")
    _check_members6(members, network6, gateway6, loc, report)
    _check_pod_cidr6(lab, nets["podCIDR6"], loc, report)
    service6 = nets["serviceCIDR6"]
    if service6 is not None and service6.max_prefixlen - service6.prefixlen > SERVICE_CIDR_MAX_BITS:
        least = service6.max_prefixlen - SERVICE_CIDR_MAX_BITS
        report.error(loc, "spec.serviceCIDR6", f"{service6} is too large: kube-apiserver refuses it (specified "
                                               f"--service-cluster-ip-range[1] is too large; for 128-bit addresses, "
                                               f"the mask must be >= {least}), e.g. {DUAL_EXAMPLES['serviceCIDR'][1]}")


def _usable6(ip: ipaddress.IPv6Address, net: ipaddress.IPv6Network) -> bool:
    """A host of an IPv6 network: inside it and not its first address (the subnet-router anycast address);
    IPv6 has no broadcast, so the last address is a host's."""
    return ip in net and ip != net.network_address


def _check_members6(members, network6, gateway6, loc: Location, report: Report) -> None:
    """Each node's and router's ip6: an IPv6 host of network6, not the gateway's, nobody else's."""
    taken: dict[str, str] = {}
    for path, m in members:
        if m.ip6 is None:
            if network6 is not None and parse_ip(m.ip)[0] is not None:  # else its ip's error says enough
                last = str(m.ip).rsplit(".", 1)[-1]
                report.error(loc, f"{path}.ip6", f"has no IPv6 address: the default (spec.network6 and the IPv4 "
                                                 f"address's last number, ::{last}) is not inside {network6}; write "
                                                 f"ip: {m.ip},<an IPv6 address of {network6}>")
            continue
        ip6 = _ip6(m.ip6, f"{path}.ip6", loc, report)
        if ip6 is None:
            continue
        if network6 is not None and not _usable6(ip6, network6):
            report.error(loc, f"{path}.ip6", f"{ip6} must be a host address inside spec.network6 {network6}")
        if gateway6 is not None and ip6 == gateway6:
            report.error(loc, f"{path}.ip6", f"{ip6} is the gateway6 (the host's IPv6 address on the lab network)")
        if str(ip6) in taken:
            report.error(loc, f"{path}.ip6", f"{ip6} is taken (also {taken[str(ip6)]})")
        taken.setdefault(str(ip6), path)


def pod_addresses6(node_pod_prefix6: int) -> int:
    """The pod addresses of a node's IPv6 /node_pod_prefix6 subnet: all but its first (the subnet-router
    anycast address) and ::1 (cni0's); IPv6 has no broadcast address."""
    return max(0, 2 ** (128 - node_pod_prefix6) - 2)


def _check_pod_cidr6(lab: Lab, pod_cidr6: Optional[ipaddress.IPv6Network], loc: Location, report: Report) -> None:
    spec = lab.spec
    prefix = spec.node_pod_prefix6
    if pod_cidr6 is None:
        return
    if not _check_node_subnets6(len(spec.nodes or []), pod_cidr6, prefix, "spec.nodePodPrefix6", "spec.podCIDR6",
                                loc, report):
        return
    if spec.node_pod_prefix <= MAX_NODE_POD_PREFIX:  # else spec.nodePodPrefix's own error says so
        # every pod takes an address of each family: the IPv6 subnet must hold as many as the node can
        pods, _ = node_pod_limit(spec.node_pod_prefix)
        have = pod_addresses6(prefix)
        if have < pods:
            longest = next(p for p in range(MAX_NODE_POD_PREFIX6, 0, -1) if pod_addresses6(p) >= pods)
            report.error(loc, "spec.nodePodPrefix6",
                         f"a /{prefix} has {have} pod addresses, fewer than the {pods} pods a node can hold "
                         f"(spec.nodePodPrefix /{spec.node_pod_prefix}): every pod takes an IPv6 address too; "
                         f"use /{longest} or shorter")


# --------------------------------------------------------------------------- IPv6-only
def _ipv6_only_lab(spec) -> bool:
    """An IPv6 spec.network written alone: the lab is IPv6-only ("v6,v4" is IPv6-primary, refused by the
    IPv4 path's checks of whole values)."""
    return ipv6_only(spec) and "," not in str(spec.network)


def _validate_ipv6_only(lab: Lab, loc: Location, report: Report) -> None:
    """An IPv6-only lab: network, podCIDR and serviceCIDR IPv6 and disjoint, the gateway and the nodes'
    ip IPv6 hosts of network, node subnets kube-controller-manager can cut from podCIDR (nodePodPrefix,
    default /64), a serviceCIDR kube-apiserver accepts, clusterDNS an IPv6 address of it; the dual-stack
    twins unset; what is not built for IPv6 (routers, IPVS, an uplink) refused."""
    spec = lab.spec
    members = [(f"spec.nodes[{i}]", n) for i, n in enumerate(spec.nodes or [])] + \
              [(f"spec.routers[{i}]", r) for i, r in enumerate(spec.routers or [])]
    twins = [("spec.network6", spec.network6), ("spec.gateway6", spec.gateway6), ("spec.podCIDR6", spec.pod_cidr6),
             ("spec.serviceCIDR6", spec.service_cidr6)] + [(f"{p}.ip6", m.ip6) for p, m in members]
    if "node_pod_prefix6" in spec.model_fields_set:
        twins.append(("spec.nodePodPrefix6", spec.node_pod_prefix6))
    for path, value in twins:
        if value is not None:
            field = path.rsplit(".", 1)[-1][:-1]
            report.error(loc, path, f"is set, but the lab is IPv6-only (spec.network is IPv6): its IPv6 values go in "
                                    f"{field} itself; a dual-stack lab writes IPv4 first (e.g. network: "
                                    f"{DUAL_EXAMPLES['network'][0]},{DUAL_EXAMPLES['network'][1]})")
    nets: dict[str, Optional[ipaddress.IPv6Network]] = {}
    for key, attr in (("network", "network"), ("podCIDR", "pod_cidr"), ("serviceCIDR", "service_cidr")):
        text = str(getattr(spec, attr))
        nets[key] = None
        if "," in text:
            report.error(loc, f"spec.{key}", f"has more than one entry, got {text!r}: an IPv6-only lab has one IPv6 "
                                             f"range here; a dual-stack lab writes IPv4 first, e.g. {key}: "
                                             f"{DUAL_EXAMPLES[key][0]},{DUAL_EXAMPLES[key][1]}")
        elif family_of(text) != IPV6:
            report.error(loc, f"spec.{key}", f"must be IPv6 like spec.network (an IPv6-only lab), e.g. {key}: "
                                             f"{V6ONLY_EXAMPLES[key]}, got {text!r}")
        else:
            nets[key] = _cidr6(text, f"spec.{key}", loc, report, V6ONLY_EXAMPLES[key])
    named = list(nets.items())
    for i, (a, net_a) in enumerate(named):
        for b, net_b in named[i + 1:]:
            if net_a and net_b and net_a.overlaps(net_b):
                report.error(loc, f"spec.{b}", f"{net_b} overlaps spec.{a} {net_a}: the ranges must be disjoint")
    network = nets["network"]
    gateway = _ip6(spec.gateway, "spec.gateway", loc, report)
    if gateway is not None and network is not None and not _usable6(gateway, network):
        report.error(loc, "spec.gateway", f"{gateway} must be a host address inside spec.network {network}")
    _check_nodes(lab, network, gateway, loc, report, six=True)
    if spec.routers:
        report.error(loc, "spec.routers", "routers (MetalLB's BGP mode) in an IPv6-only lab are not built yet")
    pod_cidr = nets["podCIDR"]
    if pod_cidr is not None:
        _check_node_subnets6(len(spec.nodes or []), pod_cidr, spec.node_pod_prefix, "spec.nodePodPrefix",
                             "spec.podCIDR", loc, report)
    service = nets["serviceCIDR"]
    if service is not None and service.max_prefixlen - service.prefixlen > SERVICE_CIDR_MAX_BITS:
        least = service.max_prefixlen - SERVICE_CIDR_MAX_BITS
        report.error(loc, "spec.serviceCIDR", f"{service} is too large: kube-apiserver refuses it (specified "
                                              f"--service-cluster-ip-range[0] is too large; for 128-bit addresses, "
                                              f"the mask must be >= {least}), e.g. {V6ONLY_EXAMPLES['serviceCIDR']}")
    dns = None
    if family_of(str(spec.cluster_dns)) != IPV6:
        report.error(loc, "spec.clusterDNS", f"must be an IPv6 address, got {spec.cluster_dns!r}: kube-dns's Service "
                                             f"is SingleStack in the lab's primary family (IPv6), as kubeadm makes "
                                             f"it, e.g. clusterDNS: {V6ONLY_EXAMPLES['clusterDNS']}")
    else:
        dns = _ip6(spec.cluster_dns, "spec.clusterDNS", loc, report)
    if dns is not None and service is not None and not _usable6(dns, service):
        report.error(loc, "spec.clusterDNS", f"{dns} must be a host address inside spec.serviceCIDR {service}")
    if spec.proxy_mode == "ipvs":
        report.error(loc, "spec.proxyMode", "ipvs in an IPv6-only lab is not built yet (kube-proxy's IPVS mode "
                                            "applies IPv4 only here): use iptables or nftables")
    if spec.uplink:
        report.error(loc, "spec.uplink", "an uplink in an IPv6-only lab is not built yet")


def _lab_address6(text: str, path: str, network, gateway, loc: Location, report: Report):
    """An IPv6-only lab's node address: an IPv6 host of spec.network, not the gateway's."""
    if "," in str(text):
        report.error(loc, path, f"has more than one address, got {text!r}: an IPv6-only lab's node has one IPv6 "
                                f"address, e.g. ip: {V6ONLY_EXAMPLES['ip']}")
        return None
    ip = _ip6(text, path, loc, report)
    if ip is None:
        return None
    if network is not None and not _usable6(ip, network):
        report.error(loc, path, f"{ip} must be a host address inside spec.network {network}")
    if gateway is not None and ip == gateway:
        report.error(loc, path, f"{ip} is the gateway (the host's address on the lab network)")
    return ip


def _check_node_subnets6(count: int, pod_cidr6: ipaddress.IPv6Network, prefix: int, prefix_path: str,
                         cidr_path: str, loc: Location, report: Report) -> bool:
    """Node subnets of /prefix cut from an IPv6 pod CIDR as kube-controller-manager cuts them: at most 16
    bits longer, at most /120, room for every node. False when the prefix itself is wrong."""
    key = cidr_path[len("spec."):]
    if not pod_cidr6.prefixlen <= prefix <= MAX_NODE_POD_PREFIX6:
        report.error(loc, prefix_path, f"must be between the {key}'s prefix /{pod_cidr6.prefixlen} "
                                       f"and /{MAX_NODE_POD_PREFIX6}, got /{prefix}")
        return False
    if prefix - pod_cidr6.prefixlen > CLUSTER_SUBNET_MAX_DIFF:
        report.error(loc, prefix_path,
                     f"/{prefix} is more than {CLUSTER_SUBNET_MAX_DIFF} bits longer than {cidr_path} {pod_cidr6}: "
                     f"kube-controller-manager refuses it (New CIDR set failed; the node CIDR size is too big); "
                     f"use a {key} of /{prefix - CLUSTER_SUBNET_MAX_DIFF} or longer, e.g. /56 with /64")
        return False
    room = 2 ** (prefix - pod_cidr6.prefixlen)
    if count > room:
        report.error(loc, cidr_path, f"{pod_cidr6} has room for {room} node subnets of /{prefix}, "
                                     f"but the lab has {count} nodes")
    return True
