"""The iptables rules of one service port, exactly as kube-proxy's syncProxyRules writes them.

One call renders everything a service port contributes: its lines in the shared top-level chains
(filter KUBE-SERVICES / KUBE-EXTERNAL-SERVICES / KUBE-NODEPORTS / KUBE-PROXY-FIREWALL, nat
KUBE-SERVICES / KUBE-NODEPORTS) and its own nat chains (KUBE-EXT, KUBE-FW, KUBE-SVC, KUBE-SVL,
KUBE-SEP). The result depends only on the port (with its endpoints) and a small RenderContext,
which is what makes per-port caching safe.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

from netemu.dataplane.proxy.addresses import IPV4, parse_cidr, parse_ip
from netemu.dataplane.proxy.iptables.chains import (
    EXT_PREFIX,
    FW_PREFIX,
    KUBE_EXTERNAL_SERVICES,
    KUBE_NODEPORTS,
    KUBE_PROXY_FIREWALL,
    KUBE_SERVICES,
    LARGE_CLUSTER_ENDPOINTS_THRESHOLD,
    LOCALHOST_NODEPORTS_COUNTER,
    SVC_PREFIX,
    SVL_PREFIX,
    endpoint_chain,
    port_proto_hash,
    probability,
)
from netemu.dataplane.proxy.topology import categorize_endpoints
from netemu.dataplane.proxy.view import NodeProxyView, ServicePortView, nodeport_cidrs

FILTER = "filter"
NAT = "nat"


@dataclass(frozen=True)
class RenderContext:
    """Node-wide facts that shape every service port's rules (a change re-renders all ports)."""

    node_name: str
    node_zone: Optional[str]
    large_cluster: bool               # drop comments from SVC/SEP rules
    masquerade_all: bool
    if_local: Optional[str]           # match "from a pod of this cluster", e.g. "-s 10.0.0.0/8"
    if_not_local: Optional[str]
    node_ip: Optional[str]            # primary node IP: loadBalancerSourceRanges may allow it
    localhost_nodeport_nfacct: bool   # extra counted rule for NodePorts on 127.0.0.0/8

    @classmethod
    def of(cls, view: NodeProxyView) -> "RenderContext":
        o = view.options
        if_local = if_not_local = None
        if o.cluster_cidr:
            cidr = parse_cidr(o.cluster_cidr.strip())
            if cidr is not None:
                if_local, if_not_local = f"-s {cidr}", f"! -s {cidr}"
        return cls(
            node_name=o.node_name,
            node_zone=o.node_zone,
            large_cluster=view.total_endpoints > LARGE_CLUSTER_ENDPOINTS_THRESHOLD,
            masquerade_all=o.masquerade_all,
            if_local=if_local,
            if_not_local=if_not_local,
            node_ip=o.primary_ip,
            localhost_nodeport_nfacct=localhost_nodeports_enabled(view) and o.nfacct,
        )


def localhost_nodeports_enabled(view: NodeProxyView) -> bool:
    """kube-proxy turns localhost NodePorts off for IPv6 and when --nodeport-addresses leaves out
    127.0.0.1 (NewProxier)."""
    o = view.options
    if o.ip_family != IPV4 or not o.localhost_nodeports:
        return False
    cidrs = nodeport_cidrs(view)
    loopback = ipaddress.IPv4Address("127.0.0.1")
    return not cidrs or any(c.prefixlen == 0 or loopback in c for c in cidrs)


@dataclass(frozen=True, slots=True)
class PortRules:
    """What one service port contributes to a sync.

    `top` holds its lines in shared top-level chains, keyed by (table, chain). `own` holds its
    nat chains in declaration order with their rules. kube-proxy writes the internal-traffic
    masquerade rule before the other own-chain rules; `masq_chain` names that chain so the
    kube-proxy emission order can be reproduced.
    """

    top: tuple[tuple[tuple[str, str], tuple[str, ...]], ...]
    filter_order: tuple[str, ...]          # filter lines in kube-proxy's emission order
    nat_top_order: tuple[str, ...]         # nat KUBE-SERVICES then KUBE-NODEPORTS lines
    own: tuple[tuple[str, tuple[str, ...]], ...]
    masq_chain: Optional[str] = None

    def own_raw(self) -> list[str]:
        """Own-chain rules in kube-proxy's write order."""
        out: list[str] = []
        skip = None
        if self.masq_chain is not None:
            for chain, rules in self.own:
                if chain == self.masq_chain:
                    out.append(rules[0])
                    skip = chain
                    break
        for chain, rules in self.own:
            out.extend(rules[1:] if chain == skip else rules)
        return out


def render_port(svc: ServicePortView, ctx: RenderContext) -> PortRules:
    """kube-proxy's per-service-port loop body of syncProxyRules, statement for statement."""
    name = svc.service_port_name
    proto = svc.protocol.lower()
    mp = f"-m {proto} -p {proto}"
    cip, port = svc.cluster_ip, svc.port
    cat = categorize_endpoints(svc, ctx.node_name, ctx.node_zone)
    h = port_proto_hash(name, proto)
    cluster_chain, local_chain = SVC_PREFIX + h, SVL_PREFIX + h
    ext_chain, fw_chain = EXT_PREFIX + h, FW_PREFIX + h

    has_endpoints = cat.has_any
    internal_chain = local_chain if svc.internal_policy_local else cluster_chain
    has_internal = has_endpoints and (not svc.internal_policy_local or bool(cat.local))
    external_policy_chain = local_chain if svc.external_policy_local else cluster_chain
    has_external = has_endpoints and (not svc.external_policy_local or bool(cat.local))
    uses_ext_chain = has_endpoints and svc.externally_accessible
    uses_fw = has_endpoints and bool(svc.load_balancer_ips) and bool(svc.load_balancer_source_ranges)
    lb_chain = fw_chain if uses_fw else ext_chain

    if not has_endpoints:
        int_target = ext_target = "REJECT"
        int_comment = ext_comment = f'"{name} has no endpoints"'
    else:
        int_target = ext_target = "DROP"
        int_comment = ext_comment = f'"{name} has no local endpoints"'

    filt: list[tuple[str, str]] = []
    nat_top: list[tuple[str, str]] = []

    # ClusterIP
    if has_internal:
        nat_top.append((KUBE_SERVICES, f'-A KUBE-SERVICES -m comment --comment "{name} cluster IP" {mp} '
                                       f'-d {cip} --dport {port} -j {internal_chain}'))
    else:
        filt.append((KUBE_SERVICES, f"-A KUBE-SERVICES -m comment --comment {int_comment} {mp} "
                                    f"-d {cip} --dport {port} -j {int_target}"))
    # external IPs
    for ip in svc.external_ips:
        if has_endpoints:
            nat_top.append((KUBE_SERVICES, f'-A KUBE-SERVICES -m comment --comment "{name} external IP" {mp} '
                                           f'-d {ip} --dport {port} -j {ext_chain}'))
        if not has_external:
            filt.append((KUBE_EXTERNAL_SERVICES, f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} "
                                                 f"{mp} -d {ip} --dport {port} -j {ext_target}"))
    # load-balancer ingress IPs
    for ip in svc.load_balancer_ips:
        if has_endpoints:
            nat_top.append((KUBE_SERVICES, f'-A KUBE-SERVICES -m comment --comment "{name} loadbalancer IP" {mp} '
                                           f'-d {ip} --dport {port} -j {lb_chain}'))
        if uses_fw:
            filt.append((KUBE_PROXY_FIREWALL, f'-A KUBE-PROXY-FIREWALL -m comment --comment "{name} traffic not '
                                              f'accepted by {fw_chain}" {mp} -d {ip} --dport {port} -j DROP'))
    if not has_external:
        for ip in svc.load_balancer_ips:
            filt.append((KUBE_EXTERNAL_SERVICES, f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} "
                                                 f"{mp} -d {ip} --dport {port} -j {ext_target}"))
    # NodePort (not subject to loadBalancerSourceRanges)
    if svc.node_port:
        np = svc.node_port
        if has_endpoints:
            if ctx.localhost_nodeport_nfacct:
                nat_top.append((KUBE_NODEPORTS, f"-A KUBE-NODEPORTS -m comment --comment {name} {mp} -d 127.0.0.0/8 "
                                                f"--dport {np} -m nfacct --nfacct-name {LOCALHOST_NODEPORTS_COUNTER} "
                                                f"-j {ext_chain}"))
            nat_top.append((KUBE_NODEPORTS, f"-A KUBE-NODEPORTS -m comment --comment {name} {mp} --dport {np} "
                                            f"-j {ext_chain}"))
        if not has_external:
            filt.append((KUBE_EXTERNAL_SERVICES, f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} "
                                                 f"-m addrtype --dst-type LOCAL {mp} --dport {np} -j {ext_target}"))
    # health check node port: accepted whether or not there are local endpoints
    if svc.health_check_node_port:
        filt.append((KUBE_NODEPORTS, f'-A KUBE-NODEPORTS -m comment --comment "{name} health check node port" '
                                     f"-m tcp -p tcp --dport {svc.health_check_node_port} -j ACCEPT"))

    own: dict[str, list[str]] = {}
    masq_line = None
    if has_internal and (ctx.masquerade_all or ctx.if_not_local):
        args = f'-m comment --comment "{name} cluster IP" {mp} -d {cip} --dport {port}'
        if ctx.masquerade_all:
            masq_line = f"-A {internal_chain} {args} -j KUBE-MARK-MASQ"
        else:
            # off-cluster sources reaching a ClusterIP may bounce off-node: masquerade them
            masq_line = f"-A {internal_chain} {args} {ctx.if_not_local} -j KUBE-MARK-MASQ"

    if uses_ext_chain:
        rules = own[ext_chain] = []
        if not svc.external_policy_local:
            rules.append(f'-A {ext_chain} -m comment --comment "masquerade traffic for {name} external '
                         f'destinations" -j KUBE-MARK-MASQ')
        else:
            if ctx.if_local:
                # pods reaching an external IP act as if they went out and back in: no policy
                rules.append(f'-A {ext_chain} -m comment --comment "pod traffic for {name} external '
                             f'destinations" {ctx.if_local} -j {cluster_chain}')
            rules.append(f'-A {ext_chain} -m comment --comment "masquerade LOCAL traffic for {name} external '
                         f'destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ')
            rules.append(f'-A {ext_chain} -m comment --comment "route LOCAL traffic for {name} external '
                         f'destinations" -m addrtype --src-type LOCAL -j {cluster_chain}')
        if has_external:
            rules.append(f"-A {ext_chain} -j {external_policy_chain}")

    if uses_fw:
        rules = own[fw_chain] = []
        prefix = f'-A {fw_chain} -m comment --comment "{name} loadbalancer IP"'
        allow_from_node = False
        node_ip = parse_ip(ctx.node_ip) if ctx.node_ip else None
        for cidr in svc.load_balancer_source_ranges:
            rules.append(f"{prefix} -s {cidr} -j {ext_chain}")
            net = ipaddress.ip_network(cidr)
            if node_ip is not None and node_ip.version == net.version and node_ip in net:
                allow_from_node = True
        if allow_from_node:
            # a node reaching its own LB VIP loops back with the VIP as source
            for ip in svc.load_balancer_ips:
                rules.append(f"{prefix} -s {ip} -j {ext_chain}")
        rules.append(f'-A {fw_chain} -m comment --comment "other traffic to {name} will be dropped by '
                     f'KUBE-PROXY-FIREWALL"')

    affinity = svc.session_affinity_seconds
    large = ctx.large_cluster
    if cat.cluster and svc.uses_cluster_endpoints:
        own[cluster_chain] = _dispatch_rules(cluster_chain, cat.cluster, name, proto, affinity, large)
    if cat.local and svc.uses_local_endpoints:
        own[local_chain] = _dispatch_rules(local_chain, cat.local, name, proto, affinity, large)
    masq_chain = None
    if masq_line is not None:
        own[internal_chain].insert(0, masq_line)
        masq_chain = internal_chain

    comment = "" if large else f" -m comment --comment {name}"
    for ep in cat.all_reachable:
        sep = endpoint_chain(name, proto, ep.endpoint)
        recent = f" -m recent --name {sep} --set" if affinity is not None else ""
        own[sep] = [f"-A {sep}{comment} -s {ep.ip} -j KUBE-MARK-MASQ",
                    f"-A {sep}{comment}{recent} {mp} -j DNAT --to-destination {ep.endpoint}"]

    top: dict[tuple[str, str], list[str]] = {}
    for chain, line in filt:
        top.setdefault((FILTER, chain), []).append(line)
    for chain, line in nat_top:
        top.setdefault((NAT, chain), []).append(line)
    return PortRules(
        top=tuple((k, tuple(v)) for k, v in top.items()),
        filter_order=tuple(line for _, line in filt),
        nat_top_order=tuple(line for _, line in nat_top),
        own=tuple((c, tuple(r)) for c, r in own.items()),
        masq_chain=masq_chain,
    )


def _dispatch_rules(chain: str, endpoints, name: str, proto: str, affinity: Optional[int], large: bool) -> list[str]:
    """A KUBE-SVC/KUBE-SVL chain: affinity checks first, then a random pick among endpoints."""
    rules = []
    if affinity is not None:
        for ep in endpoints:
            sep = endpoint_chain(name, proto, ep.endpoint)
            comment = "" if large else f' -m comment --comment "{name} -> {ep.endpoint}"'
            rules.append(f"-A {chain}{comment} -m recent --name {sep} --rcheck --seconds {affinity} --reap -j {sep}")
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        sep = endpoint_chain(name, proto, ep.endpoint)
        comment = "" if large else f' -m comment --comment "{name} -> {ep.endpoint}"'
        pick = f" -m statistic --mode random --probability {probability(n - i)}" if i < n - 1 else ""
        rules.append(f"-A {chain}{comment}{pick} -j {sep}")
    return rules

