"""Stale UDP conntrack entries, as data for a thin `conntrack -D` applier.

UDP has no connection teardown, so a conntrack entry that DNATs a client's flow to an endpoint
that went away keeps blackholing it until the entry times out. kube-proxy (pkg/proxy/conntrack
cleanup.go, v1.31+) reconciles after each sync: for every UDP service port that has serving
endpoints, it deletes entries whose original destination is one of the port's frontends
(ClusterIP, load-balancer IPs, external IPs, or the NodePort on any address) but whose reply
source is not a serving endpoint. Services without serving endpoints are left alone.

Two pure forms of that rule:
- udp_flows_to_clear(view, flows): kube-proxy's reconciler applied to a listing of UDP flows.
- stale_udp_conntrack(prev, new): the same decision made from the change alone, for flows that
  were set up under `prev`: endpoints that stopped serving, and frontends that had no serving
  endpoint before (their flows were never DNATed, so their reply source is the frontend itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple, Optional

from netemu.dataplane.proxy.addresses import IPV4, IPV6
from netemu.dataplane.proxy.view import NodeProxyView, ServicePortView

UDP = "UDP"


@dataclass(frozen=True)
class ConntrackDeletion:
    kind: str                   # "endpoint", "nodeport-endpoint", "service" or "nodeport"
    service: str                # "ns/name:port", for logs
    port: int                   # original destination port: the service port or the NodePort
    service_ip: Optional[str]   # original destination (a frontend IP); None for NodePorts
    endpoint_ip: Optional[str]  # reply source to match; None: every flow to the NodePort
    protocol: str = "udp"
    family: str = IPV4          # the view's family: conntrack lists IPv4 unless told otherwise

    def argv(self) -> list[str]:
        """Arguments for the conntrack tool."""
        args = ["-D", "-p", self.protocol]
        if self.service_ip:
            args += ["--orig-dst", self.service_ip]
        args += ["--orig-port-dst", str(self.port)]
        if self.endpoint_ip:
            args += ["--reply-src", self.endpoint_ip]
        if self.family == IPV6:
            # a NodePort deletion names no address, and conntrack's default family is IPv4
            args += ["-f", "ipv6"]
        return args


def _frontends(p: ServicePortView) -> list[str]:
    return [p.cluster_ip, *p.load_balancer_ips, *p.external_ips]


def _serving_ips(p: Optional[ServicePortView]) -> set[str]:
    return {e.ip for e in p.endpoints if e.serving} if p is not None else set()


def stale_udp_conntrack(prev: Optional[NodeProxyView], new: NodeProxyView, *,
                        include_emptied: bool = False) -> list[ConntrackDeletion]:
    """Deletions due after moving from `prev` to `new`. include_emptied also clears flows to
    endpoints of ports left with no serving endpoint (what kube-proxy did before 1.31)."""
    before = {p.key: p for p in prev.ports()} if prev is not None else {}
    fam = new.options.ip_family
    out: list[ConntrackDeletion] = []
    for p in new.ports():
        if p.protocol != UDP:
            continue
        serving = _serving_ips(p)
        if not serving and not include_emptied:
            continue
        old = before.get(p.key)
        old_serving = _serving_ips(old)
        gone = sorted(old_serving - serving)
        name = p.service_port_name
        for ip in _frontends(p):
            out.extend(ConntrackDeletion("endpoint", name, p.port, ip, ep, family=fam) for ep in gone)
        if p.node_port:
            out.extend(ConntrackDeletion("nodeport-endpoint", name, p.node_port, None, ep, family=fam) for ep in gone)
        if serving and not old_serving:
            # the frontend had no backend: its flows were never DNATed
            out.extend(ConntrackDeletion("service", name, p.port, ip, ip, family=fam) for ip in _frontends(p))
            if p.node_port:
                out.append(ConntrackDeletion("nodeport", name, p.node_port, None, None, family=fam))
    return out


class UdpFlow(NamedTuple):
    orig_dst: str      # original destination IP
    orig_dport: int    # original destination port
    reply_src: str     # source of replies: the endpoint when DNATed


def udp_flows_to_clear(view: NodeProxyView, flows: Iterable[UdpFlow]) -> list[UdpFlow]:
    """kube-proxy's reconciler: the UDP flows to delete, given the UDP flows conntrack lists."""
    by_frontend: dict[tuple[str, int], set[str]] = {}
    by_nodeport: dict[int, set[str]] = {}
    for p in view.ports():
        if p.protocol != UDP:
            continue
        serving = _serving_ips(p)
        if not serving:
            continue
        for ip in _frontends(p):
            by_frontend[(ip, p.port)] = serving
        if p.node_port:
            by_nodeport[p.node_port] = serving
    out = []
    for f in flows:
        eps = by_frontend.get((f.orig_dst, f.orig_dport))
        if eps is not None and f.reply_src not in eps:
            out.append(f)
            continue
        eps = by_nodeport.get(f.orig_dport)
        if eps is not None and f.reply_src not in eps:
            out.append(f)
    return out
