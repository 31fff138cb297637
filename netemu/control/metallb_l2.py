"""Which node announces a LoadBalancer IP, as MetalLB's speaker decides in layer2 mode
(``speaker/layer2_controller.go``: ShouldAnnounce, nodesWithEndpoint, sortL2Candidates).

For each Service that has an address from a pool:

1. no endpoint that can serve (ready, or serving while terminating) -> nobody announces it;
2. the L2Advertisements of its pool that select the Service (serviceSelectors), and the nodes they
   select (nodeSelectors); a node counts only if its speaker is alive (netemu: the node is Ready and
   its speaker was not stopped), its network is available and it is not labelled
   ``node.kubernetes.io/exclude-from-external-load-balancers``;
3. externalTrafficPolicy Local: only those nodes with a servable endpoint of the Service;
4. the candidates are ordered by preferredNodeSelectors weight (highest first), then by
   sha256(node name + "#" + first IP) (bytes, lowest first); the first one announces.

Every speaker computes the same order from the same inputs, so exactly one node answers ARP for an
address, and when that node goes, the next one in the order takes over (and sends gratuitous ARP).
A dual-stack Service is one election (hashed with its first address, as MetalLB's ShouldAnnounce
takes toAnnounce[0]): the winner announces all its addresses, the IPv4 one by ARP and the IPv6 one
by NDP (Neighbor Advertisements).

The result is pure data ({ip: node}); :func:`reconcile` also records MetalLB's events
(``nodeAssigned``: announcing from node "w1-k8s" with protocol "layer2"; ``announceFailed`` when the
winner's advertisements name interfaces the node does not have).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Optional

from netemu.control import labels
from netemu.control.metallb import (
    ALLOW_SHARED_IP, DEPRECATED_PREFIX, ANNOTATION_PREFIX, Config, L2Ad, ingress_ips, is_metallb_service, load_config,
)
from netemu.spec.models import Endpoint, EndpointSlice, Node, Service
from netemu.wellknown import EXCLUDE_FROM_LB_LABEL, SERVICE_NAME_LABEL

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

SPEAKER = "metallb-speaker"
PROTOCOL = "layer2"
LAB_INTERFACE = "eth0"  # a node's interface on the lab segment


@dataclass(frozen=True)
class Announcement:
    namespace: str
    service: str
    node: Optional[str]  # None: nobody announces it
    ips: tuple[str, ...]
    reason: str = ""  # why nobody announces it (MetalLB's reasons: notOwner, noMatchingAdvertisement, ...)
    failed: str = ""  # announceFailed message: elected, but its interfaces cannot be used


@dataclass
class Announcements:
    services: dict[tuple[str, str], Announcement] = field(default_factory=dict)
    by_ip: dict[str, str] = field(default_factory=dict)  # ip -> announcing node
    by_node: dict[str, set[str]] = field(default_factory=dict)  # node -> the IPs its speaker answers for

    def ips_of(self, node: str) -> set[str]:
        return set(self.by_node.get(node, set()))

    def node_of(self, namespace: str, name: str) -> Optional[str]:
        a = self.services.get((namespace, name))
        return a.node if a else None


# --------------------------------------------------------------------------- pieces
def endpoint_can_serve(ep: Endpoint) -> bool:
    """EndpointCanServe: ready (unset counts as ready) or serving."""
    cond = ep.conditions
    return cond.ready is None or cond.ready is True or cond.serving is True


def slices_of(svc: Service, slices: Iterable[EndpointSlice]) -> list[EndpointSlice]:
    return [s for s in slices if s.metadata.namespace == svc.metadata.namespace
            and (s.metadata.labels or {}).get(SERVICE_NAME_LABEL) == svc.metadata.name]


def active_endpoint_exists(slices: list[EndpointSlice]) -> bool:
    return any(endpoint_can_serve(ep) for s in slices for ep in s.endpoints)


def nodes_with_endpoint(slices: list[EndpointSlice], speakers: set[str]) -> set[str]:
    return {ep.node_name for s in slices for ep in s.endpoints
            if endpoint_can_serve(ep) and ep.node_name and ep.node_name in speakers}


def _condition(node: Node, kind: str) -> Optional[str]:
    return next((c.status for c in node.status.conditions or [] if c.type == kind), None)


def usable_speakers(nodes: Iterable[Node], alive: Optional[Mapping[str, bool]] = None) -> set[str]:
    """Nodes whose speaker takes part in elections: alive (default: the node is Ready), network
    available, not excluded from external load balancers."""
    out = set()
    for n in nodes:
        name = n.metadata.name
        if alive is not None:
            if not alive.get(name, False):
                continue
        elif _condition(n, "Ready") != "True":
            continue
        if _condition(n, "NetworkUnavailable") == "True":
            continue
        if EXCLUDE_FROM_LB_LABEL in (n.metadata.labels or {}):
            continue
        out.add(name)
    return out


def ads_for_service(ads: list[L2Ad], svc: Service) -> list[L2Ad]:
    return [a for a in ads if not a.service_selectors
            or any(labels.matches(s, svc.metadata.labels) for s in a.service_selectors)]


def order_candidates(candidates: Iterable[str], ip: str, scores: Optional[Mapping[str, int]] = None) -> list[str]:
    """sortL2Candidates: preference score (highest first), then sha256(node + "#" + ip)."""
    scores = scores or {}
    return sorted(candidates, key=lambda n: (-scores.get(n, 0), hashlib.sha256(f"{n}#{ip}".encode()).digest()))


def _shares_ip(svc: Service) -> bool:
    ann = svc.metadata.annotations or {}
    return f"{ANNOTATION_PREFIX}/{ALLOW_SHARED_IP}" in ann or f"{DEPRECATED_PREFIX}/{ALLOW_SHARED_IP}" in ann


def _interfaces_ok(ads: list[L2Ad], node: str, iface: str) -> bool:
    mine = [a for a in ads if node in a.nodes]
    if any(a.all_interfaces for a in mine):
        return True
    return any(iface in a.interfaces for a in mine)


# --------------------------------------------------------------------------- the election
def elect_service(svc: Service, config: Config, slices: list[EndpointSlice], speakers: set[str],
                  iface: str = LAB_INTERFACE) -> Announcement:
    ns, name = svc.metadata.namespace, svc.metadata.name
    ips = ingress_ips(svc)
    shown = tuple(str(ip) for ip in ips)

    def nobody(reason: str, failed: str = "") -> Announcement:
        return Announcement(ns, name, None, shown, reason, failed)

    if not is_metallb_service(svc) or not ips:
        return nobody("noIPAllocated")
    pool = config.pool_for(ips)
    if pool is None:
        return nobody("ipNotAllowed")
    if not active_endpoint_exists(slices):
        return nobody("notOwner")  # no active endpoints
    ads = ads_for_service(pool.l2, svc)
    if _shares_ip(svc) and any(a.service_selectors for a in ads):
        return nobody("sharedIPWithServiceSelector")
    eligible = {n for a in ads for n in a.nodes}
    if not eligible:
        return nobody("noMatchingAdvertisement")
    candidates = speakers & eligible
    if svc.spec.external_traffic_policy == "Local":
        candidates = nodes_with_endpoint(slices, candidates)
    if not candidates:
        return nobody("notOwner")  # no available nodes
    scores: dict[str, int] = {}
    for a in ads:
        for node, weight in a.preferred.items():
            scores[node] = scores.get(node, 0) + weight
    winner = order_candidates(candidates, shown[0], scores)[0]
    if not _interfaces_ok(ads, winner, iface):
        return nobody("announceFailed", f'the interfaces specified by LB IP "{shown[0]}" doesn\'t exist in assigned '
                                        f'node "{winner}" with protocol "{PROTOCOL}"')
    return Announcement(ns, name, winner, shown)


def elect(services: Iterable[Service], slices: Iterable[EndpointSlice], nodes: Iterable[Node],
          config: Optional[Config], alive: Optional[Mapping[str, bool]] = None,
          iface: str = LAB_INTERFACE) -> Announcements:
    """The announcing node of every LoadBalancer IP (pure)."""
    out = Announcements()
    if config is None:
        return out
    slices = list(slices)
    speakers = usable_speakers(nodes, alive)
    for svc in services:
        if not is_metallb_service(svc) or not ingress_ips(svc):
            continue
        a = elect_service(svc, config, slices_of(svc, slices), speakers, iface)
        out.services[(a.namespace, a.service)] = a
        if a.node is None:
            continue
        for ip in a.ips:
            # Services sharing an IP elect the same node (same IP, same candidates); the first wins
            out.by_ip.setdefault(ip, a.node)
            out.by_node.setdefault(a.node, set()).add(ip)
    return out


# --------------------------------------------------------------------------- in the cluster
@dataclass
class _State:
    stopped: set[str] = field(default_factory=set)  # nodes whose speaker was killed
    last: Announcements = field(default_factory=Announcements)
    assigned: dict[str, str] = field(default_factory=dict)  # service uid -> node last announced from
    failed: dict[str, str] = field(default_factory=dict)  # service uid -> last announceFailed


def _state(c: "Cluster") -> _State:
    st = c.__dict__.get("_metallb_l2")
    if st is None:
        st = c.__dict__["_metallb_l2"] = _State()
    return st


def set_speaker_alive(c: "Cluster", node: str, alive: bool) -> bool:
    """The data plane saw a node's speaker die (or come back). Returns True when that changed."""
    st = _state(c)
    was = node not in st.stopped
    if alive:
        st.stopped.discard(node)
    else:
        st.stopped.add(node)
    return was != alive


def speakers_alive(c: "Cluster") -> dict[str, bool]:
    st = _state(c)
    return {n.metadata.name: _condition(n, "Ready") == "True" and n.metadata.name not in st.stopped
            for n in c.store.list("Node")}


def reconcile(c: "Cluster") -> Announcements:
    """Elect the announcing nodes, record MetalLB's events, remember the result (see
    :func:`announcements`). No store writes: safe to run in every controller pass."""
    st = _state(c)
    lb, slices = load_balancers_and_slices(c.store)
    result = elect(lb, slices, c.store.list("Node"), load_config(c), speakers_alive(c))
    services = {(s.metadata.namespace, s.metadata.name): s for s in lb}
    seen = set()
    for key, a in result.services.items():
        svc = services[key]
        uid = svc.metadata.uid or "/".join(key)
        seen.add(uid)
        if a.node is not None and st.assigned.get(uid) != a.node:
            c.event(svc, "nodeAssigned", f'announcing from node "{a.node}" with protocol "{PROTOCOL}"',
                    source=SPEAKER)
        if a.failed and st.failed.get(uid) != a.failed:
            c.event(svc, "announceFailed", a.failed, type_="Warning", source=SPEAKER)
        if a.node is None:
            st.assigned.pop(uid, None)
        else:
            st.assigned[uid] = a.node
        if a.failed:
            st.failed[uid] = a.failed
        else:
            st.failed.pop(uid, None)
    for uid in set(st.assigned) - seen:
        del st.assigned[uid]
    st.last = result
    return result


def load_balancers(store) -> list[Service]:
    """The LoadBalancer Services (an index: the others cost an election nothing)."""
    return store.indexed("service-type", "Service", lambda s: s.spec.type, "LoadBalancer")


def load_balancers_and_slices(store) -> tuple[list[Service], list[EndpointSlice]]:
    """The LoadBalancer Services and their EndpointSlices: what both MetalLB modes elect from."""
    lb = load_balancers(store)
    return lb, [sl for svc in lb for sl in store.select("EndpointSlice", svc.metadata.namespace,
                                                         {SERVICE_NAME_LABEL: svc.metadata.name})]


def announcements(c: "Cluster") -> Announcements:
    """The result of the last :func:`reconcile`."""
    return _state(c).last


def announcing_node(c: "Cluster", namespace: str, name: str) -> Optional[str]:
    """For ``get svc -o wide`` / ``describe svc``."""
    return _state(c).last.node_of(namespace, name)
