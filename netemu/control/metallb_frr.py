"""FRR configuration for MetalLB's BGP mode (pure): what each node's speaker and each lab router run.

A node's speaker is FRR as MetalLB's FRR mode runs it: ``router bgp <myASN>``, a neighbor per BGPPeer
that selects the node, ``network <prefix> route-map <attributes>`` for every prefix the node announces
(``no bgp network import-check``: the prefix needs no route on the node), and per neighbor an outbound
prefix-list holding exactly the prefixes that peer gets. The attributes (local preference, communities,
large communities) live in one route-map per distinct set, named by a hash of it, so a route-map is
never changed once made: a change of routes is a few ``network``/``prefix-list`` commands
(:func:`plan`), with no session reset. A change of the sessions themselves (peers, timers, BFD
profiles) rewrites the files and restarts bgpd and bfdd (``SpeakerConfig.static_text``).

A router (the Lab document's ``spec.routers``) accepts as neighbors the nodes of every BGPPeer whose
peerAddress is its address, with the same timers, password, multihop and BFD profile, and spreads
traffic over all of them (``maximum-paths``; ``bgp bestpath as-path multipath-relax`` for eBGP).

A router with ``upstream: true`` also peers with the host's end of the lab segment (the lab's gateway
address) and re-advertises what it learned from the nodes there, with itself as the next hop
(``next-hop-self``: no third-party next hop to a node). The host's side (:class:`HostConfig`) is one bgpd
without zebra that accepts only prefixes inside the lab's BGP pools and announces nothing;
:func:`host_routes_from` turns what it learned into the host's routes (netemu.dataplane.bgp programs them).
That session is IPv4 only.

IPv6 (a dual-stack lab), as MetalLB's FRR mode: a neighbor is activated in its address's family only
(``address-family ipv6 unicast`` for an IPv6 peerAddress), in both with dualStackAddressFamily; IPv6 LB
IPs are ``network X/128`` (aggregationLengthV6) there, filtered out by an ``ipv6 prefix-list`` of the
neighbor's name; an IPv6 eBGP single-hop neighbor gets ``disable-connected-check`` (mustDisableConnectedCheck).
A router peers with the nodes' ip6 for a BGPPeer aimed at its ip6, and installs their global addresses
as next hops (``set ipv6 next-hop prefer-global``), ECMP as for IPv4.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Mapping, Optional

from netemu.control.metallb_bgp import BFD, BGPAnnouncements, Peer, Route

SEQ_DENY = 4294967295  # the last entry of every outbound prefix-list: nothing else leaves
MAX_PATHS = 64


@dataclass(frozen=True)
class Neighbor:
    address: str
    remote_as: str  # an ASN, or "internal" / "external" (dynamicASN)
    local_as: Optional[int] = None  # the peer's myASN when it differs from the router's (neighbor local-as)
    port: int = 179
    hold_time: Optional[float] = None
    keepalive_time: Optional[float] = None
    connect_time: Optional[float] = None
    password: str = ""
    ebgp_multihop: bool = False
    source_address: str = ""
    bfd_profile: str = ""
    graceful_restart: bool = False
    name: str = ""  # the BGPPeer's (or the node's, on a router)
    dual_stack: bool = False  # dualStackAddressFamily: activated in both address families
    # an IPv6 eBGP session without multihop: FRR's connected check off, as MetalLB's FRR mode writes it
    disable_connected_check: bool = False

    def carries(self, version: int) -> bool:
        """Is the neighbor activated in IP ``version``'s unicast address family? Its address's family,
        or both (MetalLB's FRR mode: activateNeighborFor)."""
        return self.dual_stack or ipaddress.ip_address(self.address).version == version


@dataclass(frozen=True)
class Attributes:
    local_pref: Optional[int] = None
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()

    @property
    def route_map(self) -> str:
        text = f"{self.local_pref}|{' '.join(self.communities)}|{' '.join(self.large_communities)}"
        return "ne-attr-" + hashlib.sha256(text.encode()).hexdigest()[:10]

    def route_map_lines(self) -> list[str]:
        out = [f"route-map {self.route_map} permit 10"]
        if self.local_pref is not None:
            out.append(f" set local-preference {self.local_pref}")
        if self.communities:
            out.append(f" set community {' '.join(self.communities)}")
        if self.large_communities:
            out.append(f" set large-community {' '.join(self.large_communities)}")
        return out + ["exit"]


@dataclass(frozen=True)
class SpeakerConfig:
    """One node's FRR: the sessions (static: a change restarts bgpd) and the routes (applied live)."""

    hostname: str
    asn: int
    router_id: str
    neighbors: tuple[Neighbor, ...] = ()
    bfd_profiles: tuple[BFD, ...] = ()
    networks: Mapping[str, Attributes] = field(default_factory=dict)  # prefix -> its attributes
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # neighbor address -> prefixes

    def static_key(self) -> tuple:
        return (self.hostname, self.asn, self.router_id, self.neighbors, self.bfd_profiles)

    def files(self) -> dict[str, str]:
        """zebra.conf, bfdd.conf, bgpd.conf: the whole configuration, routes included."""
        return {"zebra": _zebra(self.hostname), "bfdd": bfdd_text(self.hostname, self.bfd_profiles),
                "bgpd": self.bgpd_text()}

    def bgpd_text(self) -> str:
        lines = _head(self.hostname)
        for attrs in sorted(set(self.networks.values()), key=lambda a: a.route_map):
            lines += attrs.route_map_lines()
        for i, n in enumerate(self.neighbors):
            name = prefix_list_name(n.address)
            # one numbering over both families (IPv4's and IPv6's prefix-lists of one name are two lists)
            for seq, prefix in enumerate(self.filters.get(n.address, ()), start=1):
                lines.append(f"{_pl(prefix)} prefix-list {name} seq {seq} permit {prefix}")
            lines += [f"{kw} prefix-list {name} seq {SEQ_DENY} deny any"
                      for kw, version in (("ip", 4), ("ipv6", 6)) if version == 4 or n.carries(version)]
        lines += [f"router bgp {self.asn}", f" bgp router-id {self.router_id}", " no bgp ebgp-requires-policy",
                  " no bgp network import-check", " no bgp default ipv4-unicast"]
        for n in self.neighbors:
            lines += _neighbor_lines(n)
        for family, version in (("ipv4", 4), ("ipv6", 6)):
            nets = [p for p in self.networks if ipaddress.ip_network(p).version == version]
            active = [n for n in self.neighbors if n.carries(version)]
            if not nets and not active and version == 6:
                continue
            lines.append(f" address-family {family} unicast")
            for n in active:
                lines += [f"  neighbor {n.address} activate",
                          f"  neighbor {n.address} prefix-list {prefix_list_name(n.address)} out"]
            for p in sorted(nets, key=_net_key):
                lines.append(f"  network {p} route-map {self.networks[p].route_map}")
            lines.append(" exit-address-family")
        lines.append("exit")
        return "\n".join(lines) + "\n"


def prefix_list_name(address: str) -> str:
    return "ne-out-" + address.replace(":", "-")


def _pl(prefix: str) -> str:
    """The prefix-list keyword of a prefix's family."""
    return "ip" if ipaddress.ip_network(prefix).version == 4 else "ipv6"


def _head(hostname: str) -> list[str]:
    return ["frr defaults traditional", f"hostname {hostname}", "log timestamp precision 3", "!"]


def _zebra(hostname: str) -> str:
    return "\n".join(_head(hostname)) + "\n"


def bfdd_text(hostname: str, profiles: tuple[BFD, ...]) -> str:
    lines = _head(hostname)
    if profiles:
        lines.append("bfd")
        for b in profiles:
            lines.append(f" profile {b.name}")
            for key, value in (("receive-interval", b.receive_interval), ("transmit-interval", b.transmit_interval),
                               ("detect-multiplier", b.detect_multiplier), ("echo receive-interval", b.echo_interval),
                               ("minimum-ttl", b.minimum_ttl)):
                if value is not None:
                    lines.append(f"  {key} {value}")
            if b.echo_mode:
                lines.append("  echo-mode")
            if b.passive_mode:
                lines.append("  passive-mode")
            lines.append(" exit")
        lines.append("exit")
    return "\n".join(lines) + "\n"


def _secs(x: float) -> int:
    return int(round(x))


def _neighbor_lines(n: Neighbor) -> list[str]:
    a = n.address
    out = [f" neighbor {a} remote-as {n.remote_as}"]
    if n.local_as is not None:
        out.append(f" neighbor {a} local-as {n.local_as} no-prepend replace-as")
    if n.name:
        out.append(f" neighbor {a} description {n.name}")
    if n.port != 179:
        out.append(f" neighbor {a} port {n.port}")
    if n.hold_time is not None and n.keepalive_time is not None:
        out.append(f" neighbor {a} timers {_secs(n.keepalive_time)} {_secs(n.hold_time)}")
    if n.connect_time is not None:
        out.append(f" neighbor {a} timers connect {_secs(n.connect_time)}")
    if n.password:
        out.append(f" neighbor {a} password {n.password}")
    if n.ebgp_multihop:
        out.append(f" neighbor {a} ebgp-multihop")
    if n.source_address:
        out.append(f" neighbor {a} update-source {n.source_address}")
    if n.bfd_profile:
        out.append(f" neighbor {a} bfd profile {n.bfd_profile}")
    if n.graceful_restart:
        out.append(f" neighbor {a} graceful-restart")
    if n.disable_connected_check:
        out.append(f" neighbor {a} disable-connected-check")
    return out


def _net_key(prefix: str) -> tuple:
    n = ipaddress.ip_network(prefix)
    return (n.version, int(n.network_address), n.prefixlen)


def _addr_key(address: str) -> tuple:
    a = ipaddress.ip_address(address)
    return (a.version, int(a))


# --------------------------------------------------------------------------- from MetalLB's decisions
def _attributes(r: Route) -> Attributes:
    return Attributes(r.local_pref, tuple(r.communities), tuple(r.large_communities))


def speaker_configs(ann: BGPAnnouncements, config, node_ips: Mapping[str, str], alive: Mapping[str, bool],
                    passwords: Optional[Mapping[str, str]] = None) -> dict[str, SpeakerConfig]:
    """Every node whose speaker runs and that some BGPPeer selects: its FRR configuration. A node with
    peers and no routes still holds its sessions (as MetalLB's speaker does). ``passwords``: the
    peers' passwordSecrets, read (peer name -> password)."""
    out: dict[str, SpeakerConfig] = {}
    bgp = getattr(config, "bgp", None) if config is not None else None
    if bgp is None or not bgp.peers:
        return out
    passwords = passwords or {}
    for node, ip in sorted(node_ips.items()):
        if not alive.get(node, False):
            continue
        peers = [p for p in bgp.peers if node in p.nodes]
        if not peers:
            continue
        asn = peers[0].my_asn
        routes = ann.routes.get(node, {})
        networks: dict[str, Attributes] = {}
        filters: dict[str, list[str]] = {}
        neighbors = []
        for p in peers:
            neighbors.append(_speaker_neighbor(p, asn, passwords.get(p.name, "")))
            for r in routes.get(p.name, []):
                # one network per prefix: the first peer's attributes win when peers' differ (a limit
                # of announcing with `network`; MetalLB's own per-neighbor route-maps would differ)
                networks.setdefault(r.prefix, _attributes(r))
                filters.setdefault(p.address, []).append(r.prefix)
        profiles = tuple(sorted({bgp.bfd_profiles[p.bfd_profile] for p in peers if p.bfd_profile in bgp.bfd_profiles},
                                key=lambda b: b.name))
        out[node] = SpeakerConfig(node, asn, peers[0].router_id or ip, tuple(neighbors), profiles, networks,
                                  {a: tuple(sorted(set(v), key=_net_key)) for a, v in filters.items()})
    return out


def _speaker_neighbor(p: Peer, asn: int, secret: str) -> Neighbor:
    remote = p.dynamic_asn or str(p.asn)
    # MetalLB's mustDisableConnectedCheck: an IPv6 session, eBGP (external, or another ASN), single hop
    ebgp = p.dynamic_asn == "external" or (not p.dynamic_asn and p.asn != p.my_asn)
    return Neighbor(p.address, remote, p.my_asn if p.my_asn != asn else None, p.port, p.hold_time, p.keepalive_time,
                    p.connect_time, p.password or secret, p.ebgp_multihop, p.source_address, p.bfd_profile,
                    p.graceful_restart, p.name, p.dual_stack,
                    ipaddress.ip_address(p.address).version == 6 and ebgp and not p.ebgp_multihop)


# --------------------------------------------------------------------------- live changes
@dataclass(frozen=True)
class Applied:
    """What a running bgpd holds: the routes part of a SpeakerConfig, with the prefix-list entries' numbers."""

    networks: Mapping[str, Attributes] = field(default_factory=dict)
    filters: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # neighbor -> prefix -> seq
    route_maps: frozenset = frozenset()


def applied_from(cfg: SpeakerConfig) -> Applied:
    """What bgpd holds once started from ``cfg.files()``."""
    return Applied(dict(cfg.networks),
                   {n.address: {p: i for i, p in enumerate(cfg.filters.get(n.address, ()), start=1)}
                    for n in cfg.neighbors},
                   frozenset(a.route_map for a in cfg.networks.values()))


def plan(old: Applied, cfg: SpeakerConfig) -> tuple[list[str], Applied]:
    """vtysh configuration commands taking a running bgpd from ``old`` to ``cfg``'s routes (same
    sessions), and what it then holds. Order: a new prefix is allowed out before it is announced; a
    gone one is withdrawn before its filter entry goes."""
    cmds: list[str] = []
    maps = set(old.route_maps)
    for attrs in sorted(set(cfg.networks.values()), key=lambda a: a.route_map):
        if attrs.route_map not in maps:
            cmds += attrs.route_map_lines()
            maps.add(attrs.route_map)
    filters: dict[str, dict[str, int]] = {a: dict(v) for a, v in old.filters.items()}
    for n in cfg.neighbors:
        have = filters.setdefault(n.address, {})
        for p in cfg.filters.get(n.address, ()):
            if p not in have:
                seq = max(have.values(), default=0) + 1
                have[p] = seq
                cmds.append(f"{_pl(p)} prefix-list {prefix_list_name(n.address)} seq {seq} permit {p}")
    net_cmds: list[str] = []
    for p in sorted(set(old.networks) | set(cfg.networks), key=_net_key):
        family = "ipv4" if ipaddress.ip_network(p).version == 4 else "ipv6"
        if p not in cfg.networks:
            net_cmds.append((family, f"no network {p}"))
        elif old.networks.get(p) != cfg.networks[p]:
            net_cmds.append((family, f"network {p} route-map {cfg.networks[p].route_map}"))
    if net_cmds:
        cmds.append(f"router bgp {cfg.asn}")
        for family in ("ipv4", "ipv6"):
            mine = [c for f, c in net_cmds if f == family]
            if mine:
                cmds += [f" address-family {family} unicast", *[f"  {c}" for c in mine], " exit-address-family"]
        cmds.append("exit")
    for n in cfg.neighbors:
        have = filters[n.address]
        for p in sorted(set(have) - set(cfg.filters.get(n.address, ())), key=_net_key):
            cmds.append(f"no {_pl(p)} prefix-list {prefix_list_name(n.address)} seq {have.pop(p)} permit {p}")
    return cmds, Applied(dict(cfg.networks), filters, frozenset(maps))


# --------------------------------------------------------------------------- routers
# the upstream session (router <-> host): short timers, so that a restarted side is seen and retried soon
UPSTREAM_KEEPALIVE, UPSTREAM_HOLD, UPSTREAM_CONNECT = 3, 9, 2
# a router's IPv6 routes from the nodes go via their global addresses (FRR would otherwise install the
# link-local next hop a speaker on the same link also sends): the same next hops as `ip -6 neigh` and
# the Lab document name
GLOBAL_NEXT_HOP = "ne-v6-global"


@dataclass(frozen=True)
class RouterConfig:
    hostname: str
    asn: int
    router_id: str
    neighbors: tuple[Neighbor, ...] = ()
    bfd_profiles: tuple[BFD, ...] = ()
    upstream: Optional[tuple[str, int]] = None  # (the host's gateway address, the host's ASN)

    def files(self) -> dict[str, str]:
        six = [n for n in self.neighbors if n.carries(6)]
        lines = _head(self.hostname)
        if six:
            lines += [f"route-map {GLOBAL_NEXT_HOP} permit 10", " set ipv6 next-hop prefer-global", "exit"]
        lines += [
            f"router bgp {self.asn}", f" bgp router-id {self.router_id}", " no bgp ebgp-requires-policy",
            " no bgp default ipv4-unicast", " bgp bestpath as-path multipath-relax"]
        for n in self.neighbors:
            lines += _neighbor_lines(n)
        if self.upstream is not None:
            host, host_asn = self.upstream
            lines += [f" neighbor {host} remote-as {host_asn}", f" neighbor {host} description host",
                      f" neighbor {host} timers {UPSTREAM_KEEPALIVE} {UPSTREAM_HOLD}",
                      f" neighbor {host} timers connect {UPSTREAM_CONNECT}",
                      f" neighbor {host} advertisement-interval 0"]
        lines += [" address-family ipv4 unicast", f"  maximum-paths {MAX_PATHS}", f"  maximum-paths ibgp {MAX_PATHS}"]
        lines += [f"  neighbor {n.address} activate" for n in self.neighbors if n.carries(4)]
        if self.upstream is not None:  # the host gets the pools' routes via this router, not a node
            lines += [f"  neighbor {self.upstream[0]} activate", f"  neighbor {self.upstream[0]} next-hop-self"]
        lines.append(" exit-address-family")
        if six:  # (the upstream session stays IPv4: the host routes IPv6 pools statically)
            lines += [" address-family ipv6 unicast", f"  maximum-paths {MAX_PATHS}", f"  maximum-paths ibgp {MAX_PATHS}"]
            for n in six:
                lines += [f"  neighbor {n.address} activate", f"  neighbor {n.address} route-map {GLOBAL_NEXT_HOP} in"]
            lines.append(" exit-address-family")
        lines.append("exit")
        return {"zebra": _zebra(self.hostname), "bfdd": bfdd_text(self.hostname, self.bfd_profiles),
                "bgpd": "\n".join(lines) + "\n"}


def router_config(name: str, ip: str, asn: int, config, node_ips: Mapping[str, str],
                  passwords: Optional[Mapping[str, str]] = None,
                  upstream: Optional[tuple[str, int]] = None, ip6: Optional[str] = None,
                  node_ips6: Optional[Mapping[str, str]] = None) -> RouterConfig:
    """A lab router: every node of every BGPPeer aimed at its address (``ip``, or ``ip6`` in a dual-stack
    lab: then the node's ip6 is the neighbor) is a neighbor, with that peer's session settings seen from
    the other end (dualStackAddressFamily too); ``upstream`` (the host's gateway address and ASN): the
    host too."""
    bgp = getattr(config, "bgp", None) if config is not None else None
    neighbors: dict[str, Neighbor] = {}
    profiles: dict[str, BFD] = {}
    mine = {ipaddress.ip_address(a): ips for a, ips in ((ip, node_ips), (ip6, node_ips6 or {})) if a}
    for p in (bgp.peers if bgp is not None else []):
        ips = mine.get(ipaddress.ip_address(p.address))
        if ips is None:
            continue
        if p.bfd_profile and p.bfd_profile in bgp.bfd_profiles:
            profiles[p.bfd_profile] = bgp.bfd_profiles[p.bfd_profile]
        for node in sorted(p.nodes):
            addr = ips.get(node)
            if addr is None or addr in neighbors:
                continue
            neighbors[addr] = Neighbor(addr, str(p.my_asn), None, 179, p.hold_time, p.keepalive_time, p.connect_time,
                                       p.password or (passwords or {}).get(p.name, ""), p.ebgp_multihop, "",
                                       p.bfd_profile if p.bfd_profile in profiles else "", False, node,
                                       p.dual_stack)
    if upstream is not None:
        neighbors.pop(upstream[0], None)  # never a node's address (validation keeps nodes off the gateway)
    return RouterConfig(name, asn, ip, tuple(neighbors[a] for a in sorted(neighbors, key=_addr_key)),
                        tuple(profiles[k] for k in sorted(profiles)), upstream)


# --------------------------------------------------------------------------- the host's side (upstream)
HOST_POOLS = "ne-host-pools"  # the prefix-list of what the host accepts: inside the lab's BGP pools
HOST_IN = "ne-host-in"
HOST_OUT = "ne-host-out"  # the host announces nothing


@dataclass(frozen=True)
class HostConfig:
    """The host's bgpd (no zebra: FRR never touches the host's routing table): one neighbor, the upstream
    router, from which it accepts only prefixes inside ``pools`` (their more specifics too), to which it
    announces nothing. It listens on ``address`` (the lab's gateway) only: netemu.dataplane.frr's ``-l``."""

    hostname: str
    asn: int
    address: str  # the lab's gateway: the router id, the listening and the source address
    router: str  # the upstream router's lab address
    router_asn: int
    pools: tuple[str, ...] = ()  # IPv4 CIDRs
    router_name: str = ""

    def files(self) -> dict[str, str]:
        lines = _head(self.hostname)
        for seq, cidr in enumerate(sorted(self.pools, key=_net_key), start=1):
            lines.append(f"ip prefix-list {HOST_POOLS} seq {seq} permit {cidr} le 32")
        lines += [f"ip prefix-list {HOST_POOLS} seq {SEQ_DENY} deny any",
                  f"route-map {HOST_IN} permit 10", f" match ip address prefix-list {HOST_POOLS}", "exit",
                  f"route-map {HOST_OUT} deny 10", "exit"]
        r = self.router
        lines += [f"router bgp {self.asn}", f" bgp router-id {self.address}", " no bgp ebgp-requires-policy",
                  " no bgp default ipv4-unicast", f" neighbor {r} remote-as {self.router_asn}"]
        if self.router_name:
            lines.append(f" neighbor {r} description {self.router_name}")
        lines += [f" neighbor {r} update-source {self.address}",
                  f" neighbor {r} timers {UPSTREAM_KEEPALIVE} {UPSTREAM_HOLD}",
                  f" neighbor {r} timers connect {UPSTREAM_CONNECT}",
                  " address-family ipv4 unicast", f"  neighbor {r} activate",
                  f"  neighbor {r} route-map {HOST_IN} in", f"  neighbor {r} route-map {HOST_OUT} out",
                  " exit-address-family", "exit"]
        return {"bgpd": "\n".join(lines) + "\n"}


def host_routes_from(learned: Mapping, pools, next_hops) -> tuple[dict[str, str], list[str]]:
    """What the host should route, from its bgpd's ``show ip bgp json``: prefix -> next hop, for each
    best valid IPv4 path whose next hop is an upstream router (``next_hops``) and whose prefix lies inside
    one of ``pools`` (the lab's BGP pools outside the lab network); and why the other prefixes are not
    taken (defence in depth: the bgpd's own filter should have dropped them)."""
    nets = [ipaddress.ip_network(p) for p in pools]
    hops = {str(ipaddress.ip_address(h)) for h in next_hops}
    out: dict[str, str] = {}
    refused: list[str] = []
    for prefix, paths in sorted((learned.get("routes") or {}).items()):
        try:
            net = ipaddress.ip_network(prefix)
        except ValueError:
            refused.append(f"{prefix}: not a prefix")
            continue
        best = [p for p in (paths or []) if p.get("valid") and p.get("bestpath")]
        if not best:
            continue
        if net.version != 4 or not any(n.version == 4 and net.subnet_of(n) for n in nets):
            refused.append(f"{prefix}: outside the lab's BGP pools")
            continue
        via = [h.get("ip") for h in best[0].get("nexthops") or [] if h.get("ip")]
        via = [v for v in via if v in hops]
        if not via:
            refused.append(f"{prefix}: next hop {', '.join(h.get('ip', '?') for h in best[0].get('nexthops') or [])}"
                           f" is not the upstream router")
            continue
        out[str(net)] = via[0]
    return out, refused


__all__ = ["Neighbor", "Attributes", "SpeakerConfig", "speaker_configs", "Applied", "applied_from", "plan",
           "RouterConfig", "router_config", "prefix_list_name", "bfdd_text", "HostConfig", "host_routes_from"]
