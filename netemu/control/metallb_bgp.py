"""What each node's speaker announces to each BGP peer, as MetalLB's speaker decides in BGP mode
(``speaker/bgp_controller.go``: ShouldAnnounce, SetBalancer, syncPeers; ``internal/bgp/frr``: one
route per prefix and neighbor, the communities of the advertisements merged). Pure: no sessions here.

For each LoadBalancer Service with an address from a pool that has BGPAdvertisements, and each node:

1. the node must be selected by one of the pool's advertisements (nodeSelectors), its speaker alive
   (default: the node is Ready), its network available, and it must not be labelled
   ``node.kubernetes.io/exclude-from-external-load-balancers``;
2. externalTrafficPolicy Local: the node needs a healthy endpoint of the Service on itself; Cluster:
   any healthy endpoint anywhere (MetalLB's hasHealthyEndpoint: an address counts when none of its
   entries is unable to serve);
3. then every IP of the Service, for every advertisement of the pool that selects the node, becomes the
   prefix ``ip/aggregationLength`` (aggregationLengthV6 for IPv6), sent to every peer of the node (the
   peer's nodeSelectors) that the advertisement names (``peers``; none named: all) and whose session
   carries the IP's family (its peerAddress's, or both with dualStackAddressFamily). Several
   advertisements giving the same prefix to a peer are one route, their communities merged (FRR's
   mergeAdvertisements); two local preferences for one prefix cannot be merged (an error, the first
   one is kept). LOCAL_PREF travels only to iBGP peers (myASN == peerASN, or dynamicASN internal):
   ``Route.local_pref`` is None for eBGP peers.

Unlike layer 2 there is no election: every eligible node announces, and the router spreads traffic
over them (ECMP). The result also says which nodes announce each Service to which peers (MetalLB's
ServiceBGPStatus), and why the other nodes do not.

:func:`reconcile` runs it in every controller pass (after layer 2's election) and keeps the result for the
data plane (netemu.daemon.lab pushes each node's routes to its FRR, netemu.control.metallb_frr renders them).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

from netemu.control.metallb import (
    Config, Pool, chosen_pools, ingress_ips, is_metallb_service, selected_nodes,
)
from netemu.control.metallb_l2 import endpoint_can_serve, slices_of, usable_speakers
from netemu.spec.metallb import BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool
from netemu.spec.metallb_bgp import (
    OBJECT_CHECKS, BGPCommunity, ConfigProblem, community_aliases, config_problems, parse_duration, resolve_communities,
    timers,
)
from netemu.spec.models import EndpointSlice, Node, Service
from netemu.wellknown import EXCLUDE_FROM_LB_LABEL

PROTOCOL = "bgp"


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class Peer:
    """A BGPPeer, resolved: the nodes that peer with it, its timers in seconds."""

    name: str
    my_asn: int
    asn: int  # 0 with dynamic_asn
    address: str
    nodes: frozenset[str]
    port: int = 179
    dynamic_asn: str = ""  # internal | external
    source_address: str = ""
    hold_time: Optional[float] = None  # None: FRR's defaults
    keepalive_time: Optional[float] = None
    connect_time: Optional[float] = None
    router_id: str = ""
    password: str = ""
    password_secret: str = ""  # a Secret's name in metallb-system (kubernetes.io/basic-auth, key password)
    bfd_profile: str = ""
    ebgp_multihop: bool = False
    vrf: str = ""
    disable_mp: bool = False
    graceful_restart: bool = False
    dual_stack: bool = False  # dualStackAddressFamily: the session carries both families

    @property
    def ibgp(self) -> bool:
        return self.dynamic_asn == "internal" or (not self.dynamic_asn and self.asn == self.my_asn)

    def carries(self, version: int) -> bool:
        """Does the session carry prefixes of IP ``version``? Its peerAddress's family, or both with
        dualStackAddressFamily (MetalLB's FRR mode activates the neighbor in those address families only)."""
        return self.dual_stack or ipaddress.ip_address(self.address).version == version


@dataclass(frozen=True)
class BFD:
    name: str
    receive_interval: Optional[int] = None
    transmit_interval: Optional[int] = None
    detect_multiplier: Optional[int] = None
    echo_interval: Optional[int] = None
    echo_mode: bool = False
    passive_mode: bool = False
    minimum_ttl: Optional[int] = None


@dataclass(frozen=True)
class BGPAd:
    """A BGPAdvertisement, resolved: its communities (aliases looked up, sorted as MetalLB sorts them)
    and the nodes it selects."""

    name: str
    nodes: frozenset[str]
    aggregation_length: int = 32
    aggregation_length_v6: int = 128
    local_pref: int = 0
    communities: tuple[BGPCommunity, ...] = ()
    peers: tuple[str, ...] = ()  # empty: every peer

    def prefix(self, ip) -> str:
        length = self.aggregation_length if ip.version == 4 else self.aggregation_length_v6
        return str(ipaddress.ip_network(f"{ip}/{length}", strict=False))

    def matches_peer(self, peer: str) -> bool:
        return not self.peers or peer in self.peers


@dataclass
class BGPConfig:
    peers: list[Peer] = field(default_factory=list)
    bfd_profiles: dict[str, BFD] = field(default_factory=dict)
    # MetalLB's messages; any of them and MetalLB refuses the configuration: no peers, no advertisements
    problems: list[str] = field(default_factory=list)


def build(config: Config, pool_objs: list[IPAddressPool], peers: list[BGPPeer], advertisements: list[BGPAdvertisement],
          bfd_profiles: list[BFDProfile], communities: list[Community], nodes: list[Node]) -> BGPConfig:
    """The BGP part of MetalLB's configuration (config.For): checks every object and the whole, then
    resolves peers and advertisements and hangs each advertisement on its pools (``Pool.bgp``, over
    ``config.pools``). With any problem nothing is hung and there are no peers:
    MetalLB refuses an invalid configuration as a whole."""
    problems: list[ConfigProblem] = []
    for obj in [*bfd_profiles, *peers, *communities, *advertisements]:
        problems += [ConfigProblem(obj.kind, obj.metadata.name or "", p, t) for p, t in OBJECT_CHECKS[type(obj)](obj)]
    pools = config.pools
    objs = {o.metadata.name: o for o in pool_objs}
    problems += config_problems(
        pool_objs, peers, advertisements, bfd_profiles, communities,
        lambda a: [objs[p.name] for p in chosen_pools(a.spec, pools) if p.name in objs],
        lambda a: selected_nodes(a.spec.node_selectors, nodes))
    out = BGPConfig(problems=[str(p) for p in problems])
    if problems:
        return out
    out.bfd_profiles = {b.metadata.name or "": BFD(b.metadata.name or "", b.spec.receive_interval,
                                                   b.spec.transmit_interval, b.spec.detect_multiplier,
                                                   b.spec.echo_interval, bool(b.spec.echo_mode),
                                                   bool(b.spec.passive_mode), b.spec.minimum_ttl)
                        for b in bfd_profiles}
    out.peers = [_peer(p, nodes) for p in peers]
    aliases = community_aliases(communities, [])
    for a in advertisements:
        s = a.spec
        ad = BGPAd(a.metadata.name or "", selected_nodes(s.node_selectors, nodes),
                   32 if s.aggregation_length is None else s.aggregation_length,
                   128 if s.aggregation_length_v6 is None else s.aggregation_length_v6, s.local_pref or 0,
                   tuple(resolve_communities(a, aliases, [])), tuple(s.peers or ()))
        for pool in chosen_pools(s, pools):
            pool.bgp.append(ad)
    return out


def _peer(p: BGPPeer, nodes: list[Node]) -> Peer:
    s = p.spec
    hold, keepalive = timers(s.hold_time, s.keepalive_time)
    return Peer(name=p.metadata.name or "", my_asn=s.my_asn or 0, asn=s.peer_asn or 0,
                address=str(ipaddress.ip_address(str(s.peer_address).strip())),
                nodes=selected_nodes(s.node_selectors, nodes), port=179 if s.peer_port is None else s.peer_port,
                dynamic_asn=s.dynamic_asn or "", source_address=s.source_address or "", hold_time=hold,
                keepalive_time=keepalive,
                connect_time=parse_duration(s.connect_time) if s.connect_time is not None else None,
                router_id=s.router_id or "", password=s.password or "",
                password_secret=(s.password_secret.name or "") if s.password_secret else "",
                bfd_profile=s.bfd_profile or "", ebgp_multihop=bool(s.ebgp_multi_hop), vrf=s.vrf or "",
                disable_mp=bool(s.disable_mp), graceful_restart=bool(s.enable_graceful_restart),
                dual_stack=bool(s.dual_stack_address_family))


# --------------------------------------------------------------------------- decisions
@dataclass(frozen=True)
class Route:
    """One prefix a node sends one peer, with its path attributes."""

    prefix: str
    local_pref: Optional[int] = None  # None: not sent (an eBGP peer, or no advertisement sets it)
    communities: tuple[str, ...] = ()  # standard, "64500:100"
    large_communities: tuple[str, ...] = ()  # "64500:1:2" (written large:64500:1:2 in MetalLB's objects)
    services: tuple[str, ...] = ()  # "namespace/name" of the Services it carries
    advertisements: tuple[str, ...] = ()  # the BGPAdvertisements that gave it


@dataclass
class ServiceBGP:
    """MetalLB's ServiceBGPStatus, for every node: who announces a Service to whom, and why not."""

    namespace: str
    service: str
    ips: tuple[str, ...]
    pool: str = ""
    nodes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # announcing node -> its peers (names)
    reasons: dict[str, str] = field(default_factory=dict)  # other node -> why not (MetalLB's reasons)


@dataclass
class BGPAnnouncements:
    routes: dict[str, dict[str, list[Route]]] = field(default_factory=dict)  # node -> peer name -> routes
    services: dict[tuple[str, str], ServiceBGP] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # advertisements that could not be merged

    def routes_of(self, node: str, peer: str) -> list[Route]:
        return list(self.routes.get(node, {}).get(peer, []))

    def status(self, namespace: str, name: str) -> list[tuple[str, tuple[str, ...]]]:
        """(node, peers) per announcing node, as ServiceBGPStatus objects list them (for describe svc)."""
        s = self.services.get((namespace, name))
        return sorted(s.nodes.items()) if s else []


def has_healthy_endpoint(slices: Iterable[EndpointSlice], node: Optional[str] = None) -> bool:
    """hasHealthyEndpoint (on ``node`` only, when given): some address whose entries can all serve."""
    ready: dict[str, bool] = {}
    for s in slices:
        for ep in s.endpoints:
            if node is not None and ep.node_name != node:
                continue
            ok = endpoint_can_serve(ep)
            for addr in ep.addresses:
                ready[addr] = ready.get(addr, True) and ok
    return any(ready.values())


def node_reason(node: Node, speakers: set[str], svc: Service, slices: list[EndpointSlice],
                ads: list[BGPAd]) -> str:
    """ShouldAnnounce for one node: "" when it announces, else MetalLB's reason."""
    name = node.metadata.name
    if not any(name in a.nodes for a in ads):
        return "notOwner"  # pool not matching the node
    if EXCLUDE_FROM_LB_LABEL in (node.metadata.labels or {}):
        return "nodeLabeledExcludeBalancers"
    if name not in speakers:
        return "nodeNotAvailable"  # not Ready, network unavailable, or its speaker is down
    if svc.spec.external_traffic_policy == "Local" and not has_healthy_endpoint(slices, name):
        return "noLocalEndpoints"
    if not has_healthy_endpoint(slices):
        return "noEndpoints"
    return ""


@dataclass
class _Acc:
    local_pref: int
    communities: set = field(default_factory=set)
    services: set = field(default_factory=set)
    ads: set = field(default_factory=set)


def _pool_of(config: Config, ips: list) -> Optional[Pool]:
    for p in config.pools:
        if all(p.contains(ip) for ip in ips):
            return p
    return None


def decide(services: Iterable[Service], slices: Iterable[EndpointSlice], nodes: Iterable[Node],
           config: Optional[Config], alive: Optional[Mapping[str, bool]] = None) -> BGPAnnouncements:
    """For each node, for each of its peers, the routes it announces (pure, deterministic: nodes, peers
    and prefixes in order). ``alive``: which speakers run (default: the Ready nodes)."""
    out = BGPAnnouncements()
    if config is None or config.bgp is None or not config.bgp.peers:
        return out
    nodes = sorted(nodes, key=lambda n: n.metadata.name)
    slices = list(slices)
    speakers = usable_speakers(nodes, alive)
    acc: dict[str, dict[str, dict[str, _Acc]]] = {}
    for svc in sorted(services, key=lambda s: (s.metadata.namespace or "", s.metadata.name or "")):
        ips = ingress_ips(svc)
        if not is_metallb_service(svc) or not ips:
            continue
        pool = _pool_of(config, ips)
        if pool is None or not pool.bgp:
            continue  # not allowed by the configuration, or not announced over BGP
        key = f"{svc.metadata.namespace}/{svc.metadata.name}"
        status = ServiceBGP(svc.metadata.namespace or "", svc.metadata.name or "", tuple(map(str, ips)), pool.name)
        out.services[(status.namespace, status.service)] = status
        mine = slices_of(svc, slices)
        for node in nodes:
            name = node.metadata.name
            reason = node_reason(node, speakers, svc, mine, pool.bgp)
            if reason:
                status.reasons[name] = reason
                continue
            peers_used: set[str] = set()
            for ip in ips:
                for ad in pool.bgp:
                    if name not in ad.nodes:
                        continue
                    prefix = ad.prefix(ip)
                    for peer in config.bgp.peers:
                        if name not in peer.nodes or not ad.matches_peer(peer.name) or not peer.carries(ip.version):
                            continue
                        peers_used.add(peer.name)
                        a = acc.setdefault(name, {}).setdefault(peer.name, {}).setdefault(prefix, _Acc(ad.local_pref))
                        if a.local_pref != ad.local_pref:
                            out.errors.append(f"node {name}, peer {peer.name}, {prefix}: cannot merge advertisements "
                                              f"with different local preferences: {a.local_pref} != {ad.local_pref}")
                        a.communities.update(ad.communities)
                        a.services.add(key)
                        a.ads.add(ad.name)
            status.nodes[name] = tuple(sorted(peers_used))
    by_name = {p.name: p for p in config.bgp.peers}
    for node in sorted(acc):
        for peer in sorted(acc[node]):
            routes = []
            for prefix, a in sorted(acc[node][peer].items(), key=lambda kv: _net_key(kv[0])):
                comms = sorted(a.communities)
                routes.append(Route(prefix, a.local_pref if a.local_pref and by_name[peer].ibgp else None,
                                    tuple(str(c) for c in comms if not c.large),
                                    tuple(str(c) for c in comms if c.large), tuple(sorted(a.services)),
                                    tuple(sorted(a.ads))))
            out.routes.setdefault(node, {})[peer] = routes
    return out


def _net_key(prefix: str) -> tuple:
    n = ipaddress.ip_network(prefix)
    return (n.version, int(n.network_address), n.prefixlen)


def node_assigned_message(node: str) -> str:
    """The speaker's nodeAssigned event on the Service, once per announcing node."""
    return f'announcing from node "{node}" with protocol "{PROTOCOL}"'


# --------------------------------------------------------------------------- in the cluster
@dataclass
class _State:
    last: BGPAnnouncements = field(default_factory=BGPAnnouncements)
    assigned: dict[str, frozenset] = field(default_factory=dict)  # service uid -> nodes announcing it
    errors: tuple[str, ...] = ()


def _state(c) -> _State:
    st = c.__dict__.get("_metallb_bgp")
    if st is None:
        st = c.__dict__["_metallb_bgp"] = _State()
    return st


def reconcile(c) -> BGPAnnouncements:
    """Decide what every node announces to every peer, record MetalLB's events (nodeAssigned for each
    node that starts announcing a Service; advertisements that cannot be merged), remember the result
    (:func:`announcements`). No store writes: safe in every pass."""
    from netemu.control.metallb import load_config
    from netemu.control.metallb_l2 import SPEAKER, load_balancers_and_slices, speakers_alive

    st = _state(c)
    config = load_config(c)
    if config is None or config.bgp is None or not config.bgp.peers:
        st.last, st.assigned = BGPAnnouncements(), {}
        return st.last
    lb, slices = load_balancers_and_slices(c.store)
    result = decide(lb, slices, c.store.list("Node"), config, speakers_alive(c))
    services = {(s.metadata.namespace, s.metadata.name): s for s in lb}
    seen = set()
    for key, status in result.services.items():
        svc = services[key]
        uid = svc.metadata.uid or "/".join(key)
        seen.add(uid)
        now = frozenset(status.nodes)
        for node in sorted(now - st.assigned.get(uid, frozenset())):
            c.event(svc, "nodeAssigned", node_assigned_message(node), source=SPEAKER)
        st.assigned[uid] = now
    for uid in set(st.assigned) - seen:
        del st.assigned[uid]
    for err in result.errors:
        if err not in st.errors:
            c.record_event("Namespace", "", "metallb-system", "configError", err, "Warning", SPEAKER)
    st.errors = tuple(result.errors)
    st.last = result
    return result


def announcements(c) -> BGPAnnouncements:
    """The result of the last :func:`reconcile`."""
    return _state(c).last


__all__ = ["PROTOCOL", "Peer", "BFD", "BGPAd", "BGPConfig", "build", "Route", "ServiceBGP", "BGPAnnouncements",
           "has_healthy_endpoint", "node_reason", "decide", "node_assigned_message", "reconcile", "announcements"]
