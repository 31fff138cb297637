"""MetalLB's controller: LoadBalancer IPs from address pools, as ``controller/service.go`` and
``internal/allocator/allocator.go`` of metallb/metallb give them.

- Only Services of type LoadBalancer without ``spec.loadBalancerClass`` are MetalLB's.
- An IP asked for (``spec.loadBalancerIP`` or the ``metallb.io/loadBalancerIPs`` annotation, also
  under the deprecated ``metallb.universe.tf/`` prefix) must lie in a pool (not a .0/.255 of an
  avoidBuggyIPs pool) the Service may use, and be free or shareable.
- ``address-pool`` pins the pool; else the pools the Service is pinned to by serviceAllocation
  (namespaces, namespace and service selectors; by priority, lower first, unset last), then every
  autoAssign pool without serviceAllocation. Within a pool: the lowest address that is free or
  shareable, CIDRs in declaration order (a range is summarized into CIDRs first).
- Families (``internal/allocator``'s dual-stack): a Service gets one address of each family of its
  cluster IPs (ipfamily.ForService). A dual-stack Service takes one IPv4 and one IPv6 address from
  the same pool, the first pool that has both; with ipFamilyPolicy PreferDualStack a pool with only
  the primary family's (then only the other's) will do, and a Service left with one address gets
  the missing family's from its pool on a later pass when there is one. Asked-for addresses must be
  of the Service's families (both, for a dual-stack one).
- Sharing (``allow-shared-ip``): same sharing key, same backend key (the selector, for
  externalTrafficPolicy Local; empty for Cluster) and no port/protocol used twice.
- A Service keeps its address across passes; it is released when the Service goes, stops being a
  LoadBalancer, or its address stops being allowed (then a new one is looked for).

MetalLB walks its pools in Go map order (random). netemu walks them in declaration order: the
legacy ConfigMap's pools in list order, then IPAddressPools in the order they were created, so
the result is reproducible.

The allocator is rebuilt from the Services' status on every pass (level-triggered, like MetalLB's
controller after a restart): the store stays the only state. Events carry MetalLB's reasons and
messages (IPAllocated, AllocationFailed, ClearAssignment, LoadBalancerFailed,
deprecatedAnnotation).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Union

from netemu.control import labels
from netemu.spec.metallb import (
    BGP_KINDS, IPAddressPool, L2Advertisement, MetalLBConfigError, is_legacy_configmap, legacy_from_configmap,
    parse_addresses, AddressError,
)
from netemu.spec.models import LabelSelector, Service

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

ANNOTATION_PREFIX = "metallb.io"
DEPRECATED_PREFIX = "metallb.universe.tf"
ADDRESS_POOL = "address-pool"
LOAD_BALANCER_IPS = "loadBalancerIPs"
ALLOW_SHARED_IP = "allow-shared-ip"
ALLOCATED_FROM_POOL = f"{ANNOTATION_PREFIX}/ip-allocated-from-pool"
CONTROLLER = "metallb-controller"
DUAL = "dual"  # the family of a Service with cluster IPs of both families (ipfamily.DualStack)
Family = Union[int, str]  # 4, 6 or DUAL
PREFER_DUAL, REQUIRE_DUAL, SINGLE = "PreferDualStack", "RequireDualStack", "SingleStack"


# --------------------------------------------------------------------------- configuration
@dataclass
class Allocation:
    """A pool's serviceAllocation, with namespace selectors resolved to names."""

    priority: int
    namespaces: set[str]
    service_selectors: list[LabelSelector]


@dataclass
class L2Ad:
    """An L2Advertisement, resolved: the nodes it selects, its interfaces (empty: all)."""

    name: str
    nodes: frozenset[str]
    interfaces: tuple[str, ...] = ()
    service_selectors: tuple[LabelSelector, ...] = ()
    preferred: dict[str, int] = field(default_factory=dict)

    @property
    def all_interfaces(self) -> bool:
        return not self.interfaces


@dataclass
class Pool:
    name: str
    cidrs: list[IPNetwork]
    auto_assign: bool = True
    avoid_buggy_ips: bool = False
    allocation: Optional[Allocation] = None
    l2: list[L2Ad] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    bgp: list = field(default_factory=list)  # its BGPAdvertisements, resolved (netemu.control.metallb_bgp.BGPAd)

    def contains(self, ip: IPAddress) -> bool:
        if self.avoid_buggy_ips and confuses_buggy_firmware(ip):
            return False
        return any(ip in n for n in self.cidrs if n.version == ip.version)

    def compatible(self, svc: Service) -> bool:
        """isPoolCompatibleWithService: the pool's namespaces and service selectors allow svc."""
        a = self.allocation
        if a is None:
            return True
        if a.namespaces and svc.metadata.namespace not in a.namespaces:
            return False
        if a.service_selectors:
            return any(labels.matches(s, svc.metadata.labels) for s in a.service_selectors)
        return True


@dataclass
class Config:
    pools: list[Pool]
    warnings: list[str] = field(default_factory=list)
    # BGP mode (netemu.control.metallb_bgp.BGPConfig): peers, BFD profiles, advertisements
    bgp: Any = None

    def __post_init__(self) -> None:
        self.by_name = {p.name: p for p in self.pools}

    def pool_for(self, ips: list[IPAddress]) -> Optional[Pool]:
        """The pool holding all of ips (poolFor)."""
        for p in self.pools:
            if all(p.contains(ip) for ip in ips):
                return p
        return None


def confuses_buggy_firmware(ip: IPAddress) -> bool:
    """An IPv4 address ending in .0 or .255 (avoidBuggyIPs)."""
    return ip.version == 4 and ip.packed[3] in (0, 255)


def _namespaces(c: "Cluster") -> list:
    return c.store.list("Namespace")


_CONFIG_INPUTS = ("ConfigMap", "IPAddressPool", "L2Advertisement", *BGP_KINDS, "Node", "Namespace")


def load_config(c: "Cluster") -> Optional[Config]:
    """MetalLB's configuration from the store: the legacy ConfigMap ``metallb-system/config``, then
    IPAddressPools, L2Advertisements and the BGP kinds. None when there is none at all (MetalLB is not installed:
    LoadBalancer Services stay <pending>). Cached until one of the kinds it reads changes."""
    cache = c.__dict__.setdefault("_metallb_config", {})
    stamp = tuple(c.store.generation[k] for k in _CONFIG_INPUTS)
    if cache.get("stamp") != stamp or cache.get("store") is not c.store:
        cache.update(stamp=stamp, store=c.store, config=_load_config(c))
    return cache["config"]


def _load_config(c: "Cluster") -> Optional[Config]:
    store = c.store
    cms = [cm for cm in store.list("ConfigMap") if is_legacy_configmap(cm)]
    crd_pools: list[IPAddressPool] = list(store.list("IPAddressPool"))
    crd_ads: list[L2Advertisement] = list(store.list("L2Advertisement"))
    bgp_objs = {k: list(store.list(k)) for k in BGP_KINDS}
    if not cms and not crd_pools and not crd_ads and not any(bgp_objs.values()):
        return None
    warnings: list[str] = []
    pool_objs: list[IPAddressPool] = []
    ad_objs: list[L2Advertisement] = []
    for cm in cms:
        try:
            legacy, w = legacy_from_configmap(cm)
        except MetalLBConfigError as e:  # MetalLB refuses an invalid configuration as a whole
            warnings += [f"ConfigMap {cm.metadata.namespace}/{cm.metadata.name}: {x}" for x in e.errors]
            continue
        warnings += [f"ConfigMap {cm.metadata.namespace}/{cm.metadata.name}: {x}" for x in w]
        pool_objs += legacy.pools + legacy.bgp_pools  # the bgp ones have BGPAdvertisements, no L2Advertisement
        ad_objs += legacy.l2advertisements
        for kind, objs in (("BGPPeer", legacy.bgp.peers), ("BGPAdvertisement", legacy.bgp.advertisements),
                           ("BFDProfile", legacy.bgp.bfd_profiles), ("Community", legacy.bgp.communities)):
            bgp_objs[kind] = objs + bgp_objs[kind]
    pool_objs += crd_pools
    ad_objs += crd_ads
    nodes = store.list("Node")
    namespaces = _namespaces(c)
    pools: list[Pool] = []
    seen: dict[str, Pool] = {}
    for obj in pool_objs:
        name = obj.metadata.name
        if name in seen:
            warnings.append(f"duplicate definition of pool {name!r}: the first one is used")
            continue
        cidrs: list[IPNetwork] = []
        for a in obj.spec.addresses or []:
            try:
                cidrs += parse_addresses(a)
            except AddressError as e:
                warnings.append(f"pool {name!r}: {e}")
        clash = next(((n, p) for n in cidrs for p in pools for m in p.cidrs
                      if m.version == n.version and m.overlaps(n)), None)
        if clash is not None:
            warnings.append(f"CIDR {str(clash[0])!r} in pool {name!r} overlaps with pool {clash[1].name!r}: "
                            f"pool {name!r} is ignored")
            continue
        pool = Pool(name=name, cidrs=cidrs, auto_assign=obj.spec.auto_assign is not False,
                    avoid_buggy_ips=bool(obj.spec.avoid_buggy_ips),
                    allocation=_allocation(obj, namespaces), labels=dict(obj.metadata.labels or {}))
        seen[name] = pool
        pools.append(pool)
    for ad in ad_objs:
        resolved = _l2ad(ad, nodes)
        for p in chosen_pools(ad.spec, pools):
            p.l2.append(resolved)
    config = Config(pools, warnings)
    if any(bgp_objs.values()):
        from netemu.control import metallb_bgp

        config.bgp = metallb_bgp.build(config, pool_objs, bgp_objs["BGPPeer"],
                                       bgp_objs["BGPAdvertisement"], bgp_objs["BFDProfile"], bgp_objs["Community"],
                                       nodes)
        warnings += config.bgp.problems
    return config


def chosen_pools(spec, pools: list[Pool]) -> list[Pool]:
    """The pools an L2 or BGP advertisement applies to: by name or label selector, every pool when it
    names none."""
    if not spec.ip_address_pools and not spec.ip_address_pool_selectors:
        return list(pools)
    return [p for p in pools if p.name in (spec.ip_address_pools or [])
            or any(labels.matches(s, p.labels) for s in spec.ip_address_pool_selectors or [])]


def selected_nodes(selectors: Optional[list[LabelSelector]], nodes: Iterable) -> frozenset[str]:
    """selectedNodes: the nodes matching any of the selectors; every node when there are none."""
    return frozenset(n.metadata.name for n in nodes
                     if not selectors or any(labels.matches(s, n.metadata.labels) for s in selectors))


def _allocation(obj: IPAddressPool, namespaces: list) -> Optional[Allocation]:
    sa = obj.spec.service_allocation
    if sa is None:
        return None
    names = set(sa.namespaces or [])
    selectors = list(sa.service_selectors or [])
    if not names and not sa.namespace_selectors and not selectors:
        selectors = [LabelSelector()]  # nothing given: every Service (as MetalLB does)
    for sel in sa.namespace_selectors or []:
        names |= {ns.metadata.name for ns in namespaces if labels.matches(sel, ns.metadata.labels)}
    return Allocation(priority=sa.priority or 0, namespaces=names, service_selectors=selectors)


def _l2ad(ad: L2Advertisement, nodes: list) -> L2Ad:
    spec = ad.spec
    names = selected_nodes(spec.node_selectors, nodes)
    selected = [n for n in nodes if n.metadata.name in names]
    preferred: dict[str, int] = {}
    for n in selected:
        score = sum(p.weight for p in spec.preferred_node_selectors or []
                    if labels.matches(p.preference, n.metadata.labels))
        if score > 0:
            preferred[n.metadata.name] = score
    return L2Ad(name=ad.metadata.name or "", nodes=names,
                interfaces=tuple(spec.interfaces or ()), service_selectors=tuple(spec.service_selectors or ()),
                preferred=preferred)


# --------------------------------------------------------------------------- the allocator
Port = tuple[str, int]  # (protocol, port), shown as TCP/80


def _port_str(p: Port) -> str:
    return f"{p[0]}/{p[1]}"


def _quote_ips(ips: list[IPAddress]) -> str:
    """Go's %q of a []net.IP: ["192.168.1.11"]."""
    return "[" + " ".join(f'"{ip}"' for ip in ips) + "]"


@dataclass
class _Alloc:
    pool: str
    ips: list[IPAddress]
    ports: list[Port]
    sharing: str
    backend: str


class Allocator:
    """The allocator's bookkeeping: who holds which address, with which sharing key and ports."""

    def __init__(self, config: Config):
        self.config = config
        self.allocated: dict[str, _Alloc] = {}
        self.key_for_ip: dict[IPAddress, tuple[str, str]] = {}
        self.ports_in_use: dict[IPAddress, dict[Port, str]] = {}
        self.services_on_ip: dict[IPAddress, set[str]] = {}

    # ---------------------------------------------------------------- reads
    def pool(self, svc_key: str) -> str:
        a = self.allocated.get(svc_key)
        return a.pool if a else ""

    def ips(self, svc_key: str) -> list[IPAddress]:
        a = self.allocated.get(svc_key)
        return list(a.ips) if a else []

    # ---------------------------------------------------------------- writes
    def _assign(self, svc_key: str, alloc: _Alloc) -> None:
        self.unassign(svc_key)
        self.allocated[svc_key] = alloc
        for ip in alloc.ips:
            self.key_for_ip[ip] = (alloc.sharing, alloc.backend)
            ports = self.ports_in_use.setdefault(ip, {})
            for p in alloc.ports:
                ports[p] = svc_key
            self.services_on_ip.setdefault(ip, set()).add(svc_key)

    def unassign(self, svc_key: str) -> None:
        alloc = self.allocated.pop(svc_key, None)
        if alloc is None:
            return
        for ip in alloc.ips:
            ports = self.ports_in_use.get(ip, {})
            for p in alloc.ports:
                if ports.get(p) == svc_key:
                    del ports[p]
            users = self.services_on_ip.get(ip, set())
            users.discard(svc_key)
            if not users:
                self.services_on_ip.pop(ip, None)
                self.ports_in_use.pop(ip, None)
                self.key_for_ip.pop(ip, None)

    def check_sharing(self, svc_key: str, ip: IPAddress, ports: list[Port], sharing: str, backend: str) -> Optional[str]:
        existing = self.key_for_ip.get(ip)
        if existing is None:
            return None
        if _sharing_error(existing, (sharing, backend)) is not None:
            # incompatible keys; the owner may still change its own key if it is alone on the address
            others = sorted(s for s in self.services_on_ip.get(ip, ()) if s != svc_key)
            if others:
                return f'can\'t change sharing key for "{svc_key}", address also in use by {",".join(others)}'
        in_use = self.ports_in_use.get(ip, {})
        for p in ports:
            holder = in_use.get(p)
            if holder is not None and holder != svc_key:
                return f'port {_port_str(p)} is already in use on "{ip}"'
        return None

    def assign(self, svc_key: str, svc: Optional[Service], ips: list[IPAddress], ports: list[Port],
               sharing: str = "", backend: str = "") -> Optional[str]:
        """Give ``ips`` to the service if the configuration and the other holders allow it; the error
        (MetalLB's message) otherwise."""
        pool = self.config.pool_for(ips)
        if pool is None:
            return f"{_quote_ips(ips)} is not allowed in config"
        if svc is not None and not pool.compatible(svc):
            return f"pool {pool.name} not compatible for ip assignment"
        if len(ips) > 2:
            return f"more than two addresses {_quote_ips(ips)}"
        if len(ips) == 2 and ips[0].version == ips[1].version:
            return f'"{ips[0]}" "{ips[1]}" has the same family'
        for ip in ips:
            err = self.check_sharing(svc_key, ip, ports, sharing, backend)
            if err is not None:
                return err
        self._assign(svc_key, _Alloc(pool.name, list(ips), list(ports), sharing, backend))
        return None

    def _free_ip(self, pool: Pool, family: int, svc_key: str, ports: list[Port], sharing: str,
                 backend: str) -> Optional[IPAddress]:
        """getIPFromCIDR over the pool's CIDRs of that family: the lowest usable address."""
        for cidr in pool.cidrs:
            if cidr.version != family:
                continue
            for ip in _addresses(cidr):
                if pool.avoid_buggy_ips and confuses_buggy_firmware(ip):
                    continue
                if self.check_sharing(svc_key, ip, ports, sharing, backend) is None:
                    return ip
        return None

    def _free_ips(self, pool: Pool, family: Family, svc_key: str, ports: list[Port], sharing: str,
                  backend: str) -> tuple[Optional[IPAddress], Optional[IPAddress]]:
        """getFreeIPsFromPool: the pool's lowest usable IPv4 and IPv6 address (only the families asked)."""
        v4 = self._free_ip(pool, 4, svc_key, ports, sharing, backend) if family in (4, DUAL) else None
        v6 = self._free_ip(pool, 6, svc_key, ports, sharing, backend) if family in (6, DUAL) else None
        return v4, v6

    def _from_pools(self, pools: list[Pool], svc_key: str, svc: Optional[Service], family: Family,
                    ports: list[Port], sharing: str, backend: str,
                    policy: Optional[str] = None) -> Optional[list[IPAddress]]:
        """findBestPoolForService, then the addresses it gives: the first pool with the family's
        address (both, for a dual-stack Service); PreferDualStack falls back to the first pool with the
        primary family's address, then the other's."""
        policy = policy or service_policy(svc)
        primary = 6 if svc is not None and (svc.spec.ip_families or [""])[0] == "IPv6" else 4
        best = first_primary = first_secondary = None
        for pool in pools:
            v4, v6 = self._free_ips(pool, family, svc_key, ports, sharing, backend)
            by = {4: v4, 6: v6}
            if family in (4, 6):
                if by[family] is not None:
                    best = (pool, v4, v6)
                    break
                continue  # the pool has no available IPs: try the next one
            if v4 is not None and v6 is not None:
                best = (pool, v4, v6)
                break
            if policy != PREFER_DUAL:
                continue
            if by[primary] is not None and first_primary is None:
                first_primary = (pool, v4, v6)
            if by[10 - primary] is not None and first_secondary is None:
                first_secondary = (pool, v4, v6)
        best = best or first_primary or first_secondary
        if best is None:
            return None
        ips = select_ips(best[1], best[2], family, policy)
        if ips and self.assign(svc_key, svc, ips, ports, sharing, backend) is None:
            return ips
        return None  # as MetalLB: the best pool's addresses could not be assigned

    def pinned_pools(self, svc: Service) -> list[Pool]:
        """Pools the Service is pinned to by serviceAllocation, by priority (lower first, unset last)."""
        out: list[Pool] = []
        for pool in self.config.pools:  # by namespace first, then by service selector, as MetalLB
            a = pool.allocation
            if a is not None and svc.metadata.namespace in a.namespaces and pool.auto_assign and pool.compatible(svc):
                out.append(pool)
        for pool in sorted(self.config.pools, key=lambda p: p.name):
            a = pool.allocation
            if a is not None and a.service_selectors and pool.auto_assign and pool.compatible(svc):
                out.append(pool)
        order = {id(p): i for i, p in enumerate(out)}
        return sorted(out, key=lambda p: (p.allocation.priority == 0, p.allocation.priority, order[id(p)]))

    def allocate(self, svc_key: str, svc: Optional[Service], family: Family, ports: list[Port], sharing: str = "",
                 backend: str = "", policy: Optional[str] = None) -> tuple[list[IPAddress], Optional[str]]:
        """Any suitable pool: the pinned ones first, then every autoAssign pool without serviceAllocation."""
        current = self.allocated.get(svc_key)
        if current is not None:
            err = self.assign(svc_key, svc, current.ips, ports, sharing, backend)
            return (list(current.ips), None) if err is None else ([], err)
        if svc is not None:
            ips = self._from_pools(self.pinned_pools(svc), svc_key, svc, family, ports, sharing, backend, policy)
            if ips:
                return ips, None
        pools = [p for p in self.config.pools if p.auto_assign and p.allocation is None]
        ips = self._from_pools(pools, svc_key, svc, family, ports, sharing, backend, policy)
        if ips:
            return ips, None
        return [], "no available IPs"

    def allocate_from_pool(self, svc_key: str, svc: Optional[Service], family: Family, pool_name: str,
                           ports: list[Port], sharing: str = "", backend: str = "",
                           policy: Optional[str] = None) -> tuple[list[IPAddress], Optional[str]]:
        """The pool the ``address-pool`` annotation names (autoAssign does not matter then)."""
        current = self.allocated.get(svc_key)
        if current is not None:
            err = self.assign(svc_key, svc, current.ips, ports, sharing, backend)
            return (list(current.ips), None) if err is None else ([], err)
        pool = self.config.by_name.get(pool_name)
        if pool is None:
            return [], f'unknown pool "{pool_name}"'
        v4, v6 = self._free_ips(pool, family, svc_key, ports, sharing, backend)
        ips = select_ips(v4, v6, family, policy or service_policy(svc))
        if not ips:
            if family == DUAL:
                return [], f"no available IPs in pool {pool.name} for {DUAL} IPFamily"
            return [], f"no available IPs in pool {pool.name}"
        err = self.assign(svc_key, svc, ips, ports, sharing, backend)
        return (ips, None) if err is None else ([], err)

    def allocate_additional(self, svc_key: str, svc: Optional[Service], existing: IPAddress, pool_name: str,
                            ports: list[Port], sharing: str = "",
                            backend: str = "") -> tuple[Optional[IPAddress], Optional[str]]:
        """AllocateFromPoolForAdditionalFamily: a PreferDualStack Service holding one address gets the
        other family's from the same pool, keeping the one it has."""
        pool = self.config.by_name.get(pool_name)
        if pool is None:
            return None, f'unknown pool "{pool_name}"'
        other = 10 - existing.version
        ip = self._free_ip(pool, other, svc_key, ports, sharing, backend)
        if ip is None:
            return None, f"no available IPs in pool {pool.name} for ipv{other} IPFamily"
        err = self.assign(svc_key, svc, [existing, ip], ports, sharing, backend)
        return (ip, None) if err is None else (None, err)


def select_ips(v4: Optional[IPAddress], v6: Optional[IPAddress], family: Family,
               policy: str) -> Optional[list[IPAddress]]:
    """selectIPsForFamilyAndPolicy: a single-family Service's address; a dual-stack one's two (IPv4
    first), or with PreferDualStack the one there is."""
    if family in (4, 6):
        ip = v4 if family == 4 else v6
        return [ip] if ip is not None else None
    if v4 is not None and v6 is not None:
        return [v4, v6]
    if policy == PREFER_DUAL:
        one = v4 if v4 is not None else v6
        return [one] if one is not None else None
    return None


def _sharing_error(existing: tuple[str, str], new: tuple[str, str]) -> Optional[str]:
    if not existing[0]:
        return "existing service does not allow sharing"
    if not new[0]:
        return "new service does not allow sharing"
    if existing[0] != new[0]:
        return f'sharing key "{new[0]}" does not match existing sharing key "{existing[0]}"'
    if existing[1] != new[1]:
        return f'backend key "{new[1]}" does not match existing sharing key "{existing[1]}"'
    return None


def _addresses(cidr: IPNetwork) -> Iterator[IPAddress]:
    """Every address of the CIDR, network and broadcast addresses included (MetalLB's cursor)."""
    first = int(cidr.network_address)
    cls = type(cidr.network_address)
    for i in range(cidr.num_addresses):
        yield cls(first + i)


# --------------------------------------------------------------------------- what a Service asks
def annotation(svc: Service, name: str) -> Optional[str]:
    """The metallb.io/ annotation, else its deprecated metallb.universe.tf/ twin."""
    ann = svc.metadata.annotations or {}
    for prefix in (ANNOTATION_PREFIX, DEPRECATED_PREFIX):
        key = f"{prefix}/{name}"
        if key in ann:
            return ann[key]
    return None


def sharing_key(svc: Service) -> str:
    return annotation(svc, ALLOW_SHARED_IP) or ""


def backend_key(svc: Service) -> str:
    """The selector, for externalTrafficPolicy Local (such Services may only share an address with
    Services that have the same pods); empty for Cluster."""
    if svc.spec.external_traffic_policy == "Local":
        return ",".join(f"{k}={v}" for k, v in sorted((svc.spec.selector or {}).items()))
    return ""


def service_ports(svc: Service) -> list[Port]:
    return [(p.protocol or "TCP", p.port) for p in svc.spec.ports or []]


def ips_family(ips: list[IPAddress]) -> Optional[Family]:
    """ipfamily.ForAddresses: 4 or 6 for one address, DUAL for one of each; None otherwise."""
    if len(ips) == 1:
        return ips[0].version
    if len(ips) == 2 and ips[0].version != ips[1].version:
        return DUAL
    return None


def service_family(svc: Service) -> Family:
    """ipfamily.ForService: the family of the Service's cluster IPs (clusterIPs, else clusterIP)."""
    texts = svc.spec.cluster_ips or [svc.spec.cluster_ip or ""]
    try:
        fam = ips_family([ipaddress.ip_address(t) for t in texts])
    except ValueError:
        fam = None
    if fam is not None:
        return fam
    if svc.spec.ip_families:
        return 6 if svc.spec.ip_families[0] == "IPv6" else 4
    return 6 if ":" in (svc.spec.cluster_ip or "") else 4


def service_policy(svc: Optional[Service]) -> str:
    """ipPolicyForService: SingleStack unless the Service says otherwise."""
    return (svc.spec.ip_family_policy if svc is not None else None) or SINGLE


def family_changed(ips: list[IPAddress], svc: Service) -> bool:
    """serviceFamilyChanged: the addresses held are not of the Service's family (a PreferDualStack
    dual-stack Service may hold one of either)."""
    held, want = ips_family(ips), service_family(svc)
    if held is None:
        return True
    if held == want:
        return False
    return not (want == DUAL and service_policy(svc) == PREFER_DUAL)


def desired_ips(svc: Service) -> tuple[list[IPAddress], Optional[str]]:
    """getDesiredLbIPs: the addresses the Service asks for (annotation or spec.loadBalancerIP)."""
    text = annotation(svc, LOAD_BALANCER_IPS) or ""
    spec_ip = svc.spec.load_balancer_ip or ""
    if not text and not spec_ip:
        return [], None
    if text and spec_ip:
        return [], f"service can not have both {ANNOTATION_PREFIX}/{LOAD_BALANCER_IPS} and svc.Spec.LoadBalancerIP"
    if text:
        out = []
        for part in text.split(","):
            try:
                out.append(ipaddress.ip_address(part.strip()))
            except ValueError:
                return [], f'invalid {ANNOTATION_PREFIX}/{LOAD_BALANCER_IPS}: "{text}"'
        if len(out) == 2 and out[0].version == out[1].version:
            return [], f'"{out[0]}" "{out[1]}" has the same family'
        return out, None
    try:
        return [ipaddress.ip_address(spec_ip.strip())], None
    except ValueError:
        return [], f'invalid spec.loadBalancerIP "{spec_ip}"'


def is_metallb_service(svc: Service) -> bool:
    return svc.spec.type == "LoadBalancer" and not svc.spec.load_balancer_class


def ingress_ips(svc: Service) -> list[IPAddress]:
    out = []
    for ing in svc.status.load_balancer.ingress or []:
        if ing.ip:
            try:
                out.append(ipaddress.ip_address(ing.ip))
            except ValueError:
                pass
    return out


# --------------------------------------------------------------------------- the controller
@dataclass
class _State:
    """What the controller remembers between passes, only to avoid repeating events."""

    failed: dict[str, str] = field(default_factory=dict)  # service uid -> last AllocationFailed message
    invalid: dict[str, str] = field(default_factory=dict)  # service uid -> last LoadBalancerFailed message
    additional: dict[str, str] = field(default_factory=dict)  # service uid -> last AdditionalAssignFailed
    config_warnings: tuple[str, ...] = ()


def _state(c: "Cluster") -> _State:
    st = c.__dict__.get("_metallb_controller")
    if st is None:
        st = c.__dict__["_metallb_controller"] = _State()
    return st


def _key(svc: Service) -> str:
    return f"{svc.metadata.namespace}/{svc.metadata.name}"


def _clear(svc: Service) -> None:
    svc.status.load_balancer.ingress = None
    ann = svc.metadata.annotations
    if ann and ALLOCATED_FROM_POOL in ann:
        del ann[ALLOCATED_FROM_POOL]
        if not ann:
            svc.metadata.annotations = None


def _snapshot(svc: Service) -> tuple:
    return ([i.dump() for i in svc.status.load_balancer.ingress or []], dict(svc.metadata.annotations or {}))


def _set(svc: Service, ips: list[IPAddress], pool: str) -> None:
    from netemu.spec.models import LoadBalancerIngress

    svc.status.load_balancer.ingress = [LoadBalancerIngress(ip=str(ip), ip_mode="VIP") for ip in ips]
    if svc.metadata.annotations is None:
        svc.metadata.annotations = {}
    svc.metadata.annotations[ALLOCATED_FROM_POOL] = pool


def allocate_service(alloc: Allocator, svc: Service) -> tuple[list[IPAddress], Optional[str]]:
    """allocateIPs: asked addresses, else the asked pool, else any pool."""
    key = _key(svc)
    family = service_family(svc)
    ports, sharing, backend = service_ports(svc), sharing_key(svc), backend_key(svc)
    wanted, err = desired_ips(svc)
    if err is not None:
        return [], err
    pool_name = annotation(svc, ADDRESS_POOL) or ""
    if wanted:
        if ips_family(wanted) != family:
            return [], f"requested loadBalancer IP(s) {_quote_ips(wanted)} does not match the ipFamily of the service"
        err = alloc.assign(key, svc, wanted, ports, sharing, backend)
        if err is not None:
            return [], err
        if pool_name and alloc.pool(key) != pool_name:
            alloc.unassign(key)
            return [], (f"requested loadBalancer IP(s) {_quote_ips(wanted)} is not compatible with requested "
                        f"address pool {pool_name}")
        return wanted, None
    if pool_name:
        return alloc.allocate_from_pool(key, svc, family, pool_name, ports, sharing, backend)
    return alloc.allocate(key, svc, family, ports, sharing, backend)


# what the controller reads: a pass skips it when none of these changed
READS = ("Service", *_CONFIG_INPUTS)


def concerned(store) -> list[Service]:
    """The Services MetalLB has to do with: LoadBalancers, and any holding an address or a pool's
    annotation (to release) -- an index, so the lab's ClusterIP Services cost nothing."""
    def value(svc: Service) -> Optional[bool]:
        ours = svc.spec.type == "LoadBalancer" or svc.status.load_balancer.ingress or \
            ALLOCATED_FROM_POOL in (svc.metadata.annotations or {})
        return True if ours else None
    return store.indexed("metallb-services", "Service", value, True)


def reconcile(c: "Cluster") -> None:
    """Give LoadBalancer Services their address (status.loadBalancer.ingress), keep it, release it."""
    st = _state(c)
    config = load_config(c)
    services: list[Service] = concerned(c.store)
    before = {id(s): _snapshot(s) for s in services}
    if config is None:  # MetalLB not configured (or its configuration deleted): nothing is ours
        for svc in services:
            if ALLOCATED_FROM_POOL in (svc.metadata.annotations or {}):
                _clear(svc)
        _write(c, services, before)
        return
    st.config_warnings = tuple(config.warnings)
    alloc = Allocator(config)
    pending: list[Service] = []
    upgrade: list[Service] = []  # PreferDualStack Services holding one address
    for svc in services:
        if svc.spec.type != "LoadBalancer":
            if ingress_ips(svc) or ALLOCATED_FROM_POOL in (svc.metadata.annotations or {}):
                _clear(svc)  # release on type change
            continue
        if svc.spec.load_balancer_class:
            continue  # another implementation's (MetalLB ignores such Services entirely)
        if not config.pools or not svc.spec.cluster_ip:
            _clear(svc)
            continue
        ips = ingress_ips(svc)
        key = _key(svc)
        if ips and family_changed(ips, svc):
            _clear(svc)  # the Service's family changed (a dual-stack downgrade): allocate anew
            ips = []
        if ips:
            err = alloc.assign(key, svc, ips, service_ports(svc), sharing_key(svc), backend_key(svc))
            if err is not None:
                c.event(svc, "ClearAssignment", f'current IP for "{key}" not allowed by config, will attempt for new '
                                                f"IP assignment: {err}", source=CONTROLLER)
                _clear(svc)
                ips = []
            wanted_pool = annotation(svc, ADDRESS_POOL)
            if ips and wanted_pool and alloc.pool(key) != wanted_pool:
                alloc.unassign(key)
                _clear(svc)
                ips = []
            if ips:
                wanted, err = desired_ips(svc)
                if err is not None:
                    uid = svc.metadata.uid or key
                    if st.invalid.get(uid) != err:
                        c.event(svc, "LoadBalancerFailed", f"invalid requested loadbalancer IPs: {err}",
                                type_="Warning", source=CONTROLLER)
                        st.invalid[uid] = err
                    continue
                if wanted and sorted(map(str, wanted)) != sorted(map(str, ips)):
                    alloc.unassign(key)
                    _clear(svc)
                    ips = []
            if ips:
                _set(svc, ips, alloc.pool(key))
                # (only a Service with cluster IPs of both families: MetalLB tries it for any PreferDualStack
                # one, and a single-stack lab's would then lose the second address on the next pass)
                if len(ips) == 1 and service_policy(svc) == PREFER_DUAL and service_family(svc) == DUAL:
                    upgrade.append(svc)
                continue
        pending.append(svc)
    # after every kept address is back in the allocator, so the other family's address is one nobody holds
    for svc in upgrade:
        _additional_family(c, st, alloc, svc)
    for svc in pending:
        key = _key(svc)
        uid = svc.metadata.uid or key
        ips, err = allocate_service(alloc, svc)
        if err is not None:
            _clear(svc)
            msg = f'Failed to allocate IP for "{key}": {err}'
            if st.failed.get(uid) != msg:
                c.event(svc, "AllocationFailed", msg, type_="Warning", source=CONTROLLER)
                st.failed[uid] = msg
            continue
        st.failed.pop(uid, None)
        st.invalid.pop(uid, None)
        _set(svc, ips, alloc.pool(key))
        c.event(svc, "IPAllocated", f"Assigned IP {_quote_ips(ips)}", source=CONTROLLER)
    _write(c, services, before)


def _additional_family(c: "Cluster", st: _State, alloc: Allocator, svc: Service) -> None:
    """convergeBalancer's PreferDualStack step: one address held, try the missing family's from its pool."""
    key = _key(svc)
    uid = svc.metadata.uid or key
    ips = ingress_ips(svc)
    ip, err = alloc.allocate_additional(key, svc, ips[0], alloc.pool(key), service_ports(svc), sharing_key(svc),
                                        backend_key(svc))
    if err is not None:
        msg = f"cannot assign additional IP in PreferDualStack: {err}"
        if st.additional.get(uid) != msg:  # once, not on every pass
            c.event(svc, "AdditionalAssignFailed", msg, source=CONTROLLER)
            st.additional[uid] = msg
        return
    st.additional.pop(uid, None)
    _set(svc, [*ips, ip], alloc.pool(key))
    c.event(svc, "IPAllocated", f'Assigned additional IP "{ip}"', source=CONTROLLER)


def _write(c: "Cluster", services: list[Service], before: dict[int, tuple]) -> None:
    for svc in services:
        if _snapshot(svc) == before[id(svc)]:
            continue
        for key in sorted((svc.metadata.annotations or {})):
            if key.startswith(DEPRECATED_PREFIX + "/"):
                c.event(svc, "deprecatedAnnotation", f"Service uses deprecated annotation {key}", type_="Warning",
                        source=CONTROLLER)
        c.store.update(svc)


def config_warnings(c: "Cluster") -> list[str]:
    """Problems found in MetalLB's configuration at the last pass (for logs / describe)."""
    return list(_state(c).config_warnings)
