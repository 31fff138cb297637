"""MetalLB's BGP configuration, checked as MetalLB checks it (``internal/config/config.go`` and
``validation.go`` of MetalLB v0.14, FRR mode; ``internal/bgp/community``).

Two kinds of checks, as in MetalLB:

- one object alone (:func:`peer_problems`, :func:`advertisement_problems`, :func:`bfd_problems`,
  :func:`community_problems`): what the CRDs' schemas and MetalLB's parsing of one resource refuse
  (a missing ASN, a hold time under 3 s, an aggregation length over 32, a malformed community);
  the loader and the API refuse such objects;
- the objects together (:func:`config_problems`): what MetalLB finds only when it builds its
  configuration from every resource (a BFD profile or a community alias that does not exist, two
  peers for the same address, an aggregation length shorter than a pool's prefix, two local
  preferences for the same update). MetalLB then refuses the whole configuration; netemu reports them
  as the configuration's warnings (``metallb.config_warnings``) and announces nothing over BGP.

The legacy ConfigMap's ``peers``, ``bgp-communities``, ``bfd-profiles`` and ``protocol: bgp`` pools are
turned into these kinds as MetalLB's ``configmaptocrs`` converter names them (``peer1``,
``bgpadvertisement1``, one Community ``communities``), see :func:`legacy_bgp`.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from netemu.spec.models import LabelSelector, ObjectMeta

# imported by netemu.spec.metallb's last lines, after everything below is defined there
from netemu.spec.metallb import (
    NAMESPACE, BFDProfile, BFDProfileSpec, BGPAdvertisement, BGPAdvertisementSpec, BGPPeer, BGPPeerSpec, Community,
    CommunityAlias, CommunitySpec, IPAddressPool, pool_networks,
)

Problem = tuple[str, str]  # (field path, message)

MAX_ASN = 4294967295
MAX_PORT = 16384
# MetalLB's bfdIntFromConfig ranges and its wording of each field
BFD_RANGES = {"detectMultiplier": (2, 255, "detect multiplier"), "receiveInterval": (10, 60000, "receive interval"),
              "transmitInterval": (10, 60000, "transmit interval"), "minimumTtl": (1, 254, "minimum ttl"),
              "echoInterval": (10, 60000, "echo interval")}


# --------------------------------------------------------------------------- values
class CommunityError(ValueError):
    def __init__(self, text: str, is_format: bool):
        super().__init__(text)
        self.is_format = is_format  # not a community at all: perhaps the name of an alias


@dataclass(frozen=True, order=True)
class BGPCommunity:
    """A standard community (``64500:100``) or a large one (``large:64500:1:2``), ordered as MetalLB
    orders them (a standard one counts as the large community ``<its 32 bits>:0:0``)."""

    key: tuple[int, int, int]
    large: bool

    def __str__(self) -> str:
        if self.large:
            return ":".join(map(str, self.key))
        return f"{self.key[0] >> 16}:{self.key[0] & 0xFFFF}"


def parse_community(text: str) -> BGPCommunity:
    """community.New: ``a:b`` (16 bits each) or ``large:a:b:c`` (32 bits each)."""
    parts = str(text).split(":")
    if len(parts) == 2:
        vals = [_section(p, text, 16) for p in parts]
        return BGPCommunity(((vals[0] << 16) + vals[1], 0, 0), False)
    if len(parts) == 4:
        if parts[0] != "large":
            raise CommunityError(f"invalid community value: invalid marker for large community, expected community "
                                 f"to be of format large:<uint32>:<uint32>:<uint32> but got {text!r} instead", False)
        a, b, c = (_section(p, text, 32) for p in parts[1:])
        return BGPCommunity((a, b, c), True)
    raise CommunityError(f"invalid community format: {text}", True)


def _section(part: str, text: str, bits: int) -> int:
    if not part.isdigit() or int(part) >= 1 << bits:
        raise CommunityError(f"invalid community value: invalid section {part!r} of community {text!r} "
                             f"(a {bits}-bit unsigned number)", False)
    return int(part)


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: Any) -> float:
    """Go's time.ParseDuration (what a metav1.Duration reads): ``90s``, ``1m30s``, ``300ms``, ``0``
    -> seconds."""
    s = str(text).strip()
    sign = -1.0 if s.startswith("-") else 1.0
    body = s.lstrip("+-")
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(body):
        m = _DURATION.match(body, pos)
        if m is None:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise ValueError(f'time: invalid duration "{s}"')
    return sign * total


def _ip(text: Any) -> Optional[ipaddress._BaseAddress]:
    try:
        return ipaddress.ip_address(str(text).strip())
    except ValueError:
        return None


def timers(hold: Optional[str], keepalive: Optional[str]) -> tuple[Optional[float], Optional[float]]:
    """parseTimers: (hold time, keepalive time) in seconds, the one not given derived from the other
    (hold = 3 x keepalive); ValueError with MetalLB's message when they do not fit."""
    if hold is None and keepalive is None:
        return None, None
    ht = parse_duration(hold) if hold is not None else None
    ka = parse_duration(keepalive) if keepalive is not None else None
    if ht is None:
        ht = ka * 3
    if ka is None:
        ka = ht / 3
    if int(ht) != 0 and int(ht) < 3:
        raise ValueError(f'invalid hold time "{hold if hold is not None else f"{ht:g}s"}": must be 0 or >=3s')
    if ka > ht:
        raise ValueError(f'invalid keepaliveTime "{keepalive}", must be lower than holdTime "{hold}"')
    return ht, ka


# --------------------------------------------------------------------------- one object
def _selector_dups(sels: Optional[list[LabelSelector]], path: str, what: str) -> list[Problem]:
    out = []
    seen: list[dict] = []
    for i, sel in enumerate(sels or []):
        for j, req in enumerate(sel.match_expressions or []):
            vals = req.values or []
            if len(set(vals)) != len(vals):
                dup = next(v for v in vals if vals.count(v) > 1)
                out.append((f"{path}[{i}].matchExpressions[{j}].values",
                            f"duplicate definition of match expression value in label selector {dup!r}"))
        d = sel.dump()
        if d in seen:
            out.append((f"{path}[{i}]", f"duplicate definition of {what}"))
        seen.append(d)
    return out


def _dups(values: Optional[list], path: str, what: str) -> list[Problem]:
    out = []
    for i, v in enumerate(values or []):
        if v in (values or [])[:i]:
            out.append((f"{path}[{i}]", f"duplicate definition of {what} {v!r}"))
    return out


def peer_problems(peer: BGPPeer) -> list[Problem]:
    """peerFromCR and the CRD's schema, for one BGPPeer."""
    s: BGPPeerSpec = peer.spec
    out: list[Problem] = []
    for key, v in (("myASN", s.my_asn), ("peerASN", s.peer_asn)):
        if v is not None and not 0 <= v <= MAX_ASN:
            out.append((f"spec.{key}", f"must be in 0-{MAX_ASN}, got {v}"))
    if not s.my_asn:
        out.append(("spec.myASN", "missing local ASN"))
    if not s.peer_asn and not s.dynamic_asn:
        out.append(("spec.peerASN", "missing peer ASN and dynamicASN"))
    if s.peer_asn and s.dynamic_asn:
        out.append(("spec.dynamicASN", "both peer ASN and dynamicASN specified"))
    if s.dynamic_asn and s.dynamic_asn not in ("internal", "external"):
        out.append(("spec.dynamicASN", f"invalid dynamicASN {s.dynamic_asn} (internal or external)"))
    if s.ebgp_multi_hop and (s.peer_asn or 0) == (s.my_asn or 0):
        out.append(("spec.ebgpMultiHop", "invalid ebgp-multihop parameter set for an ibgp peer"))
    if s.peer_address is None:
        out.append(("spec.peerAddress", "required field is missing"))
    elif _ip(s.peer_address) is None:
        out.append(("spec.peerAddress", f'invalid BGPPeer address "{s.peer_address}"'))
    if s.peer_port is not None and not 0 <= s.peer_port <= MAX_PORT:
        out.append(("spec.peerPort", f"must be in 0-{MAX_PORT}, got {s.peer_port}"))
    for key, text in (("holdTime", s.hold_time), ("keepaliveTime", s.keepalive_time)):
        if text is not None:
            try:
                parse_duration(text)
            except ValueError as e:
                out.append((f"spec.{key}", f"invalid BGPPeer timers: {e}"))
    if not any(p[0] in ("spec.holdTime", "spec.keepaliveTime") for p in out):
        try:
            timers(s.hold_time, s.keepalive_time)
        except ValueError as e:
            key = "spec.keepaliveTime" if "keepalive" in str(e) else "spec.holdTime"
            out.append((key, f"invalid BGPPeer timers: {e}"))
    if s.connect_time is not None:
        try:
            ct = parse_duration(s.connect_time)
        except ValueError as e:
            out.append(("spec.connectTime", str(e)))
        else:
            if not 1 <= int(ct) <= 65535:
                out.append(("spec.connectTime", "connect time should be between 1 seconds to 65535"))
            elif round(ct * 1000) % 1000:
                out.append(("spec.connectTime", "connect time should contain a whole number of seconds"))
    if s.router_id and _ip(s.router_id) is None:
        out.append(("spec.routerID", f'invalid router ID "{s.router_id}"'))
    if s.source_address and _ip(s.source_address) is None:
        out.append(("spec.sourceAddress", f'invalid source IP "{s.source_address}"'))
    out += _selector_dups(s.node_selectors, "spec.nodeSelectors", "nodeSelectors")
    if s.password and s.password_secret is not None and s.password_secret.name:
        out.append(("spec.passwordSecret", f'can not have both password and secret ref set in peer config '
                                           f'"{peer.metadata.namespace or ""}"/"{peer.metadata.name or ""}"'))
    return out


def advertisement_problems(adv: BGPAdvertisement) -> list[Problem]:
    """bgpAdvertisementFromCR and the CRD's schema, for one BGPAdvertisement (community aliases are
    resolved with the others: :func:`config_problems`)."""
    s: BGPAdvertisementSpec = adv.spec
    out: list[Problem] = []
    out += _dups(s.ip_address_pools, "spec.ipAddressPools", "ipAddressPools")
    out += _dups(s.communities, "spec.communities", "community")
    out += _dups(s.peers, "spec.peers", "peers")
    out += _selector_dups(s.ip_address_pool_selectors, "spec.ipAddressPoolSelectors", "ipAddressPoolSelectors")
    out += _selector_dups(s.node_selectors, "spec.nodeSelectors", "nodeSelectors")
    if s.aggregation_length is not None:
        if s.aggregation_length < 1:
            out.append(("spec.aggregationLength", f"should be greater than or equal to 1, got {s.aggregation_length}"))
        elif s.aggregation_length > 32:
            out.append(("spec.aggregationLength", f"invalid aggregation length {s.aggregation_length} for IPv4"))
    if s.aggregation_length_v6 is not None and not 0 <= s.aggregation_length_v6 <= 128:
        out.append(("spec.aggregationLengthV6", f"invalid aggregation length {s.aggregation_length_v6} for IPv6"))
    if s.local_pref is not None and not 0 <= s.local_pref <= MAX_ASN:
        out.append(("spec.localPref", f"must be in 0-{MAX_ASN}, got {s.local_pref}"))
    for i, c in enumerate(s.communities or []):
        try:
            parse_community(c)
        except CommunityError as e:
            if not e.is_format:  # a malformed value; a word may be an alias (checked with the Communities)
                out.append((f"spec.communities[{i}]", f'invalid community "{c}" in BGP advertisement: {e}'))
    return out


def bfd_problems(bfd: BFDProfile) -> list[Problem]:
    """bfdProfileFromCR: each interval within MetalLB's (and FRR's) range."""
    out: list[Problem] = []
    spec = bfd.spec.dump()
    for key, (lo, hi, words) in BFD_RANGES.items():
        v = spec.get(key)
        if v is not None and not lo <= v <= hi:
            out.append((f"spec.{key}", f"invalid {words} value: invalid value {v}, must be in {lo}-{hi} range"))
    return out


def community_problems(com: Community) -> list[Problem]:
    out: list[Problem] = []
    names: list[str] = []
    for i, alias in enumerate(com.spec.communities or []):
        if not alias.name:
            out.append((f"spec.communities[{i}].name", "missing community alias name"))
        elif alias.name in names:
            out.append((f"spec.communities[{i}].name", f'duplicate definition of community "{alias.name}"'))
        names.append(alias.name or "")
        try:
            parse_community(alias.value or "")
        except CommunityError as e:
            out.append((f"spec.communities[{i}].value", f'parsing community "{alias.name}": {e}'))
    return out


OBJECT_CHECKS: dict[type, Callable[[Any], list[Problem]]] = {
    BGPPeer: peer_problems, BGPAdvertisement: advertisement_problems, BFDProfile: bfd_problems,
    Community: community_problems}


# --------------------------------------------------------------------------- the objects together
@dataclass
class ConfigProblem:
    kind: str
    name: str
    path: str
    text: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: " + (f"{self.path}: " if self.path else "") + self.text


def community_aliases(communities: Iterable[Community], problems: list[ConfigProblem]) -> dict[str, BGPCommunity]:
    """communitiesFromCrs: every alias of every Community (a name defined twice is an error)."""
    out: dict[str, BGPCommunity] = {}
    for com in communities:
        for i, alias in enumerate(com.spec.communities or []):
            try:
                value = parse_community(alias.value or "")
            except CommunityError:
                continue  # the object's own check says so
            if alias.name in out:
                problems.append(ConfigProblem("Community", com.metadata.name or "", f"spec.communities[{i}].name",
                                              f'duplicate definition of community "{alias.name}"'))
                continue
            out[alias.name or ""] = value
    return out


def resolve_communities(adv: BGPAdvertisement, aliases: dict[str, BGPCommunity],
                        problems: list[ConfigProblem]) -> list[BGPCommunity]:
    """getCommunityValue: an alias, else a community value; an unknown word is an error."""
    out: list[BGPCommunity] = []
    for i, text in enumerate(adv.spec.communities or []):
        if text in aliases:
            value = aliases[text]
        else:
            try:
                value = parse_community(text)
            except CommunityError as e:
                if e.is_format:
                    problems.append(ConfigProblem("BGPAdvertisement", adv.metadata.name or "", f"spec.communities[{i}]",
                                                  f'invalid community "{text}" in BGP advertisement: no Community '
                                                  f'defines the alias "{text}" ({e})'))
                continue
        if value not in out:
            out.append(value)
    return sorted(out)


def _peer_key(s: BGPPeerSpec) -> tuple:
    return (s.my_asn, s.peer_asn, s.dynamic_asn, s.peer_address, s.source_address, s.peer_port, s.hold_time,
            s.keepalive_time, s.connect_time, s.router_id, [x.dump() for x in s.node_selectors or []], s.password,
            s.password_secret.dump() if s.password_secret else None, s.bfd_profile, bool(s.enable_graceful_restart),
            bool(s.ebgp_multi_hop), s.vrf or "", bool(s.disable_mp))


def config_problems(pools: list[IPAddressPool], peers: list[BGPPeer], advertisements: list[BGPAdvertisement],
                    bfd_profiles: list[BFDProfile], communities: list[Community],
                    selected_pools: Callable[[BGPAdvertisement], list[IPAddressPool]],
                    nodes_of: Optional[Callable[[BGPAdvertisement], frozenset]] = None) -> list[ConfigProblem]:
    """What MetalLB refuses when it builds its configuration from all of them (config.For in FRR mode:
    bfdProfilesFor, peersFor, poolsFor, DiscardNativeOnly, validateConfig). ``selected_pools`` gives the
    pools an advertisement applies to (by name, by selector, or all); ``nodes_of`` the nodes it selects
    (unknown: every advertisement counts as sharing nodes with every other)."""
    problems: list[ConfigProblem] = []
    bfd_names: dict[str, BFDProfile] = {}
    for b in bfd_profiles:
        name = b.metadata.name or ""
        if name in bfd_names:
            problems.append(ConfigProblem("BFDProfile", name, "", f"found duplicate bfd profile name {name}"))
        bfd_names[name] = b
    seen: list[tuple[tuple, str]] = []
    addresses: dict[tuple[str, str], str] = {}
    for p in peers:
        name, s = p.metadata.name or "", p.spec
        if s.bfd_profile and s.bfd_profile not in bfd_names:
            problems.append(ConfigProblem("BGPPeer", name, "spec.bfdProfile",
                                          f"peer {name} referencing non existing bfd profile {s.bfd_profile}"))
        key = _peer_key(s)
        if any(k == key for k, _ in seen):
            problems.append(ConfigProblem("BGPPeer", name, "", f"peer {name} already exists"))
        else:
            addr = (str(s.peer_address), s.vrf or "")
            if addr in addresses:
                problems.append(ConfigProblem("BGPPeer", name, "spec.peerAddress",
                                              f"peer {s.peer_address} already exists, FRR mode doesn't support "
                                              f"duplicate BGPPeers (also BGPPeer {addresses[addr]})"))
            addresses.setdefault(addr, name)
        seen.append((key, name))
    if peers:  # FRR mode: one BGP router per VRF on a node
        first = peers[0]
        for p in peers[1:]:
            if (p.spec.router_id or "") != (first.spec.router_id or ""):
                problems.append(ConfigProblem("BGPPeer", p.metadata.name or "", "spec.routerID",
                                              f"peer {p.spec.router_id or '(none)'} has RouterID different from "
                                              f"{first.spec.router_id or '(none)'}, in FRR mode all RouterID must be "
                                              "equal"))
        for i, p in enumerate(peers):
            other = next((q for q in peers[:i] if q.spec.my_asn != p.spec.my_asn
                          and (q.spec.vrf or "") == (p.spec.vrf or "")), None)
            if other is not None:
                problems.append(ConfigProblem("BGPPeer", p.metadata.name or "", "spec.myASN",
                                              f"peer {p.spec.peer_address} has myAsn different from "
                                              f"{other.spec.peer_address}, in FRR mode all myAsn must be equal for "
                                              "the same VRF"))
    aliases = community_aliases(communities, problems)
    dumped = [a.spec.dump() for a in advertisements]
    for j, d in enumerate(dumped):
        i = next((i for i in range(j) if dumped[i] == d), None)
        if i is not None:
            problems.append(ConfigProblem("BGPAdvertisement", advertisements[j].metadata.name or "", "",
                                          f"duplicate definition of bgpadvertisements. advertisement {i + 1} and "
                                          f"{j + 1} are equal"))
    by_pool: dict[str, list[BGPAdvertisement]] = {}
    for adv in advertisements:
        resolve_communities(adv, aliases, problems)
        for pool in selected_pools(adv):
            problem = aggregation_problem(adv, pool)
            if problem:
                problems.append(ConfigProblem("BGPAdvertisement", adv.metadata.name or "", "spec.aggregationLength",
                                              problem))
            for other in by_pool.get(pool.metadata.name or "", []):
                if (other.spec.local_pref or 0) != (adv.spec.local_pref or 0) and not _compatible(adv, other,
                                                                                                  nodes_of):
                    problems.append(ConfigProblem(
                        "BGPAdvertisement", adv.metadata.name or "", "spec.localPref",
                        f"invalid local preference {adv.spec.local_pref or 0}: local preferernce "
                        f"{other.spec.local_pref or 0} was already set for the same type of BGP update. Check existing "
                        "BGP advertisements with common pools and aggregation lengths"))
            by_pool.setdefault(pool.metadata.name or "", []).append(adv)
    echo = {n for n, b in bfd_names.items() if b.spec.echo_mode}
    for adv in advertisements:
        for pool in selected_pools(adv):
            if not any(n.version == 6 for n in pool_networks(pool)):
                continue
            for p in peers:
                if (not adv.spec.peers or p.metadata.name in adv.spec.peers) and p.spec.bfd_profile in echo:
                    problems.append(ConfigProblem(
                        "BGPAdvertisement", adv.metadata.name or "", "",
                        f"pool {pool.metadata.name} has bgpadvertisement {adv.metadata.name} which references peer "
                        f"{p.metadata.name} which has bfd echo enabled, which is not possible"))
    return problems


def aggregation_problem(adv: BGPAdvertisement, pool: IPAddressPool) -> Optional[str]:
    """validateBGPAdvPerPool: an aggregated prefix may not reach past the pool (an aggregation length
    shorter than the prefix of one of the pool's entries)."""
    from netemu.spec.metallb import AddressError, parse_addresses

    v4 = adv.spec.aggregation_length if adv.spec.aggregation_length is not None else 32
    v6 = adv.spec.aggregation_length_v6 if adv.spec.aggregation_length_v6 is not None else 128
    for entry in pool.spec.addresses or []:
        try:
            nets = parse_addresses(entry)
        except AddressError:
            continue
        if not nets:
            continue
        length = v4 if nets[0].version == 4 else v6
        lowest = min(n.prefixlen for n in nets)
        if length < lowest:
            return (f"invalid aggregation length {length}: prefix {lowest} in this pool is more specific than the "
                    f"aggregation length for addresses {entry}")
    return None


def _compatible(a: BGPAdvertisement, b: BGPAdvertisement,
                nodes_of: Optional[Callable[[BGPAdvertisement], frozenset]]) -> bool:
    """advertisementsAreCompatible: two local preferences may coexist on a pool when the updates differ
    (aggregation lengths of both families), go to different peers (both lists given, disjoint) or
    leave from different nodes."""
    if (a.spec.aggregation_length != b.spec.aggregation_length
            and a.spec.aggregation_length_v6 != b.spec.aggregation_length_v6):
        return True
    if a.spec.peers and b.spec.peers and not set(a.spec.peers) & set(b.spec.peers):
        return True
    return nodes_of is not None and not nodes_of(a) & nodes_of(b)


# --------------------------------------------------------------------------- the legacy ConfigMap
@dataclass
class LegacyBGP:
    """The BGP part of a legacy config, as MetalLB's converter writes it, with the field path in the
    ConfigMap of every object (for messages)."""

    peers: list[BGPPeer]
    advertisements: list[BGPAdvertisement]
    bfd_profiles: list[BFDProfile]
    communities: list[Community]
    paths: dict[tuple[str, str], str]  # (kind, name) -> path inside data.config


# CRD field -> legacy key, to tell a converted object's problems in the ConfigMap's terms
_LEGACY_KEYS = {
    "myASN": "my-asn", "peerASN": "peer-asn", "peerAddress": "peer-address", "sourceAddress": "source-address",
    "peerPort": "peer-port", "holdTime": "hold-time", "keepaliveTime": "keepalive-time", "routerID": "router-id",
    "nodeSelectors": "node-selectors", "password": "password", "bfdProfile": "bfd-profile",
    "ebgpMultiHop": "ebgp-multihop", "aggregationLength": "aggregation-length",
    "aggregationLengthV6": "aggregation-length-v6", "localPref": "localpref", "communities": "communities",
    "receiveInterval": "receive-interval", "transmitInterval": "transmit-interval",
    "detectMultiplier": "detect-multiplier", "echoInterval": "echo-interval", "minimumTtl": "minimum-ttl",
}


def legacy_path(base: str, crd_path: str) -> str:
    """``spec.holdTime`` of the peer converted from ``peers[0]`` -> ``peers[0].hold-time``."""
    rest = crd_path[len("spec."):] if crd_path.startswith("spec.") else crd_path
    if not rest:
        return base
    head, sep, tail = rest.partition(".")
    m = re.match(r"([A-Za-z0-9]+)(\[.*)?$", head)
    if m is None:
        return f"{base}.{rest}"
    key = _LEGACY_KEYS.get(m.group(1), m.group(1)) + (m.group(2) or "")
    return f"{base}.{key}" + (f".{tail}" if sep else "")


def _legacy_selector(raw: Any) -> dict:
    raw = raw if isinstance(raw, dict) else {}
    exprs = [{"key": e.get("key"), "operator": e.get("operator"), "values": e.get("values")}
             for e in raw.get("match-expressions") or [] if isinstance(e, dict)]
    return {k: v for k, v in (("matchLabels", raw.get("match-labels")), ("matchExpressions", exprs)) if v}


# legacy key -> (CRD key, type) of what a v0.12 config may hold
_PEER_FIELDS = {"my-asn": ("myASN", int), "peer-asn": ("peerASN", int), "peer-address": ("peerAddress", str),
                "source-address": ("sourceAddress", str), "peer-port": ("peerPort", int),
                "hold-time": ("holdTime", str), "keepalive-time": ("keepaliveTime", str),
                "router-id": ("routerID", str), "password": ("password", str), "bfd-profile": ("bfdProfile", str),
                "ebgp-multihop": ("ebgpMultiHop", bool)}
_ADV_FIELDS = {"aggregation-length": ("aggregationLength", int), "aggregation-length-v6": ("aggregationLengthV6", int),
               "localpref": ("localPref", int)}
_BFD_FIELDS = {"receive-interval": ("receiveInterval", int), "transmit-interval": ("transmitInterval", int),
               "detect-multiplier": ("detectMultiplier", int), "echo-interval": ("echoInterval", int),
               "minimum-ttl": ("minimumTtl", int), "echo-mode": ("echoMode", bool),
               "passive-mode": ("passiveMode", bool)}
_NOUN = {int: "an integer", str: "a string", bool: "true or false"}


def _typed(raw: dict, fields: dict, base: str, problems: list[Problem]) -> dict:
    """The legacy keys of ``raw`` as CRD keys, each of the type MetalLB's config struct has."""
    out: dict = {}
    for key, value in raw.items():
        if key not in fields:
            continue
        crd, kind = fields[key]
        if value is None:
            continue
        if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # YAML reads peer-address 10.0.0.1 as text, but hold-time: 90 as a number
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append((f"{base}.{key}", f"must be {_NOUN[kind]}, got {value!r}"))
            continue
        out[crd] = value
    return out


def legacy_bgp(data: dict, bgp_pools: list[tuple[str, dict, IPAddressPool]]) -> tuple[LegacyBGP, list[Problem]]:
    """The legacy config's ``peers``, ``bfd-profiles``, ``bgp-communities`` and the ``bgp-advertisements``
    of its ``protocol: bgp`` pools (``bgp_pools``: (path, raw pool, converted pool)) -> MetalLB's kinds,
    and every problem MetalLB 0.12 would have refused the config for, by path inside data.config."""
    problems: list[Problem] = []
    out = LegacyBGP([], [], [], [], {})
    meta = dict(namespace=NAMESPACE)
    for i, raw in enumerate(_items(data, "bfd-profiles", problems)):
        base = f"bfd-profiles[{i}]"
        if not raw.get("name"):
            problems.append((f"{base}.name", "missing bfd profile name"))
            continue
        spec = BFDProfileSpec.model_validate(_typed(raw, _BFD_FIELDS, base, problems))
        # the converter writes both flags, false when not given
        spec.echo_mode, spec.passive_mode = bool(spec.echo_mode), bool(spec.passive_mode)
        out.bfd_profiles.append(BFDProfile(metadata=ObjectMeta(name=str(raw["name"]), **meta), spec=spec))
        out.paths[("BFDProfile", str(raw["name"]))] = base
    for i, raw in enumerate(_items(data, "peers", problems)):
        base, name = f"peers[{i}]", f"peer{i + 1}"
        fields = _typed(raw, _PEER_FIELDS, base, problems)
        fields.setdefault("holdTime", "90s")  # MetalLB 0.12's default, which the converter writes
        sels = raw.get("node-selectors")
        if sels is not None and not isinstance(sels, list):
            problems.append((f"{base}.node-selectors", "must be a list of selectors (match-labels, "
                                                       "match-expressions)"))
        elif sels:
            fields["nodeSelectors"] = [_legacy_selector(s) for s in sels]
        try:
            spec = BGPPeerSpec.model_validate(fields)
        except ValueError as e:  # a malformed selector
            problems.append((f"{base}.node-selectors", str(e).splitlines()[0]))
            continue
        out.peers.append(BGPPeer(metadata=ObjectMeta(name=name, **meta), spec=spec))
        out.paths[("BGPPeer", name)] = base
    communities = data.get("bgp-communities")
    if communities is not None and not isinstance(communities, dict):
        problems.append(("bgp-communities", "must be a mapping of alias: community"))
    elif communities:
        aliases = [CommunityAlias(name=str(k), value=str(communities[k])) for k in sorted(communities, key=str)]
        out.communities.append(Community(metadata=ObjectMeta(name="communities", **meta),
                                         spec=CommunitySpec(communities=aliases)))
        out.paths[("Community", "communities")] = "bgp-communities"
    index = 1
    for base, raw, pool in bgp_pools:
        ads = raw.get("bgp-advertisements") or [{}]  # a BGP pool without any: one with the defaults
        if not isinstance(ads, list):
            problems.append((f"{base}.bgp-advertisements", "must be a list of advertisements"))
            continue
        for j, ad in enumerate(ads):
            path = f"{base}.bgp-advertisements[{j}]"
            if not isinstance(ad, dict):
                problems.append((path, "must be a mapping (aggregation-length, localpref, communities)"))
                continue
            fields = _typed(ad, _ADV_FIELDS, path, problems)
            comms = ad.get("communities")
            if comms is not None:
                fields["communities"] = [str(c) for c in (comms if isinstance(comms, list) else [comms])]
            fields["ipAddressPools"] = [pool.metadata.name]
            name = f"bgpadvertisement{index}"
            index += 1
            out.advertisements.append(BGPAdvertisement(metadata=ObjectMeta(name=name, **meta),
                                                       spec=BGPAdvertisementSpec.model_validate(fields)))
            out.paths[("BGPAdvertisement", name)] = path
    for com in out.communities:  # a map in the ConfigMap: bgp-communities.<alias>
        for alias in com.spec.communities or []:
            try:
                parse_community(alias.value or "")
            except CommunityError as e:
                problems.append((f"bgp-communities.{alias.name}", f'parsing community "{alias.name}": {e}'))
    for obj in [*out.bfd_profiles, *out.peers, *out.advertisements]:
        base = out.paths[(obj.kind, obj.metadata.name)]
        problems += [(legacy_path(base, p), t) for p, t in OBJECT_CHECKS[type(obj)](obj)]
    pools = {pool.metadata.name: pool for _, _, pool in bgp_pools}
    for prob in config_problems(list(pools.values()), out.peers, out.advertisements, out.bfd_profiles,
                                out.communities, lambda a: [pools[n] for n in a.spec.ip_address_pools or []
                                                            if n in pools]):
        problems.append((legacy_path(out.paths.get((prob.kind, prob.name), ""), prob.path), prob.text))
    return out, problems


def _items(data: dict, key: str, problems: list[Problem]) -> list[dict]:
    raw = data.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append((key, "must be a list"))
        return []
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, dict):
            out.append(item)
        else:
            problems.append((f"{key}[{i}]", "must be a mapping"))
    return out


__all__ = [
    "BGPCommunity", "CommunityError", "parse_community", "parse_duration", "timers", "peer_problems",
    "advertisement_problems", "bfd_problems", "community_problems", "OBJECT_CHECKS", "ConfigProblem",
    "community_aliases", "resolve_communities", "config_problems", "aggregation_problem", "LegacyBGP", "legacy_bgp",
    "legacy_path",
]
