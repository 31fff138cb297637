"""kube-proxy's nftables mode as a pure renderer: NodeProxyView -> `nft -f` transaction.

Everything lives in one table, `ip kube-proxy` (`ip6 kube-proxy` for an IPv6 view):

- base chains hooked at fixed priorities: filter-prerouting-pre-dnat and filter-output-pre-dnat
  (filter, dstnat-10 = -110: LoadBalancerSourceRanges before any DNAT), filter-input,
  filter-forward and filter-output (filter, 0: reject/drop for services without endpoints and for
  bad ClusterIP ports, after DNAT), nat-prerouting and nat-output (dstnat = -100) and
  nat-postrouting (srcnat = 100);
- dispatch through verdict maps: `service-ips` (ClusterIP, external IP and LB IP . proto . port),
  `service-nodeports` (proto . port, on @nodeport-ips or every local address), `firewall-ips`,
  `no-endpoint-services`, `no-endpoint-nodeports`; sets `cluster-ips` and `nodeport-ips`;
- per service port `service-<hash>-ns/name/proto/port` (Cluster policy), `local-...` (Local
  policy), `external-...` and `firewall-...`; per endpoint `endpoint-<hash>-...__ip/port` chains
  that mark for masquerade (hairpin) and DNAT; ClientIP affinity through `affinity-...` sets with
  `flags dynamic,timeout`; an endpoint is chosen with `numgen random mod N vmap { ... }`;
- masquerading: `mark-for-masquerade` ORs the mark in, `masquerading` (postrouting) clears it and
  masquerades fully-random.

Two forms of the same rules are rendered:

- "kube-proxy" (render(view).text()): exactly what kube-proxy v1.31+ writes (statement for
  statement its syncProxyRules, base chains as of v1.33+);
- "fast": what netemu loads. One anonymous `vmap {}` per service makes the kernel walk every
  verdict map of the table for each jump it validates, so a 10,000-service load goes quadratic
  (73 s measured here). The fast form picks the endpoint with one rule per endpoint instead,
  `numgen random mod (N-i) 0 goto endpoint-i` then a final `goto`: endpoint i is reached with
  probability (N-i)/N * 1/(N-i) = 1/N, exactly as with the vmap. It also writes the
  LoadBalancerSourceRanges test without an anonymous set (`ip saddr != X drop`, or
  `ip saddr X return` rules then `drop`). Everything else (names, maps, elements, affinity,
  policies, masquerading) is identical.
"""
from __future__ import annotations

import base64
import bisect
import hashlib
import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Sequence

from netemu.dataplane.proxy.addresses import IPV4, parse_cidr, parse_ip
from netemu.dataplane.proxy.topology import categorize_endpoints
from netemu.dataplane.proxy.view import NodeProxyView, ServicePortView

TABLE = "kube-proxy"
KUBE_PROXY = "kube-proxy"   # form names
FAST = "fast"
FORMS = (KUBE_PROXY, FAST)

# base chains: (name, type, hook, priority as kube-proxy names it, numeric priority)
FILTER_PREROUTING_PRE_DNAT = "filter-prerouting-pre-dnat"
FILTER_OUTPUT_PRE_DNAT = "filter-output-pre-dnat"
FILTER_FORWARD = "filter-forward"
FILTER_INPUT = "filter-input"
FILTER_OUTPUT = "filter-output"
NAT_PREROUTING = "nat-prerouting"
NAT_OUTPUT = "nat-output"
NAT_POSTROUTING = "nat-postrouting"
BASE_CHAINS = (
    (FILTER_PREROUTING_PRE_DNAT, "filter", "prerouting", -110),
    (FILTER_OUTPUT_PRE_DNAT, "filter", "output", -110),
    (FILTER_FORWARD, "filter", "forward", 0),
    (FILTER_INPUT, "filter", "input", 0),
    (FILTER_OUTPUT, "filter", "output", 0),
    (NAT_PREROUTING, "nat", "prerouting", -100),
    (NAT_OUTPUT, "nat", "output", -100),
    (NAT_POSTROUTING, "nat", "postrouting", 100),
)

# regular chains, sets and maps of the table
SERVICES = "services"
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NODEPORT_IPS = "nodeport-ips"
CLUSTER_IPS = "cluster-ips"
SERVICE_ENDPOINTS_CHECK = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK = "nodeport-endpoints-check"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
REJECT_CHAIN = "reject-chain"
CLUSTER_IPS_CHECK = "cluster-ips-check"
FIREWALL_IPS = "firewall-ips"
FIREWALL_CHECK = "firewall-check"
MARK_MASQ = "mark-for-masquerade"
MASQUERADING = "masquerading"

# (destination chain, source base chain, condition): the jumps from base chains, in kube-proxy's order
JUMPS = (
    (NODEPORT_ENDPOINTS_CHECK, FILTER_INPUT, "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, FILTER_INPUT, "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, FILTER_FORWARD, "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, FILTER_OUTPUT, "ct state new"),
    (FIREWALL_CHECK, FILTER_PREROUTING_PRE_DNAT, "ct state new"),
    (FIREWALL_CHECK, FILTER_OUTPUT_PRE_DNAT, "ct state new"),
    (SERVICES, NAT_OUTPUT, ""),
    (SERVICES, NAT_PREROUTING, ""),
    (MASQUERADING, NAT_POSTROUTING, ""),
    (CLUSTER_IPS_CHECK, FILTER_FORWARD, "ct state new"),
    (CLUSTER_IPS_CHECK, FILTER_OUTPUT, "ct state new"),
)

# element containers, in the order kube-proxy cleans up their leftover keys
CONTAINERS = (CLUSTER_IPS, SERVICE_IPS, FIREWALL_IPS, NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS, SERVICE_NODEPORTS)
SET_CONTAINERS = frozenset({CLUSTER_IPS, NODEPORT_IPS})

# per service port / endpoint prefixes
CLUSTER_PREFIX = "service-"
LOCAL_PREFIX = "local-"
EXTERNAL_PREFIX = "external-"
FIREWALL_PREFIX = "firewall-"
ENDPOINT_PREFIX = "endpoint-"
AFFINITY_PREFIX = "affinity-"

NAME_LENGTH_MAX = 256                       # nftables object names (knftables.NameLengthMax)
NAME_BASE_LENGTH_MAX = NAME_LENGTH_MAX - 16  # room for the longest prefix


# --------------------------------------------------------------------------- names
def hash_and_truncate(name: str) -> str:
    """8 base32 characters of sha256(name), "-", name; cut to 240 characters ending in "...".
    The hash keeps truncated names unique and tells near-identical names apart."""
    digest = hashlib.sha256(name.encode()).digest()
    out = base64.b32encode(digest[:5]).decode() + "-" + name   # 5 bytes = exactly 8 characters
    if len(out) > NAME_BASE_LENGTH_MAX:
        out = out[:NAME_BASE_LENGTH_MAX - 3] + "..."
    return out


@lru_cache(maxsize=None)
def service_chain_base(namespace: str, name: str, protocol: str, port_name: str) -> str:
    """"HASH-ns/name/proto/port": the part shared by a service port's chains."""
    return hash_and_truncate(f"{namespace}/{name}/{protocol.lower()}/{port_name}")


@lru_cache(maxsize=262144)
def endpoint_chain_base(namespace: str, name: str, protocol: str, port_name: str, ip: str, port: int) -> str:
    """"HASH-ns/name/proto/port__ip/port"; IPv6 colons become dots (not allowed in names)."""
    return hash_and_truncate(f"{namespace}/{name}/{protocol.lower()}/{port_name}__{ip.replace(':', '.')}/{port}")


def is_service_chain(name: str) -> bool:
    """Service and endpoint chains all have a "/" in their name; kube-proxy's fixed ones never do."""
    return "/" in name


def is_affinity_set(name: str) -> bool:
    return name.startswith(AFFINITY_PREFIX)


# --------------------------------------------------------------------------- settings and context
@dataclass(frozen=True)
class NftSettings:
    """nftables-mode facts that are not in ProxyOptions.

    service_cidrs: the cluster's Service CIDRs (kube-proxy watches ServiceCIDR objects): traffic
    to an unallocated address in them is dropped. nodeport_primary_default: kube-proxy's nftables
    mode accepts NodePorts on the node's primary IPs only when --nodeport-addresses is unset (the
    iptables mode accepts them on every local address); False keeps the "every address" meaning.
    """

    service_cidrs: tuple[str, ...] = ()
    nodeport_primary_default: bool = True


class NftContext(NamedTuple):
    """Node-wide facts that shape the rules (a change re-renders every service port)."""

    family: str                     # "ip" or "ip6"
    addr_type: str                  # "ipv4_addr" or "ipv6_addr"
    mark: str
    masquerade_all: bool
    if_local: Optional[str]         # "ip saddr 10.0.0.0/8": from a pod of this cluster
    if_not_local: Optional[str]
    node_ip: Optional[str]          # primary node IP
    node_name: str
    node_zone: Optional[str]
    nodeport_match_all: bool
    nodeport_ips: tuple[str, ...]
    service_cidrs: tuple[str, ...]

    @classmethod
    def of(cls, view: NodeProxyView, settings: Optional[NftSettings] = None) -> "NftContext":
        settings = settings or NftSettings()
        o = view.options
        v4 = o.ip_family == IPV4
        family = "ip" if v4 else "ip6"
        if_local = if_not_local = None
        if o.cluster_cidr:
            cidr = parse_cidr(o.cluster_cidr.strip())
            if cidr is not None and (cidr.version == 4) == v4:
                if_local, if_not_local = f"{family} saddr {cidr}", f"{family} saddr != {cidr}"
        match_all, np_ips = _nodeport_addresses(view, settings)
        primary = _primary_ip(view)
        cidrs = []
        for text in settings.service_cidrs:
            net = parse_cidr(text.strip())
            if net is not None and (net.version == 4) == v4:
                cidrs.append(str(net))
        return cls(
            family=family,
            addr_type="ipv4_addr" if v4 else "ipv6_addr",
            mark=o.masquerade_mark,
            masquerade_all=o.masquerade_all,
            if_local=if_local,
            if_not_local=if_not_local,
            node_ip=primary,
            node_name=o.node_name,
            node_zone=o.node_zone,
            nodeport_match_all=match_all,
            nodeport_ips=np_ips,
            service_cidrs=tuple(cidrs),
        )


def _primary_ip(view: NodeProxyView) -> Optional[str]:
    """The node's first address of the view's family (each family has its own kube-proxy)."""
    v4 = view.options.ip_family == IPV4
    for ip in view.options.node_ips:
        addr = parse_ip(ip)
        if addr is not None and (addr.version == 4) == v4:
            return str(addr)
    return None


def _nodeport_addresses(view: NodeProxyView, settings: NftSettings) -> tuple[bool, tuple[str, ...]]:
    """(match every local address?, node IPs that accept NodePorts), as NodePortAddresses does:
    CIDRs of the other family are ignored, none left means every address; the node's addresses
    inside the CIDRs accept NodePorts, loopback never (no localhost NodePorts in nftables mode)."""
    o = view.options
    v4 = o.ip_family == IPV4
    texts = list(o.node_port_addresses)
    if not texts and settings.nodeport_primary_default:
        texts = ["primary"]
    cidrs = []
    for text in texts:
        if text == "primary":
            primary = _primary_ip(view)
            if primary:
                cidrs.append(parse_cidr(f"{primary}/{32 if v4 else 128}"))
            continue
        net = parse_cidr(text.strip())
        if net is not None and (net.version == 4) == v4:
            cidrs.append(net)
    cidrs = [c for c in cidrs if c is not None]
    if not cidrs or any(c.prefixlen == 0 for c in cidrs):
        return True, ()
    out: list[str] = []
    for text in o.node_ips:
        addr = parse_ip(text)
        if addr is None or addr.is_loopback or str(addr) in out:
            continue
        if any(addr.version == c.version and addr in c for c in cidrs):
            out.append(str(addr))
    return False, tuple(out)


# --------------------------------------------------------------------------- objects of one port
class Element(NamedTuple):
    container: str               # set or map name
    key: str                     # "172.30.0.41 . tcp . 80"
    value: Optional[str] = None  # verdict for maps ("goto service-...", "drop")
    comment: Optional[str] = None

    def text(self) -> str:
        """The element as written inside `{ }`."""
        out = self.key
        if self.comment is not None:
            out += f' comment "{self.comment}"'
        if self.value is not None:
            out += f" : {self.value}"
        return out


# ops of a service port, in kube-proxy's order within its loop
OP_CHAIN = 0     # ("chain", name): ensure the chain exists and is empty
OP_ELEM = 1      # (OP_ELEM, Element)
OP_SET = 2       # (OP_SET, name, timeout seconds): an affinity set
OP_RULE = 3      # (OP_RULE, chain, rule text)
Op = tuple


@dataclass(frozen=True, slots=True)
class NftPort:
    """Everything one service port contributes, in kube-proxy's order of operations."""

    name: str                            # "ns/name:port"
    ops: tuple[Op, ...]
    chains: tuple[str, ...]              # chains it owns, in creation order
    elements: tuple[Element, ...]
    sets: tuple[tuple[str, int], ...]    # affinity sets (name, timeout)

    def rules(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {c: [] for c in self.chains}
        for op in self.ops:
            if op[0] == OP_RULE:
                out[op[1]].append(op[2])
        return out


def _with_comment(rule: str, comment: Optional[str]) -> str:
    return rule if comment is None else f'{rule} comment "{comment}"'


def render_port(svc: ServicePortView, ctx: NftContext, form: str = KUBE_PROXY) -> NftPort:
    """The loop body of kube-proxy's syncProxyRules for one service port."""
    ipx = ctx.family
    proto = svc.protocol.lower()
    spn = svc.service_port_name
    base = service_chain_base(svc.namespace, svc.name, proto, svc.port_name)
    cluster_chain, local_chain = CLUSTER_PREFIX + base, LOCAL_PREFIX + base
    ext_chain, fw_chain = EXTERNAL_PREFIX + base, FIREWALL_PREFIX + base
    cat = categorize_endpoints(svc, ctx.node_name, ctx.node_zone)
    affinity = svc.session_affinity_seconds

    def ep_names(ep) -> tuple[str, str]:
        b = endpoint_chain_base(svc.namespace, svc.name, proto, svc.port_name, ep.ip, ep.port)
        return ENDPOINT_PREFIX + b, AFFINITY_PREFIX + b

    ops: list[Op] = []
    chains: list[str] = []
    elements: list[Element] = []

    def ensure(chain: str) -> None:
        if chain not in chains:
            chains.append(chain)
            ops.append((OP_CHAIN, chain))

    def elem(container: str, key: str, value: Optional[str] = None, comment: Optional[str] = None) -> None:
        e = Element(container, key, value, comment)
        elements.append(e)
        ops.append((OP_ELEM, e))

    def rule(chain: str, text: str, comment: Optional[str] = None) -> None:
        ops.append((OP_RULE, chain, _with_comment(text, comment)))

    for ep in cat.all_reachable:
        ensure(ep_names(ep)[0])
    uses_cluster = bool(cat.cluster) and svc.uses_cluster_endpoints
    if uses_cluster:
        ensure(cluster_chain)
    uses_local = bool(cat.local) and svc.uses_local_endpoints
    if uses_local:
        ensure(local_chain)

    has_endpoints = cat.has_any
    internal_chain = local_chain if svc.internal_policy_local else cluster_chain
    has_internal = has_endpoints and (not svc.internal_policy_local or bool(cat.local))
    external_policy_chain = local_chain if svc.external_policy_local else cluster_chain
    has_external = has_endpoints and (not svc.external_policy_local or bool(cat.local))
    uses_ext = has_endpoints and svc.externally_accessible
    if uses_ext:
        ensure(ext_chain)

    if not has_endpoints:
        int_verdict = ext_verdict = f"goto {REJECT_CHAIN}"
    else:
        int_verdict = ext_verdict = "drop"  # only used where the policy's endpoints are missing

    port = svc.port
    elem(CLUSTER_IPS, svc.cluster_ip)
    if has_internal:
        elem(SERVICE_IPS, f"{svc.cluster_ip} . {proto} . {port}", f"goto {internal_chain}")
    else:
        elem(NO_ENDPOINT_SERVICES, f"{svc.cluster_ip} . {proto} . {port}", int_verdict, spn)
    for ip in svc.external_ips:
        if has_endpoints:
            elem(SERVICE_IPS, f"{ip} . {proto} . {port}", f"goto {ext_chain}")
        if not has_external:
            elem(NO_ENDPOINT_SERVICES, f"{ip} . {proto} . {port}", ext_verdict, spn)
    uses_fw = bool(svc.load_balancer_ips) and bool(svc.load_balancer_source_ranges)
    if uses_fw:
        ensure(fw_chain)
    for ip in svc.load_balancer_ips:
        if has_endpoints:
            elem(SERVICE_IPS, f"{ip} . {proto} . {port}", f"goto {ext_chain}")
        if uses_fw:
            elem(FIREWALL_IPS, f"{ip} . {proto} . {port}", f"goto {fw_chain}")
    if not has_external:
        for ip in svc.load_balancer_ips:
            elem(NO_ENDPOINT_SERVICES, f"{ip} . {proto} . {port}", ext_verdict, spn)
    if svc.node_port:
        if has_endpoints:
            # NodePorts are not subject to loadBalancerSourceRanges
            elem(SERVICE_NODEPORTS, f"{proto} . {svc.node_port}", f"goto {ext_chain}")
        if not has_external:
            elem(NO_ENDPOINT_NODEPORTS, f"{proto} . {svc.node_port}", ext_verdict, spn)

    # ---- the service's chains
    if has_internal:
        if ctx.masquerade_all:
            rule(internal_chain, f"{ipx} daddr {svc.cluster_ip} jump {MARK_MASQ}")
        elif ctx.if_not_local:
            # off-cluster sources reaching a ClusterIP may bounce off-node: masquerade them
            rule(internal_chain, f"{ipx} daddr {svc.cluster_ip} {ctx.if_not_local} jump {MARK_MASQ}")

    if uses_ext:
        if not svc.external_policy_local:
            rule(ext_chain, f"jump {MARK_MASQ}")  # the endpoint may be on another node
        else:
            if ctx.if_local:
                # pods reaching an external IP act as if they went out and came back in
                rule(ext_chain, f"{ctx.if_local} goto {cluster_chain}", "short-circuit pod traffic")
            # the node itself: its source address would be the LB IP, masquerade it
            rule(ext_chain, f"fib saddr type local jump {MARK_MASQ}", "masquerade local traffic")
            rule(ext_chain, f"fib saddr type local goto {cluster_chain}", "short-circuit local traffic")
        if has_external:
            rule(ext_chain, f"goto {external_policy_chain}")

    if uses_fw:
        sources = list(svc.load_balancer_source_ranges)
        allow_from_node = False
        node_ip = parse_ip(ctx.node_ip) if ctx.node_ip else None
        for cidr in svc.load_balancer_source_ranges:
            net = ipaddress.ip_network(cidr)
            if node_ip is not None and node_ip.version == net.version and node_ip in net:
                allow_from_node = True
        if allow_from_node:
            # a node reaching its own LB VIP loops back with the VIP as source
            sources.extend(svc.load_balancer_ips)
        if form == FAST:
            if len(sources) == 1:
                rule(fw_chain, f"{ipx} saddr != {sources[0]} drop")
            else:
                for s in sources:
                    rule(fw_chain, f"{ipx} saddr {s} return")
                rule(fw_chain, "drop")
        else:
            rule(fw_chain, f"{ipx} saddr != {{ {' , '.join(sources)} }} drop")

    sets: list[tuple[str, int]] = []
    if affinity is not None:
        for ep in cat.all_reachable:
            name = ep_names(ep)[1]
            sets.append((name, affinity))
            ops.append((OP_SET, name, affinity))

    def dispatch(chain: str, endpoints) -> None:
        names = [ep_names(ep) for ep in endpoints]
        if affinity is not None:
            for ep_chain, aff in names:
                rule(chain, f"{ipx} saddr @{aff} goto {ep_chain}")
        n = len(names)
        if form == FAST:
            for i, (ep_chain, _) in enumerate(names):
                if i < n - 1:
                    rule(chain, f"numgen random mod {n - i} 0 goto {ep_chain}")
                else:
                    rule(chain, f"goto {ep_chain}")
        else:
            picks = " , ".join(f"{i} : goto {ep_chain}" for i, (ep_chain, _) in enumerate(names))
            rule(chain, f"numgen random mod {n} vmap {{ {picks} }}")

    if uses_cluster:
        dispatch(cluster_chain, cat.cluster)
    if uses_local:
        dispatch(local_chain, cat.local)

    for ep in cat.all_reachable:
        ep_chain, aff = ep_names(ep)
        rule(ep_chain, f"{ipx} saddr {ep.ip} jump {MARK_MASQ}")   # hairpin: the pod reaching itself
        if affinity is not None:
            rule(ep_chain, f"update @{aff} {{ {ipx} saddr }}")
        rule(ep_chain, f"meta l4proto {proto} dnat to {ep.endpoint}")

    return NftPort(spn, tuple(ops), tuple(chains), tuple(elements), tuple(sets))


# --------------------------------------------------------------------------- transaction text
def set_decl(ctx: NftContext, name: str, timeout: int) -> str:
    return f"add set {ctx.family} {TABLE} {name} {{ type {ctx.addr_type} ; flags dynamic,timeout ; timeout {timeout}s ; }}"


class Tx:
    """An nft transaction being written: one operation per line, as knftables writes them."""

    __slots__ = ("family", "lines", "ops")

    def __init__(self, family: str) -> None:
        self.family = family
        self.lines: list[str] = []
        self.ops = 0

    def add(self, line: str, ops: int = 1) -> None:
        self.lines.append(line)
        self.ops += ops

    def chain(self, name: str, flush: bool = True) -> None:
        self.add(f"add chain {self.family} {TABLE} {name}")
        if flush:
            self.add(f"flush chain {self.family} {TABLE} {name}")

    def rule(self, chain: str, text: str) -> None:
        self.add(f"add rule {self.family} {TABLE} {chain} {text}")

    def element(self, e: Element, verb: str = "add") -> None:
        if verb == "add":
            self.add(f"add element {self.family} {TABLE} {e.container} {{ {e.text()} }}")
        else:
            self.add(f"delete element {self.family} {TABLE} {e.container} {{ {e.key} }}")

    def elements(self, container: str, elems: Sequence[Element], batch: int = 0) -> None:
        """Several elements of one container in one command (each still one operation)."""
        if not elems:
            return
        step = batch or len(elems)
        for i in range(0, len(elems), step):
            chunk = elems[i:i + step]
            self.add(f"add element {self.family} {TABLE} {container} {{ {' , '.join(e.text() for e in chunk)} }}",
                     len(chunk))

    def text(self) -> str:
        return "\n".join(self.lines) + "\n" if self.lines else ""


def setup_ops(tx: Tx, ctx: NftContext, *, first_sync: bool = True, fresh: bool = False) -> set[str]:
    """kube-proxy's setupNFTables: the table, base chains, jumps, sets, maps and fixed rules, and
    the flush of every element container (a full sync re-adds all elements). first_sync: the
    once-per-process add+delete of base chains (so a change of their priority can be applied).
    fresh: the table is known not to exist, flushes are left out. Returns the chains created."""
    fam, ipx = ctx.family, ctx.family
    no_localhost = "ip daddr != 127.0.0.0/8" if fam == "ip" else "ip6 daddr != ::1"
    flush = not fresh
    tx.add(f'add table {fam} {TABLE} {{ comment "rules for kube-proxy" ; }}')
    if first_sync and not fresh:
        for name, *_ in BASE_CHAINS:
            tx.add(f"add chain {fam} {TABLE} {name}")
            tx.add(f"delete chain {fam} {TABLE} {name}")
    for name, ctype, hook, prio in BASE_CHAINS:
        tx.add(f"add chain {fam} {TABLE} {name} {{ type {ctype} hook {hook} priority {prio} ; }}")
        if flush:
            tx.add(f"flush chain {fam} {TABLE} {name}")
    created: set[str] = set()

    def ensure(chain: str) -> None:
        if chain not in created:
            created.add(chain)
            tx.chain(chain, flush)

    for dst, src, cond in JUMPS:
        ensure(dst)
        tx.rule(src, f"{cond} jump {dst}" if cond else f"jump {dst}")
    for chain in (SERVICES, CLUSTER_IPS_CHECK, MASQUERADING, MARK_MASQ):
        ensure(chain)
    mark = ctx.mark
    tx.rule(MARK_MASQ, f"mark set mark or {mark}")
    tx.rule(MASQUERADING, f"mark and {mark} == 0 return")
    tx.rule(MASQUERADING, f"mark set mark xor {mark}")   # no second masquerade on re-traversal
    tx.rule(MASQUERADING, "masquerade fully-random")

    tx.add(f'add set {fam} {TABLE} {CLUSTER_IPS} {{ type {ctx.addr_type} ; comment "Active ClusterIPs" ; }}')
    tx.rule(CLUSTER_IPS_CHECK, f'{ipx} daddr @{CLUSTER_IPS} reject comment "Reject traffic to invalid ports of ClusterIPs"')
    if ctx.service_cidrs:
        tx.rule(CLUSTER_IPS_CHECK, f"{ipx} daddr {{ {','.join(ctx.service_cidrs)} }} drop "
                                   f'comment "Drop traffic to unallocated ClusterIPs"')

    tx.add(f'add set {fam} {TABLE} {NODEPORT_IPS} {{ type {ctx.addr_type} ; comment "IPs that accept NodePort traffic" ; }}')
    if ctx.nodeport_match_all:
        tx.add(f"delete set {fam} {TABLE} {NODEPORT_IPS}")
    else:
        if flush:
            tx.add(f"flush set {fam} {TABLE} {NODEPORT_IPS}")
        for ip in ctx.nodeport_ips:
            tx.add(f"add element {fam} {TABLE} {NODEPORT_IPS} {{ {ip} }}")

    key3 = f"{ctx.addr_type} . inet_proto . inet_service : verdict"
    key2 = "inet_proto . inet_service : verdict"
    tx.add(f'add map {fam} {TABLE} {NO_ENDPOINT_SERVICES} {{ type {key3} ; '
           f'comment "vmap to drop or reject packets to services with no endpoints" ; }}')
    tx.add(f'add map {fam} {TABLE} {NO_ENDPOINT_NODEPORTS} {{ type {key2} ; '
           f'comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }}')
    tx.add(f'add chain {fam} {TABLE} {REJECT_CHAIN} {{ comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }}')
    if flush:
        tx.add(f"flush chain {fam} {TABLE} {REJECT_CHAIN}")
    tx.rule(REJECT_CHAIN, "reject")
    tx.rule(SERVICE_ENDPOINTS_CHECK, f"{ipx} daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}")
    np_match = no_localhost if ctx.nodeport_match_all else f"{ipx} daddr @{NODEPORT_IPS}"
    tx.rule(NODEPORT_ENDPOINTS_CHECK, f"{np_match} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}")

    tx.add(f'add map {fam} {TABLE} {FIREWALL_IPS} {{ type {key3} ; '
           f'comment "destinations that are subject to LoadBalancerSourceRanges" ; }}')
    ensure(FIREWALL_CHECK)
    tx.rule(FIREWALL_CHECK, f"{ipx} daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}")

    tx.add(f'add map {fam} {TABLE} {SERVICE_IPS} {{ type {key3} ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }}')
    tx.add(f'add map {fam} {TABLE} {SERVICE_NODEPORTS} {{ type {key2} ; comment "NodePort traffic" ; }}')
    tx.rule(SERVICES, f"{ipx} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}")
    if ctx.nodeport_match_all:
        tx.rule(SERVICES, f"fib daddr type local {no_localhost} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}")
    else:
        tx.rule(SERVICES, f"{ipx} daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}")
    if flush:
        for c in CONTAINERS:
            tx.add(f"flush {'set' if c in SET_CONTAINERS else 'map'} {fam} {TABLE} {c}")
    return created


# --------------------------------------------------------------------------- the renderer
@dataclass
class NftDelta:
    """What an NftRenderer.update() changed."""

    context_changed: bool
    services: dict[str, tuple[tuple[NftPort, ...], tuple[NftPort, ...]]]  # "ns/name" -> (old, new)
    inputs_changed: frozenset[str] = frozenset()


class NftRenderer:
    """Keeps each Service's rendered objects and re-renders only Services whose input changed
    (compared by identity, then equality); a change of node-wide context re-renders all."""

    def __init__(self, form: str = KUBE_PROXY, settings: Optional[NftSettings] = None) -> None:
        if form not in FORMS:
            raise ValueError(f"unknown form {form!r}")
        self.form = form
        self.settings = settings or NftSettings()
        self.view: Optional[NodeProxyView] = None
        self.context: Optional[NftContext] = None
        self._inputs: dict[str, tuple[ServicePortView, ...]] = {}
        self._ports: dict[str, tuple[NftPort, ...]] = {}
        self._order: list[str] = []

    def update(self, view: NodeProxyView, changed: Optional[Iterable[str]] = None) -> NftDelta:
        ctx = NftContext.of(view, self.settings)
        context_changed = ctx != self.context
        self.view, self.context = view, ctx
        services = view.services
        if context_changed or changed is None:
            keys: Iterable[str] = list(services) + [k for k in self._inputs if k not in services]
        else:
            keys = changed
        delta: dict[str, tuple[tuple[NftPort, ...], tuple[NftPort, ...]]] = {}
        inputs_changed = set()
        for key in keys:
            new = services.get(key, ())
            old = self._inputs.get(key, ())
            same = new is old or new == old
            if not same:
                inputs_changed.add(key)
            elif not context_changed:
                continue
            old_ports = self._ports.get(key, ())
            if context_changed:
                new_ports = tuple(render_port(p, ctx, self.form) for p in new)
            else:
                reuse = dict(zip(old, old_ports))
                new_ports = tuple(reuse.get(p) or render_port(p, ctx, self.form) for p in new)
            self._store(key, new, new_ports)
            delta[key] = (old_ports, new_ports)
        return NftDelta(context_changed, delta, frozenset(inputs_changed))

    def _store(self, key: str, inputs, ports) -> None:
        if not inputs:
            if key in self._inputs:
                del self._inputs[key], self._ports[key]
                del self._order[bisect.bisect_left(self._order, key)]
            return
        if key not in self._inputs:
            bisect.insort(self._order, key)
        self._inputs[key] = inputs
        self._ports[key] = ports

    def service_keys(self) -> list[str]:
        return list(self._order)

    def ports(self, key: Optional[str] = None) -> Iterator[NftPort]:
        """Every rendered port (services in name order, ports in view order), or one Service's."""
        if key is not None:
            yield from self._ports.get(key, ())
            return
        for k in self._order:
            yield from self._ports[k]


# --------------------------------------------------------------------------- the ruleset
@dataclass
class NftRuleset:
    """A full kube-proxy nftables ruleset for one node."""

    context: NftContext
    ports: tuple[NftPort, ...]                 # kube-proxy form, services in name order
    view: Optional[NodeProxyView] = field(default=None, repr=False)
    settings: Optional[NftSettings] = field(default=None, repr=False)

    @property
    def family(self) -> str:
        return self.context.family

    def text(self, *, first_sync: bool = True) -> str:
        """The `nft -f` input of kube-proxy's full sync (on a node where its table holds no stale
        service chains): setupNFTables, then every service port in name order (kube-proxy walks
        its service map in Go map order, so its own order varies from sync to sync).
        first_sync adds the once-per-process add+delete of each base chain."""
        tx = Tx(self.family)
        full_sync_ops(tx, self.context, self.ports, first_sync=first_sync)
        return tx.text()

    def fast_text(self, *, fresh: bool = True) -> str:
        """What netemu loads instead: the same objects, the endpoint choice without anonymous
        verdict maps, elements in one command per map; fresh: the node has no table yet."""
        ports = fast_ports(self)
        tx = Tx(self.family)
        fast_full_ops(tx, self.context, ports, fresh=fresh)
        return tx.text()

    def operations(self) -> int:
        tx = Tx(self.family)
        full_sync_ops(tx, self.context, self.ports, first_sync=True)
        return tx.ops

    def chain_names(self) -> list[str]:
        return [c for p in self.ports for c in p.chains]

    def elements(self, container: str) -> list[Element]:
        return [e for p in self.ports for e in p.elements if e.container == container]

    def state(self):
        """The table this transaction leaves behind (a knftables.Fake-like model)."""
        from netemu.dataplane.proxy.nftables.model import NftModel
        m = NftModel()
        m.apply(self.text())
        return m

    def dump(self) -> str:
        """The resulting table as knftables.Fake.Dump() prints it (what kube-proxy's tests compare)."""
        return self.state().dump()

    def normalized(self) -> str:
        """dump() in the order kube-proxy's tests compare (sortNFTablesTransaction)."""
        from netemu.dataplane.proxy.nftables.model import normalize
        return normalize(self.dump())


def write_ops(tx: Tx, ctx: NftContext, ports: Iterable[NftPort], created: set[str], *, flush: bool = True,
              on_chain: Optional[Callable[[str], None]] = None, on_elem: Optional[Callable[[Element], None]] = None,
              on_set: Optional[Callable[[str], None]] = None) -> None:
    """The one walk over ports' operations, in their order: each chain not in `created` yet is
    added (and flushed, unless flush is False) and put in `created`, affinity sets declared, rules
    added. Elements only go to on_elem (left out without it: a fast full sync writes them merged);
    on_chain and on_set hear of each chain added and each set declared."""
    for p in ports:
        for op in p.ops:
            kind = op[0]
            if kind == OP_RULE:
                tx.rule(op[1], op[2])
            elif kind == OP_ELEM:
                if on_elem is not None:
                    on_elem(op[1])
            elif kind == OP_CHAIN:
                if op[1] not in created:
                    created.add(op[1])
                    tx.chain(op[1], flush)
                    if on_chain is not None:
                        on_chain(op[1])
            else:
                tx.add(set_decl(ctx, op[1], op[2]))
                if on_set is not None:
                    on_set(op[1])


def full_sync_ops(tx: Tx, ctx: NftContext, ports: Iterable[NftPort], *, first_sync: bool = True) -> set[str]:
    """kube-proxy's full sync, statement for statement; returns the service chains created."""
    setup_ops(tx, ctx, first_sync=first_sync)
    seen: dict[str, dict[str, str]] = {c: {} for c in CONTAINERS}   # the element storage, reset

    def element(e: Element) -> None:
        known = seen[e.container]
        value = e.value or ""
        if e.key in known:
            if known[e.key] == value:
                return
            tx.element(e, "delete")
        tx.element(e)
        known[e.key] = value

    created: set[str] = set()
    write_ops(tx, ctx, ports, created, on_elem=element)
    return created


def fast_full_ops(tx: Tx, ctx: NftContext, ports: Sequence[NftPort], *, fresh: bool = True,
                  first_sync: bool = True) -> set[str]:
    """The fast form of a full sync: base objects, then chains, sets and rules of every port, then
    the elements of each container in one command (a later element of the same key wins)."""
    setup_ops(tx, ctx, first_sync=first_sync, fresh=fresh)
    created: set[str] = set()
    write_ops(tx, ctx, ports, created, flush=not fresh)
    for container, elems in merged_elements(ports).items():
        tx.elements(container, elems)
    return created


def merged_elements(ports: Iterable[NftPort]) -> dict[str, list[Element]]:
    """Elements per container, one per key (the last port wins, as kube-proxy's storage ends up)."""
    out: dict[str, dict[str, Element]] = {c: {} for c in CONTAINERS}
    for p in ports:
        for e in p.elements:
            out[e.container][e.key] = e
    return {c: list(d.values()) for c, d in out.items() if d}


def fast_ports(rs: NftRuleset) -> tuple[NftPort, ...]:
    if rs.view is not None:
        r = NftRenderer(FAST, rs.settings)
        r.update(rs.view)
        return tuple(r.ports())
    raise ValueError("fast_text() needs a ruleset made by render()")


def render(view: NodeProxyView, settings: Optional[NftSettings] = None, *,
           service_cidrs: Sequence[str] = ()) -> NftRuleset:
    """The full ruleset kube-proxy's nftables mode writes for this view."""
    if settings is None:
        settings = NftSettings(service_cidrs=tuple(service_cidrs))
    r = NftRenderer(KUBE_PROXY, settings)
    r.update(view)
    assert r.context is not None
    return NftRuleset(r.context, tuple(r.ports()), view, settings)
