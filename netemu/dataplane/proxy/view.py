"""What kube-proxy knows on one node: its settings, its service ports and their endpoints.

This mirrors kube-proxy's internal model (pkg/proxy: serviceport.go newBaseServiceInfo,
servicechangetracker.go, endpointslicecache.go, endpoint.go) so that every proxy mode renders
from the same, already-filtered input:

- Services of type ExternalName, headless ones (clusterIP None) and ones without a cluster IP of
  the node's family are skipped; each remaining (port name, protocol) becomes a ServicePortView.
- External IPs, load-balancer ingress IPs (VIP mode only) and source ranges are parsed sloppily,
  normalised, filtered to the node's family; unparseable ones are dropped.
- One view per IP family: kube-proxy runs one proxier per family (its MetaProxier in a dual-stack
  cluster), and each sees the Service's clusterIP of its family (spec.clusterIPs by spec.ipFamilies),
  the slices of its addressType, the external and load-balancer IPs of its family; a Service without
  the family in spec.ipFamilies is not in that family's view (build_views).
- EndpointSlices are matched to service ports by (port name, protocol); the slice port number is
  the resolved targetPort. Slices of the other address family, slices without the service-name
  label, ports with a nil name or no number, endpoints without a usable address are ignored.
  Duplicate addresses across slices collapse into one endpoint, preferring a non-terminating one.
  Endpoints are sorted by "ip:port" string, as kube-proxy sorts them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Optional, Sequence

from netemu.dataplane.proxy.addresses import IPV4, family_of, join_host_port, parse_cidr, parse_ip
from netemu.spec.models import EndpointSlice, Service
from netemu.wellknown import SERVICE_NAME_LABEL, ZONE_LABEL

TOPOLOGY_MODE_ANNOTATION = "service.kubernetes.io/topology-mode"
TOPOLOGY_HINTS_ANNOTATION = "service.kubernetes.io/topology-aware-hints"  # deprecated, wins if set
DEFAULT_STICKY_SECONDS = 10800
MASQUERADE_BIT = 14


def go_hex_mark(bit: int) -> str:
    """The mark as kube-proxy formats it: Go's "%#08x" gives 0x00004000 for bit 14."""
    return "0x" + format(1 << bit, "08x")


@dataclass(frozen=True)
class ProxyOptions:
    """kube-proxy's flags and the node facts it reads at start.

    Defaults are those of a real kube-proxy binary on a kernel with --random-fully and without
    nfacct. kube-proxy's own unit tests run with KUBE_PROXY_TEST_OPTIONS instead.
    """

    node_name: str
    node_ips: tuple[str, ...] = ()          # addresses on the node's interfaces, primary first
    cluster_cidr: Optional[str] = None      # --cluster-cidr: local-traffic detector by pod CIDR
    ip_family: str = IPV4
    masquerade_all: bool = False            # --masquerade-all
    masquerade_mark: str = go_hex_mark(MASQUERADE_BIT)
    localhost_nodeports: bool = True        # --iptables-localhost-nodeports
    nfacct: bool = False                    # nfacct counters exist (kube-proxy's metrics rules)
    node_port_addresses: tuple[str, ...] = ()  # --nodeport-addresses; empty means all
    random_fully: bool = True               # iptables supports MASQUERADE --random-fully
    conntrack_tcp_be_liberal: bool = False  # sysctl set: no DROP rule for INVALID packets
    node_zone: Optional[str] = None         # topology.kubernetes.io/zone of the node

    @property
    def primary_ip(self) -> Optional[str]:
        return self.node_ips[0] if self.node_ips else None


# The settings of kube-proxy's NewFakeProxier (pkg/proxy/iptables/proxier_test.go): its expected
# outputs are produced with a literal "0x4000" mark, no --random-fully and nfacct counters present.
KUBE_PROXY_TEST_OPTIONS: Mapping[str, Any] = MappingProxyType({
    "masquerade_mark": "0x4000",
    "random_fully": False,
    "nfacct": True,
    "localhost_nodeports": True,
})


@dataclass(frozen=True, slots=True)
class EndpointView:
    ip: str                      # normalised
    port: int                    # the resolved targetPort
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: Optional[str] = None
    is_local: bool = False
    zone: Optional[str] = None
    zone_hints: frozenset[str] = frozenset()
    node_hints: frozenset[str] = frozenset()
    endpoint: str = ""           # "ip:port", as kube-proxy prints and hashes it

    def __post_init__(self) -> None:
        if not self.endpoint:
            object.__setattr__(self, "endpoint", join_host_port(self.ip, self.port))


@dataclass(frozen=True, slots=True)
class ServicePortView:
    namespace: str
    name: str
    port_name: str
    protocol: str                # "TCP", "UDP" or "SCTP"
    cluster_ip: str
    port: int
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()          # status.loadBalancer.ingress[].ip (VIP mode)
    load_balancer_source_ranges: tuple[str, ...] = ()
    session_affinity_seconds: Optional[int] = None   # None unless sessionAffinity is ClientIP
    external_policy_local: bool = False
    internal_policy_local: bool = False
    health_check_node_port: int = 0
    hints_annotation: str = ""
    traffic_distribution: Optional[str] = None
    endpoints: tuple[EndpointView, ...] = ()
    service_port_name: str = ""  # "ns/name:port" (or "ns/name" for an unnamed port)

    def __post_init__(self) -> None:
        if not self.service_port_name:
            spn = f"{self.namespace}/{self.name}" + (f":{self.port_name}" if self.port_name else "")
            object.__setattr__(self, "service_port_name", spn)

    @property
    def service(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.namespace, self.name, self.port_name, self.protocol)

    # The predicates of pkg/proxy/serviceport.go.
    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.load_balancer_ips or self.external_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        # Even with externalTrafficPolicy Local, short-circuited traffic needs the Cluster chain.
        return not self.internal_policy_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_policy_local or (self.external_policy_local and self.externally_accessible)


@dataclass(frozen=True, eq=False)
class NodeProxyView:
    """One node's proxy input. `services` maps "ns/name" to its ports; treat it as read-only:
    derive changed views with with_service() so unchanged entries stay the same objects."""

    options: ProxyOptions
    services: Mapping[str, tuple[ServicePortView, ...]] = field(default_factory=dict)
    total_endpoints: int = -1

    def __post_init__(self) -> None:
        if self.total_endpoints < 0:
            total = sum(len(p.endpoints) for ports in self.services.values() for p in ports)
            object.__setattr__(self, "total_endpoints", total)

    def ports(self) -> Iterable[ServicePortView]:
        for key in sorted(self.services):
            yield from self.services[key]

    def with_service(self, service: str, ports: Optional[Sequence[ServicePortView]]) -> "NodeProxyView":
        """A new view where one Service ("ns/name") has these ports (None or empty: removed)."""
        services = dict(self.services)
        old = services.pop(service, ())
        total = self.total_endpoints - sum(len(p.endpoints) for p in old)
        if ports:
            services[service] = tuple(ports)
            total += sum(len(p.endpoints) for p in ports)
        return NodeProxyView(self.options, services, total)

    def with_options(self, **changes: Any) -> "NodeProxyView":
        return NodeProxyView(replace(self.options, **changes), self.services, self.total_endpoints)


def nodeport_cidrs(view: NodeProxyView) -> list:
    """--nodeport-addresses of the node's family; empty means every address ("primary" means the
    primary node IP)."""
    o = view.options
    out = []
    for text in o.node_port_addresses:
        if text == "primary":
            text = f"{o.primary_ip}/{32 if o.ip_family == IPV4 else 128}" if o.primary_ip else ""
        net = parse_cidr(text.strip())
        if net is not None and (net.version == 4) == (o.ip_family == IPV4):
            out.append(net)
    return out


# --------------------------------------------------------------------------- endpoints
EndpointsMap = dict[tuple[str, str, str, str], tuple[EndpointView, ...]]


_NO_HINTS: frozenset[str] = frozenset()


def _hint_names(hints: Any, key: str) -> frozenset[str]:
    if not isinstance(hints, dict) or not hints.get(key):
        return _NO_HINTS
    return frozenset(h.get("name") for h in hints[key] if isinstance(h, dict) and h.get("name"))


def endpoints_map(slices: Iterable[EndpointSlice], *, node_name: str, ip_family: str = IPV4) -> EndpointsMap:
    """(ns, service, port name, protocol) -> endpoints, as kube-proxy's EndpointSliceCache builds it."""
    address_type = "IPv4" if ip_family == IPV4 else "IPv6"
    by_port: dict[tuple[str, str, str, str], dict[str, EndpointView]] = {}
    usable = []
    for s in slices:
        svc_name = (s.metadata.labels or {}).get(SERVICE_NAME_LABEL)
        if not svc_name or not s.metadata.namespace or not s.metadata.name or s.address_type != address_type:
            continue
        usable.append(s)
    # kube-proxy walks slices in map order; name order makes duplicate resolution deterministic.
    for s in sorted(usable, key=lambda x: (x.metadata.namespace, x.metadata.name)):
        ns, svc_name = s.metadata.namespace, s.metadata.labels[SERVICE_NAME_LABEL]
        for p in s.ports or ():
            if p.name is None or not p.port:
                continue
            key = (ns, svc_name, p.name, p.protocol or "TCP")
            seen = by_port.setdefault(key, {})
            for ep in s.endpoints:
                view = _endpoint_view(ep, p.port, node_name, ip_family)
                if view is None:
                    continue
                if view.endpoint not in seen or not view.terminating:
                    seen[view.endpoint] = view
    return {k: tuple(sorted(v.values(), key=lambda e: e.endpoint)) for k, v in by_port.items() if v}


def _endpoint_view(ep: Any, port: int, node_name: str, ip_family: str) -> Optional[EndpointView]:
    if not ep.addresses:
        return None
    addr = parse_ip(ep.addresses[0])
    if addr is None or family_of(addr) != ip_family:
        return None
    c = ep.conditions
    # Endpoint.hints is not a typed field of our models; it survives as a pydantic extra.
    hints = (ep.__pydantic_extra__ or {}).get("hints")
    return EndpointView(
        ip=str(addr),
        port=port,
        ready=c.ready is None or c.ready,
        serving=c.serving is None or c.serving,
        terminating=bool(c.terminating),
        node_name=ep.node_name,
        is_local=bool(node_name) and ep.node_name == node_name,
        zone=ep.zone,
        zone_hints=_hint_names(hints, "forZones"),
        node_hints=_hint_names(hints, "forNodes"),
    )


# --------------------------------------------------------------------------- services
def _externally_accessible(svc: Service) -> bool:
    kind = svc.spec.type or "ClusterIP"
    return kind in ("LoadBalancer", "NodePort") or (kind == "ClusterIP" and bool(svc.spec.external_ips))


def _cluster_ip(svc: Service, ip_family: str) -> Optional[str]:
    spec = svc.spec
    if not spec.ip_families:
        ip = spec.cluster_ip
        if not ip or ip == "None":
            return None
        addr = parse_ip(ip)
        return str(addr) if addr is not None and family_of(addr) == ip_family else None
    for i, fam in enumerate(spec.ip_families):
        if fam == ip_family and spec.cluster_ips and i < len(spec.cluster_ips):
            addr = parse_ip(spec.cluster_ips[i])
            return str(addr) if addr is not None else None
    return None


def _ips_of_family(values: Iterable[str], ip_family: str) -> tuple[str, ...]:
    out = []
    for v in values:
        addr = parse_ip(v.strip()) if v else None
        if addr is not None and family_of(addr) == ip_family:
            out.append(str(addr))
    return tuple(out)


def _cidrs_of_family(values: Iterable[str], ip_family: str) -> tuple[str, ...]:
    out = []
    for v in values:
        net = parse_cidr(v.strip())
        if net is not None and family_of(net) == ip_family:
            out.append(str(net))
    return tuple(out)


def service_ports(svc: Service, endpoints: Mapping[tuple[str, str, str, str], tuple[EndpointView, ...]],
                  *, ip_family: str = IPV4) -> tuple[ServicePortView, ...]:
    """A Service's ports as kube-proxy sees them (empty when kube-proxy skips the Service)."""
    spec = svc.spec
    if not spec.cluster_ip or spec.cluster_ip == "None" or spec.type == "ExternalName":
        return ()
    cluster_ip = _cluster_ip(svc, ip_family)
    if cluster_ip is None:
        return ()
    ns, name = svc.metadata.namespace or "default", svc.metadata.name or ""
    external_local = _externally_accessible(svc) and spec.external_traffic_policy == "Local"
    sticky = None
    if spec.session_affinity == "ClientIP":
        cfg = spec.session_affinity_config
        timeout = cfg.client_ip.timeout_seconds if cfg and cfg.client_ip else None
        sticky = timeout if timeout is not None else DEFAULT_STICKY_SECONDS
    annotations = svc.metadata.annotations or {}
    hints = annotations.get(TOPOLOGY_HINTS_ANNOTATION, annotations.get(TOPOLOGY_MODE_ANNOTATION, ""))
    lb_ips = _ips_of_family(
        [i.ip for i in svc.status.load_balancer.ingress or () if i.ip and i.ip_mode in (None, "VIP")], ip_family)
    common = dict(
        cluster_ip=cluster_ip,
        external_ips=_ips_of_family(spec.external_ips or (), ip_family),
        load_balancer_ips=lb_ips,
        load_balancer_source_ranges=_cidrs_of_family(spec.load_balancer_source_ranges or (), ip_family),
        session_affinity_seconds=sticky,
        external_policy_local=external_local,
        internal_policy_local=spec.internal_traffic_policy == "Local",
        health_check_node_port=(spec.health_check_node_port or 0)
        if external_local and spec.type == "LoadBalancer" else 0,
        hints_annotation=hints,
        traffic_distribution=(spec.__pydantic_extra__ or {}).get("trafficDistribution"),
    )
    by_key: dict[tuple[str, str], ServicePortView] = {}  # a repeated (name, protocol): last one wins
    for p in spec.ports or ():
        port_name, protocol = p.name or "", p.protocol or "TCP"
        by_key[(port_name, protocol)] = ServicePortView(
            namespace=ns, name=name, port_name=port_name, protocol=protocol, port=p.port,
            node_port=p.node_port or 0, endpoints=endpoints.get((ns, name, port_name, protocol), ()),
            **common)
    return tuple(by_key[k] for k in sorted(by_key))


def refresh_view(view: NodeProxyView, changed: Iterable[str], services: Iterable[Service],
                 slices: Iterable[EndpointSlice]) -> NodeProxyView:
    """`view` with only the Services named in `changed` ("ns/name") rebuilt from the current
    objects; every other entry is reused as is (so renderers can skip it by identity).

    `services` and `slices` may be all objects (filtered here, about 1.5 us each: ~30 ms at
    10,000 Services) or just those of the changed Services (a few microseconds in all)."""
    wanted = set(changed)
    if not wanted:
        return view
    names = {tuple(k.split("/", 1)) for k in wanted}
    mine = [s for s in services if (s.metadata.namespace or "default", s.metadata.name) in names]
    my_slices = [s for s in slices
                 if s.metadata.labels and (s.metadata.namespace, s.metadata.labels.get(SERVICE_NAME_LABEL)) in names]
    o = view.options
    eps = endpoints_map(my_slices, node_name=o.node_name, ip_family=o.ip_family)
    rebuilt = {}
    for svc in mine:
        ports = service_ports(svc, eps, ip_family=o.ip_family)
        if ports:
            rebuilt[ports[0].service] = ports
    services_now = dict(view.services)
    total = view.total_endpoints
    for key in wanted:
        old = services_now.pop(key, ())
        total -= sum(len(p.endpoints) for p in old)
        if key in rebuilt:
            services_now[key] = rebuilt[key]
            total += sum(len(p.endpoints) for p in rebuilt[key])
    return NodeProxyView(o, services_now, total)


def build_view(services: Iterable[Service], slices: Iterable[EndpointSlice], *, node_name: str,
               node_ips: Sequence[str] = (), cluster_cidr: Optional[str] = None,
               node_labels: Optional[Mapping[str, str]] = None, **options: Any) -> NodeProxyView:
    """The proxy view of one node. `options` are ProxyOptions fields (masquerade_all, nfacct, ...)."""
    if node_labels and "node_zone" not in options:
        options["node_zone"] = node_labels.get(ZONE_LABEL)
    opts = ProxyOptions(node_name=node_name, node_ips=tuple(node_ips), cluster_cidr=cluster_cidr, **options)
    eps = endpoints_map(slices, node_name=node_name, ip_family=opts.ip_family)
    by_service: dict[str, tuple[ServicePortView, ...]] = {}
    for svc in services:
        ports = service_ports(svc, eps, ip_family=opts.ip_family)
        if ports:
            by_service[ports[0].service] = ports
    return NodeProxyView(opts, by_service)


def build_views(services: Iterable[Service], slices: Iterable[EndpointSlice], *, node_name: str,
                families: Mapping[str, tuple[Sequence[str], Optional[str]]],
                node_labels: Optional[Mapping[str, str]] = None, **options: Any) -> dict[str, NodeProxyView]:
    """One view per IP family, as kube-proxy's MetaProxier runs one proxier per family.
    `families`: family ("IPv4", "IPv6") -> (the node's addresses of that family, its pod CIDR for the
    local-traffic detector); `options` as for build_view, the same for every family."""
    services, slices = list(services), list(slices)
    return {fam: build_view(services, slices, node_name=node_name, node_ips=ips, cluster_cidr=cidr,
                            node_labels=node_labels, ip_family=fam, **options)
            for fam, (ips, cidr) in families.items()}
