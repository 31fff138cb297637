"""kube-proxy's IPVS mode as a pure renderer: NodeProxyView -> IpvsRuleset.

What kube-proxy's IPVS proxier (pkg/proxy/ipvs/proxier.go, syncProxyRules, v1.31+) programs on a node:

- the dummy interface `kube-ipvs0`, holding every service address the node must accept as local:
  ClusterIPs, and externalIPs / load-balancer IPs that are not already addresses of the node
  (kube-ipvs0 stays down: the kernel adds the local routes anyway);
- one IPVS virtual server per (ClusterIP | externalIP | LB IP | node address for NodePorts, port,
  protocol), scheduler `rr` unless configured, `-p <timeout>` persistence for ClientIP affinity,
  the source-hash flag for `mh`; real servers in masquerade mode (`-m`), weight 1. Each address kind
  picks endpoints as syncEndpoint does (internal traffic policy for the ClusterIP, external traffic
  policy for the others, falling back to cluster endpoints when no local one exists);
- the ipsets (KUBE-CLUSTER-IP, KUBE-LOOP-BACK, KUBE-NODE-PORT-TCP, ... KUBE-IPVS-IPS: ipsetInfo,
  all created on every sync, empty or not) and their entries;
- the short iptables ruleset that matches those sets (writeIptablesRules): masquerade marks,
  hairpin masquerade, the LB/source-range firewall, KUBE-IPVS-FILTER, ...

Texts: ipvsadm_restore() is what `ipvsadm-save -n` prints for that state (and `ipvsadm-restore`
reads), ipset_restore() what `ipset save` prints (`ipset restore` reads), iptables_restore() the
`iptables-restore --noflush` payload kube-proxy writes. kube-proxy walks its service map in Go map
order; everything here is in service-name order so outputs are stable.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from netemu.dataplane.proxy.addresses import IPV4, join_host_port, parse_cidr, parse_ip
from netemu.dataplane.proxy.topology import categorize_endpoints
from netemu.dataplane.proxy.view import NodeProxyView, ServicePortView, nodeport_cidrs

DUMMY_DEVICE = "kube-ipvs0"
DEFAULT_SCHEDULER = "rr"
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh")

# iptables chains (proxier.go); nat and filter declaration order of iptablesChains
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_NODE_PORT = "KUBE-NODE-PORT"
KUBE_LOAD_BALANCER = "KUBE-LOAD-BALANCER"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_SOURCE_RANGES_FIREWALL = "KUBE-SOURCE-RANGES-FIREWALL"
KUBE_IPVS_FILTER = "KUBE-IPVS-FILTER"
KUBE_IPVS_OUT_FILTER = "KUBE-IPVS-OUT-FILTER"
NAT_CHAINS = (KUBE_SERVICES, KUBE_POSTROUTING, KUBE_NODE_PORT, KUBE_LOAD_BALANCER, KUBE_MARK_MASQ)
FILTER_CHAINS = (KUBE_FORWARD, KUBE_NODE_PORT, KUBE_PROXY_FIREWALL, KUBE_SOURCE_RANGES_FIREWALL,
                 KUBE_IPVS_FILTER, KUBE_IPVS_OUT_FILTER)

# ipset names (pkg/proxy/ipvs/ipset.go)
KUBE_LOOP_BACK = "KUBE-LOOP-BACK"
KUBE_CLUSTER_IP = "KUBE-CLUSTER-IP"
KUBE_EXTERNAL_IP = "KUBE-EXTERNAL-IP"
KUBE_EXTERNAL_IP_LOCAL = "KUBE-EXTERNAL-IP-LOCAL"
KUBE_LOAD_BALANCER_SET = "KUBE-LOAD-BALANCER"
KUBE_LOAD_BALANCER_FW = "KUBE-LOAD-BALANCER-FW"
KUBE_LOAD_BALANCER_LOCAL = "KUBE-LOAD-BALANCER-LOCAL"
KUBE_LOAD_BALANCER_SOURCE_IP = "KUBE-LOAD-BALANCER-SOURCE-IP"
KUBE_LOAD_BALANCER_SOURCE_CIDR = "KUBE-LOAD-BALANCER-SOURCE-CIDR"
KUBE_NODE_PORT_TCP = "KUBE-NODE-PORT-TCP"
KUBE_NODE_PORT_LOCAL_TCP = "KUBE-NODE-PORT-LOCAL-TCP"
KUBE_NODE_PORT_UDP = "KUBE-NODE-PORT-UDP"
KUBE_NODE_PORT_LOCAL_UDP = "KUBE-NODE-PORT-LOCAL-UDP"
KUBE_NODE_PORT_SCTP = "KUBE-NODE-PORT-SCTP-HASH"
KUBE_NODE_PORT_LOCAL_SCTP = "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
KUBE_HEALTH_CHECK_NODE_PORT = "KUBE-HEALTH-CHECK-NODE-PORT"
KUBE_IPVS_IPS = "KUBE-IPVS-IPS"

HASH_IP = "hash:ip"
HASH_IP_PORT = "hash:ip,port"
HASH_IP_PORT_IP = "hash:ip,port,ip"
HASH_IP_PORT_NET = "hash:ip,port,net"
BITMAP_PORT = "bitmap:port"


@dataclass(frozen=True)
class IpsetInfo:
    name: str        # the IPv4 name; IPv6 sets are "KUBE-6-..." (see set_name)
    set_type: str
    comment: str


# ipsetInfo, in kube-proxy's order
IPSETS: tuple[IpsetInfo, ...] = (
    IpsetInfo(KUBE_LOOP_BACK, HASH_IP_PORT_IP,
              "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"),
    IpsetInfo(KUBE_CLUSTER_IP, HASH_IP_PORT, "Kubernetes service cluster ip + port for masquerade purpose"),
    IpsetInfo(KUBE_EXTERNAL_IP, HASH_IP_PORT,
              "Kubernetes service external ip + port for masquerade and filter purpose"),
    IpsetInfo(KUBE_EXTERNAL_IP_LOCAL, HASH_IP_PORT,
              "Kubernetes service external ip + port with externalTrafficPolicy=local"),
    IpsetInfo(KUBE_LOAD_BALANCER_SET, HASH_IP_PORT, "Kubernetes service lb portal"),
    IpsetInfo(KUBE_LOAD_BALANCER_FW, HASH_IP_PORT,
              "Kubernetes service load balancer ip + port for load balancer with sourceRange"),
    IpsetInfo(KUBE_LOAD_BALANCER_LOCAL, HASH_IP_PORT,
              "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"),
    IpsetInfo(KUBE_LOAD_BALANCER_SOURCE_IP, HASH_IP_PORT_IP,
              "Kubernetes service load balancer ip + port + source IP for packet filter purpose"),
    IpsetInfo(KUBE_LOAD_BALANCER_SOURCE_CIDR, HASH_IP_PORT_NET,
              "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"),
    IpsetInfo(KUBE_NODE_PORT_TCP, BITMAP_PORT, "Kubernetes nodeport TCP port for masquerade purpose"),
    IpsetInfo(KUBE_NODE_PORT_LOCAL_TCP, BITMAP_PORT, "Kubernetes nodeport TCP port with externalTrafficPolicy=local"),
    IpsetInfo(KUBE_NODE_PORT_UDP, BITMAP_PORT, "Kubernetes nodeport UDP port for masquerade purpose"),
    IpsetInfo(KUBE_NODE_PORT_LOCAL_UDP, BITMAP_PORT, "Kubernetes nodeport UDP port with externalTrafficPolicy=local"),
    IpsetInfo(KUBE_NODE_PORT_SCTP, HASH_IP_PORT,
              "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"),
    IpsetInfo(KUBE_NODE_PORT_LOCAL_SCTP, HASH_IP_PORT,
              "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"),
    IpsetInfo(KUBE_HEALTH_CHECK_NODE_PORT, BITMAP_PORT, "Kubernetes health check node port"),
    IpsetInfo(KUBE_IPVS_IPS, HASH_IP, "Addresses on the ipvs interface"),
)
IPSET_INFO: Mapping[str, IpsetInfo] = {i.name: i for i in IPSETS}

# ipsetWithIptablesChain: (set, table, from chain, target, match type, protocol match)
_SET_JUMPS = (
    (KUBE_LOOP_BACK, "nat", KUBE_POSTROUTING, "MASQUERADE", "dst,dst,src", ""),
    (KUBE_LOAD_BALANCER_SET, "nat", KUBE_SERVICES, KUBE_LOAD_BALANCER, "dst,dst", ""),
    (KUBE_LOAD_BALANCER_LOCAL, "nat", KUBE_LOAD_BALANCER, "RETURN", "dst,dst", ""),
    (KUBE_NODE_PORT_LOCAL_TCP, "nat", KUBE_NODE_PORT, "RETURN", "dst", "tcp"),
    (KUBE_NODE_PORT_TCP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst", "tcp"),
    (KUBE_NODE_PORT_LOCAL_UDP, "nat", KUBE_NODE_PORT, "RETURN", "dst", "udp"),
    (KUBE_NODE_PORT_UDP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst", "udp"),
    (KUBE_NODE_PORT_LOCAL_SCTP, "nat", KUBE_NODE_PORT, "RETURN", "dst,dst", "sctp"),
    (KUBE_NODE_PORT_SCTP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst,dst", "sctp"),
    (KUBE_LOAD_BALANCER_FW, "filter", KUBE_PROXY_FIREWALL, KUBE_SOURCE_RANGES_FIREWALL, "dst,dst", ""),
    (KUBE_LOAD_BALANCER_SOURCE_CIDR, "filter", KUBE_SOURCE_RANGES_FIREWALL, "RETURN", "dst,dst,src", ""),
    (KUBE_LOAD_BALANCER_SOURCE_IP, "filter", KUBE_SOURCE_RANGES_FIREWALL, "RETURN", "dst,dst,src", ""),
)

# iptablesJumpChain: kube-proxy ensures each with `iptables -I <from> ... -j <to>` (prepend)
JUMP_RULES = (
    ("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals"),
    ("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals"),
    ("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
    ("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
    ("filter", "INPUT", KUBE_NODE_PORT, "kubernetes health check rules"),
    ("filter", "INPUT", KUBE_PROXY_FIREWALL, "kube-proxy firewall rules"),
    ("filter", "FORWARD", KUBE_PROXY_FIREWALL, "kube-proxy firewall rules"),
    ("filter", "INPUT", KUBE_IPVS_FILTER, "kubernetes ipvs access filter"),
    ("filter", "OUTPUT", KUBE_IPVS_OUT_FILTER, "kubernetes ipvs access filter"),
)

PROTOCOL_OPTION = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}
OPTION_PROTOCOL = {v: k for k, v in PROTOCOL_OPTION.items()}

# IPVS service flags (include/uapi/linux/ip_vs.h); kube-proxy's FlagPersistent / FlagSourceHash
FLAG_PERSISTENT = 0x1
FLAG_SOURCE_HASH = 0x10   # IP_VS_SVC_F_SCHED2: ipvsadm "-b sh-port" / "mh-port"


def set_name(name: str, ip_family: str = IPV4) -> str:
    """IPv6 sets are named KUBE-6-..., cut to ipset's 31 characters (NewIPSet)."""
    if ip_family == IPV4 or not name.startswith("KUBE-"):
        return name
    return ("KUBE-6-" + name[len("KUBE-"):])[:31]


def ipset_create_line(info: IpsetInfo, ip_family: str = IPV4) -> str:
    """`create` as ipset save prints it for kube-proxy's CreateSet (hashsize 1024, maxelem 65536,
    bitmap range 0-65535; the kernel adds bucketsize/initval when saving, which restore ignores)."""
    name = set_name(info.name, ip_family)
    if info.set_type == BITMAP_PORT:
        return f"create {name} {info.set_type} range 0-65535"
    family = "inet" if ip_family == IPV4 else "inet6"
    return f"create {name} {info.set_type} family {family} hashsize 1024 maxelem 65536"


# --------------------------------------------------------------------------- model
@dataclass(frozen=True, order=True)
class VirtualServer:
    protocol: str          # "TCP", "UDP" or "SCTP"
    address: str
    port: int
    scheduler: str = DEFAULT_SCHEDULER
    flags: int = 0         # FLAG_PERSISTENT, FLAG_SOURCE_HASH
    timeout: int = 0       # persistence timeout (seconds), with FLAG_PERSISTENT

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.protocol, self.address, self.port)

    @property
    def service_arg(self) -> str:
        """"-t 10.96.0.1:443" as ipvsadm names a virtual service."""
        return f"{PROTOCOL_OPTION[self.protocol]} {join_host_port(self.address, self.port)}"

    def ipvsadm_args(self) -> str:
        """The options after -A/-E, in ipvsadm-save's order."""
        out = f"{self.service_arg} -s {self.scheduler}"
        if self.flags & FLAG_PERSISTENT:
            out += f" -p {self.timeout}"
        if self.flags & FLAG_SOURCE_HASH:  # ipvsadm names IP_VS_SVC_F_SCHED2 after the scheduler
            out += " -b " + (f"{self.scheduler}-port" if self.scheduler in ("sh", "mh") else "flag-2")
        return out

    def __str__(self) -> str:  # kube-proxy's VirtualServer.String(): "ip:port/protocol"
        return f"{join_host_port(self.address, self.port)}/{self.protocol}"


@dataclass(frozen=True, order=True)
class RealServer:
    address: str
    port: int
    weight: int = 1

    @property
    def key(self) -> tuple[str, int]:
        return (self.address, self.port)

    def __str__(self) -> str:
        return join_host_port(self.address, self.port)


@dataclass(frozen=True)
class IpvsService:
    """One virtual server, what it is for, and its real servers."""

    vs: VirtualServer
    real_servers: tuple[RealServer, ...]
    service: str          # service port name, "ns/name:port"
    kind: str             # "ClusterIP", "ExternalIP", "LoadBalancer" or "NodePort"
    bind: bool            # its address goes on kube-ipvs0


@dataclass(frozen=True)
class IpvsSettings:
    """kube-proxy's IPVS flags and the node facts it reads from the kernel.

    `node_addresses` are the node's local addresses outside kube-ipvs0 (kube-proxy lists them with
    netlink: every interface, loopback and IPv6 link-local left out). They receive the NodePort
    virtual servers (filtered by --nodeport-addresses) and decide whether an externalIP / LB IP
    must be bound to kube-ipvs0. None: the view's node IPs.
    """

    scheduler: str = DEFAULT_SCHEDULER
    node_addresses: Optional[tuple[str, ...]] = None
    strict_arp: bool = True          # --ipvs-strict-arp: arp_ignore=1, arp_announce=2 (MetalLB needs it)


# --------------------------------------------------------------------------- one service port
@dataclass(frozen=True)
class PortPiece:
    services: tuple[IpvsService, ...]
    entries: tuple[tuple[str, str], ...]          # (set, entry)
    no_node_access: tuple[tuple[str, str, int], ...]  # (LB ip, protocol, port): KUBE-IPVS-OUT-FILTER


def _valid_for_set(text: str, ipv4: bool) -> bool:
    """netlinkHandle.isValidForSet: node addresses kube-proxy considers (no loopback, no IPv6
    link-local, right family)."""
    addr = parse_ip(text)
    if addr is None or (addr.version == 4) != ipv4 or addr.is_loopback:
        return False
    return not (addr.version == 6 and addr.is_link_local)


def node_addresses(view: NodeProxyView, settings: IpvsSettings) -> tuple[str, ...]:
    o = view.options
    ipv4 = o.ip_family == IPV4
    raw = settings.node_addresses if settings.node_addresses is not None else o.node_ips
    out = []
    for text in raw:
        if _valid_for_set(text, ipv4):
            s = str(parse_ip(text))
            if s not in out:
                out.append(s)
    return tuple(out)


def nodeport_ips(view: NodeProxyView, addresses: Sequence[str]) -> tuple[str, ...]:
    """The addresses NodePort virtual servers go on: all node addresses, or those inside
    --nodeport-addresses (loopback excluded either way)."""
    cidrs = nodeport_cidrs(view)
    if not cidrs or any(c.prefixlen == 0 for c in cidrs):
        return tuple(addresses)
    return tuple(a for a in addresses if any(parse_ip(a) in c for c in cidrs))


@dataclass(frozen=True)
class _Context:
    node_name: str
    node_zone: Optional[str]
    node_ip: Optional[str]
    scheduler: str
    node_addresses: frozenset[str]
    nodeport_ips: tuple[str, ...]


def _vs(ctx: _Context, svc: ServicePortView, address: str, port: int) -> VirtualServer:
    flags, timeout = 0, 0
    if svc.session_affinity_seconds is not None:
        flags |= FLAG_PERSISTENT
        timeout = svc.session_affinity_seconds
    if ctx.scheduler == "mh":
        flags |= FLAG_SOURCE_HASH
    return VirtualServer(svc.protocol, address, port, ctx.scheduler, flags, timeout)


def _real_servers(ctx: _Context, svc: ServicePortView, only_local: bool) -> tuple[RealServer, ...]:
    """syncEndpoint: local endpoints when asked for and present, else the cluster ones."""
    cat = categorize_endpoints(svc, ctx.node_name, ctx.node_zone)
    eps = cat.local if (only_local and cat.local) else cat.cluster
    seen = {}
    for e in eps:
        seen.setdefault(e.endpoint, RealServer(e.ip, e.port, 1))
    return tuple(seen[k] for k in sorted(seen))


def render_port(ctx: _Context, svc: ServicePortView) -> PortPiece:
    proto = svc.protocol.lower()
    services: list[IpvsService] = []
    entries: list[tuple[str, str]] = []
    no_node_access: list[tuple[str, str, int]] = []
    name = svc.service_port_name

    # hairpin: every local endpoint, whatever its state
    for e in svc.endpoints:
        if e.is_local:
            entries.append((KUBE_LOOP_BACK, f"{e.ip},{proto}:{e.port},{e.ip}"))

    entries.append((KUBE_CLUSTER_IP, f"{svc.cluster_ip},{proto}:{svc.port}"))
    services.append(IpvsService(_vs(ctx, svc, svc.cluster_ip, svc.port),
                                _real_servers(ctx, svc, svc.internal_policy_local), name, "ClusterIP", True))

    for ip in svc.external_ips:
        entries.append((KUBE_EXTERNAL_IP_LOCAL if svc.external_policy_local else KUBE_EXTERNAL_IP,
                        f"{ip},{proto}:{svc.port}"))
        services.append(IpvsService(_vs(ctx, svc, ip, svc.port),
                                    _real_servers(ctx, svc, svc.external_policy_local), name, "ExternalIP",
                                    ip not in ctx.node_addresses))

    for ip in svc.load_balancer_ips:
        entry = f"{ip},{proto}:{svc.port}"
        entries.append((KUBE_LOAD_BALANCER_SET, entry))
        if svc.external_policy_local:
            entries.append((KUBE_LOAD_BALANCER_LOCAL, entry))
        if svc.load_balancer_source_ranges:
            entries.append((KUBE_LOAD_BALANCER_FW, entry))
            allow_from_node = False
            node_ip = parse_ip(ctx.node_ip) if ctx.node_ip else None
            for cidr in svc.load_balancer_source_ranges:
                entries.append((KUBE_LOAD_BALANCER_SOURCE_CIDR, f"{entry},{cidr}"))
                net = parse_cidr(cidr)
                if node_ip is not None and net is not None and node_ip.version == net.version and node_ip in net:
                    allow_from_node = True
            if allow_from_node:
                entries.append((KUBE_LOAD_BALANCER_SOURCE_IP, f"{entry},{ip}"))
            else:
                no_node_access.append((ip, proto, svc.port))
        services.append(IpvsService(_vs(ctx, svc, ip, svc.port),
                                    _real_servers(ctx, svc, svc.external_policy_local), name, "LoadBalancer",
                                    ip not in ctx.node_addresses))

    if svc.node_port and ctx.nodeport_ips:
        local = svc.external_policy_local
        if proto == "sctp":
            np_entries = [f"{ip},{proto}:{svc.node_port}" for ip in ctx.nodeport_ips]
            sets = (KUBE_NODE_PORT_SCTP, KUBE_NODE_PORT_LOCAL_SCTP)
        else:
            np_entries = [str(svc.node_port)]
            sets = ((KUBE_NODE_PORT_TCP, KUBE_NODE_PORT_LOCAL_TCP) if proto == "tcp"
                    else (KUBE_NODE_PORT_UDP, KUBE_NODE_PORT_LOCAL_UDP))
        entries.extend((sets[0], e) for e in np_entries)
        if local:
            entries.extend((sets[1], e) for e in np_entries)
        rs = _real_servers(ctx, svc, local)
        for ip in ctx.nodeport_ips:
            services.append(IpvsService(_vs(ctx, svc, ip, svc.node_port), rs, name, "NodePort", False))

    if svc.health_check_node_port:
        entries.append((KUBE_HEALTH_CHECK_NODE_PORT, str(svc.health_check_node_port)))
    return PortPiece(tuple(services), tuple(entries), tuple(no_node_access))


# --------------------------------------------------------------------------- the node's ruleset
@dataclass(frozen=True)
class IpvsRuleset:
    ip_family: str
    services: tuple[IpvsService, ...]                 # service-name order, ClusterIP first
    addresses: tuple[str, ...]                        # on kube-ipvs0, sorted
    ipset_entries: Mapping[str, frozenset[str]]       # every set of IPSETS (IPv4 names), maybe empty
    nat_rules: tuple[str, ...]
    filter_rules: tuple[str, ...]
    sysctls: tuple[tuple[str, str], ...] = ()
    _by_key: dict = field(default_factory=dict, compare=False, repr=False)

    # ---- views
    def virtual_servers(self) -> dict[tuple[str, str, int], VirtualServer]:
        return {s.vs.key: s.vs for s in self.services}

    def real_servers(self) -> dict[tuple[str, str, int], tuple[RealServer, ...]]:
        return {s.vs.key: s.real_servers for s in self.services}

    def service(self, protocol: str, address: str, port: int) -> Optional[IpvsService]:
        if not self._by_key:
            self._by_key.update((s.vs.key, s) for s in self.services)
        return self._by_key.get((protocol, address, port))

    def set_name(self, name: str) -> str:
        return set_name(name, self.ip_family)

    # ---- texts
    def ipvsadm_restore(self) -> str:
        """`ipvsadm-save -n` of this state: -A lines each followed by its -a lines."""
        out = []
        for s in self.services:
            out.append(f"-A {s.vs.ipvsadm_args()}")
            for rs in s.real_servers:
                out.append(f"-a {s.vs.service_arg} -r {rs} -m -w {rs.weight}")
        return "".join(line + "\n" for line in out)

    def ipset_restore(self) -> str:
        """`ipset save` of kube-proxy's sets: every create, then the set's members (sorted)."""
        out = []
        for info in IPSETS:
            out.append(ipset_create_line(info, self.ip_family))
            name = set_name(info.name, self.ip_family)
            out.extend(f"add {name} {e}" for e in sorted(self.ipset_entries.get(info.name, ())))
        return "".join(line + "\n" for line in out)

    def iptables_restore(self) -> str:
        """kube-proxy's `iptables-restore --noflush` payload: nat chains and rules, filter chains and rules."""
        lines = ["*nat", *(f":{c} - [0:0]" for c in NAT_CHAINS), *self.nat_rules, "COMMIT",
                 "*filter", *(f":{c} - [0:0]" for c in FILTER_CHAINS), *self.filter_rules, "COMMIT"]
        return "".join(line + "\n" for line in lines)

    def address_cidrs(self) -> tuple[str, ...]:
        bits = 32 if self.ip_family == IPV4 else 128
        return tuple(f"{a}/{bits}" for a in self.addresses)

    def chain_rules(self, table: str, chain: str) -> list[str]:
        rules = self.nat_rules if table == "nat" else self.filter_rules
        return [r for r in rules if r.startswith(f"-A {chain} ")]


def base_jump_rules() -> list[tuple[str, str, str]]:
    """(table, built-in chain, rule args) kube-proxy ensures with `iptables -I`, in its order."""
    return [(t, frm, f'-m comment --comment "{comment}" -j {to}') for t, frm, to, comment in JUMP_RULES]


def jump_payload() -> str:
    """iptables-restore lines (for a fresh node) that insert kube-proxy's jumps exactly as its
    `iptables -I` calls leave them. The KUBE-* chains must exist (declare them in the same payload)."""
    out = []
    for table in ("nat", "filter"):
        out.append(f"*{table}")
        out += [f":{c} - [0:0]" for c in (NAT_CHAINS if table == "nat" else FILTER_CHAINS)]
        out += [f"-I {frm} 1 {args}" for t, frm, args in base_jump_rules() if t == table]
        out.append("COMMIT")
    return "".join(line + "\n" for line in out)


def sysctls(settings: IpvsSettings, kernel_release: Optional[str] = None) -> tuple[tuple[str, str], ...]:
    """The sysctls NewProxier ensures in the node's network namespace."""
    out = [("net.ipv4.vs.conntrack", "1")]
    if kernel_release is not None:
        v = _kernel_version(kernel_release)
        if v is not None and (4, 1) <= v < (5, 9):
            out.append(("net.ipv4.vs.conn_reuse_mode", "0"))   # kubernetes issue 93297; fixed in 5.9
    out += [("net.ipv4.vs.expire_nodest_conn", "1"), ("net.ipv4.vs.expire_quiescent_template", "1"),
            ("net.ipv4.ip_forward", "1")]
    if settings.strict_arp:
        out += [("net.ipv4.conf.all.arp_ignore", "1"), ("net.ipv4.conf.all.arp_announce", "2")]
    return tuple(out)


def _kernel_version(release: str) -> Optional[tuple[int, int]]:
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return None


def _iptables_rules(view: NodeProxyView, entries: Mapping[str, frozenset[str]],
                    no_node_access: Iterable[tuple[str, str, int]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """writeIptablesRules, line for line."""
    o = view.options
    ipv4 = o.ip_family == IPV4
    mark = o.masquerade_mark
    name = lambda s: set_name(s, o.ip_family)  # noqa: E731
    comment = lambda s: f'-m comment --comment "{IPSET_INFO[s].comment}"'  # noqa: E731
    nonempty = lambda s: bool(entries.get(s))  # noqa: E731
    nat: list[str] = [f"-A {KUBE_SERVICES} -s {'127.0.0.0/8' if ipv4 else '::1/128'} -j RETURN"]
    flt: list[str] = []

    for s, table, frm, to, match, proto in _SET_JUMPS:
        if not nonempty(s):
            continue
        rule = (f"-A {frm}" + (f" -p {proto}" if proto else "")
                + f" {comment(s)} -m set --match-set {name(s)} {match} -j {to}")
        (flt if table == "filter" else nat).append(rule)

    if nonempty(KUBE_CLUSTER_IP):
        head = f"-A {KUBE_SERVICES} {comment(KUBE_CLUSTER_IP)} -m set --match-set {name(KUBE_CLUSTER_IP)}"
        cidr = parse_cidr(o.cluster_cidr.strip()) if o.cluster_cidr else None
        if o.masquerade_all:
            nat.append(f"{head} dst,dst -j {KUBE_MARK_MASQ}")
        elif cidr is not None:
            # traffic from outside the pod network to a ClusterIP may come back through another node
            nat.append(f"{head} dst,dst ! -s {cidr} -j {KUBE_MARK_MASQ}")
        else:
            # node-originated traffic picks a VIP of kube-ipvs0 as source: masquerade it
            nat.append(f"{head} src,dst -j {KUBE_MARK_MASQ}")

    def external_ip_rules(head: str) -> None:
        # from off the machine (not from a bridge port, not from a local process) ...
        nat.append(f"{head} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT")
        # ... or to an address the node owns (e.g. GCE LB IPs in the local table)
        nat.append(f"{head} -m addrtype --dst-type LOCAL -j ACCEPT")

    if nonempty(KUBE_EXTERNAL_IP):
        head = f"-A {KUBE_SERVICES} {comment(KUBE_EXTERNAL_IP)} -m set --match-set {name(KUBE_EXTERNAL_IP)} dst,dst"
        nat.append(f"{head} -j {KUBE_MARK_MASQ}")
        external_ip_rules(head)
    if nonempty(KUBE_EXTERNAL_IP_LOCAL):
        external_ip_rules(f"-A {KUBE_SERVICES} {comment(KUBE_EXTERNAL_IP_LOCAL)} "
                          f"-m set --match-set {name(KUBE_EXTERNAL_IP_LOCAL)} dst,dst")

    nat.append(f"-A {KUBE_SERVICES} -m addrtype --dst-type LOCAL -j {KUBE_NODE_PORT}")
    nat.append(f"-A {KUBE_LOAD_BALANCER} -j {KUBE_MARK_MASQ}")
    flt.append(f"-A {KUBE_SOURCE_RANGES_FIREWALL} -j DROP")
    for ip, proto, port in no_node_access:
        flt.append(f"-A {KUBE_IPVS_OUT_FILTER} -s {ip} -m ipvs --vaddr {ip} --vproto {proto} --vport {port} -j DROP")
    # acceptIPVSTraffic: last rules of KUBE-SERVICES
    for s in (KUBE_CLUSTER_IP, KUBE_LOAD_BALANCER_SET):
        if nonempty(s):
            nat.append(f"-A {KUBE_SERVICES} -m set --match-set {name(s)} dst,dst -j ACCEPT")
    flt.append(f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" '
               f"-m mark --mark {mark}/{mark} -j ACCEPT")
    flt.append(f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" '
               "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    flt.append(f"-A {KUBE_NODE_PORT} {comment(KUBE_HEALTH_CHECK_NODE_PORT)} "
               f"-m set --match-set {name(KUBE_HEALTH_CHECK_NODE_PORT)} dst -j ACCEPT")
    # KUBE-IPVS-FILTER: no new connections to host ports through VIPs (kubernetes issue 72236)
    for s, match in ((KUBE_LOAD_BALANCER_SET, "dst,dst"), (KUBE_CLUSTER_IP, "dst,dst"), (KUBE_EXTERNAL_IP, "dst,dst"),
                     (KUBE_EXTERNAL_IP_LOCAL, "dst,dst"), (KUBE_HEALTH_CHECK_NODE_PORT, "dst")):
        flt.append(f"-A {KUBE_IPVS_FILTER} -m set --match-set {name(s)} {match} -j RETURN")
    flt.append(f"-A {KUBE_IPVS_FILTER} -m conntrack --ctstate NEW "
               f"-m set --match-set {name(KUBE_IPVS_IPS)} dst -j REJECT")
    nat.append(f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN")
    nat.append(f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {mark}")
    nat.append(f'-A {KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
               + (" --random-fully" if o.random_fully else ""))
    nat.append(f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {mark}")
    return tuple(nat), tuple(flt)


class IpvsRenderer:
    """Renders a node's views one after another, re-rendering only service ports that changed
    (views derived with with_service()/refresh_view() keep unchanged ports as the same objects)."""

    def __init__(self, settings: IpvsSettings = IpvsSettings()):
        self.settings = settings
        self._ctx: Optional[_Context] = None
        self._cache: dict[tuple, tuple[ServicePortView, PortPiece]] = {}

    def _context(self, view: NodeProxyView) -> _Context:
        o = view.options
        addrs = node_addresses(view, self.settings)
        return _Context(o.node_name, o.node_zone, o.primary_ip, self.settings.scheduler or DEFAULT_SCHEDULER,
                        frozenset(addrs), nodeport_ips(view, addrs))

    def render(self, view: NodeProxyView, kernel_release: Optional[str] = None) -> IpvsRuleset:
        ctx = self._context(view)
        if ctx != self._ctx:
            self._cache.clear()
            self._ctx = ctx
        services: list[IpvsService] = []
        entries: dict[str, set[str]] = {i.name: set() for i in IPSETS}
        no_node_access: list[tuple[str, str, int]] = []
        cache: dict[tuple, tuple[ServicePortView, PortPiece]] = {}
        for svc in view.ports():
            hit = self._cache.get(svc.key)
            piece = hit[1] if hit is not None and hit[0] is svc else render_port(ctx, svc)
            cache[svc.key] = (svc, piece)
            services.extend(piece.services)
            for s, e in piece.entries:
                entries[s].add(e)
            no_node_access.extend(piece.no_node_access)
        self._cache = cache
        # one virtual server per key: the first service port that claims it wins (two Services on
        # the same externalIP:port would fight over it in kube-proxy too)
        unique: dict[tuple, IpvsService] = {}
        for s in services:
            unique.setdefault(s.vs.key, s)
        services = list(unique.values())
        bound = sorted({s.vs.address for s in services if s.bind}, key=_addr_key)
        entries[KUBE_IPVS_IPS] = set(bound)
        frozen = {k: frozenset(v) for k, v in entries.items()}
        nat, flt = _iptables_rules(view, frozen, no_node_access)
        return IpvsRuleset(view.options.ip_family, tuple(services), tuple(bound), frozen, nat, flt,
                           sysctls(self.settings, kernel_release))


def _addr_key(text: str):
    a = ipaddress.ip_address(text)
    return (a.version, a)


def render(view: NodeProxyView, settings: IpvsSettings = IpvsSettings(),
           kernel_release: Optional[str] = None) -> IpvsRuleset:
    """The IPVS-mode state kube-proxy would program on the node of `view`."""
    return IpvsRenderer(settings).render(view, kernel_release)


def render_text(view: NodeProxyView, settings: IpvsSettings = IpvsSettings(), *, jumps: bool = False,
                kernel_release: Optional[str] = None) -> str:
    """`netemu render ipvs`: everything kube-proxy programs on the node, one section per tool."""
    rs = render(view, settings, kernel_release)
    out = [f"# kube-ipvs0 (ip -batch -): {len(rs.addresses)} service addresses, the link stays down",
           f"link add {DUMMY_DEVICE} type dummy"]
    out += [f"address add {a} dev {DUMMY_DEVICE}" for a in rs.address_cidrs()]
    out.append(f"# ipset restore: {len(IPSETS)} sets, {sum(len(v) for v in rs.ipset_entries.values())} members")
    out.append(rs.ipset_restore().rstrip("\n"))
    n_rs = sum(len(s.real_servers) for s in rs.services)
    out.append(f"# ipvsadm-restore (ipvsadm-save -n): {len(rs.services)} virtual servers, {n_rs} real servers")
    if rs.services:
        out.append(rs.ipvsadm_restore().rstrip("\n"))
    out.append("# iptables-restore --noflush")
    if jumps:
        out += [f"# iptables -t {t} -I {c} {a}" for t, c, a in base_jump_rules()]
    out.append(rs.iptables_restore().rstrip("\n"))
    out.append("# sysctl -w (the node's network namespace)")
    out += [f"{k}={v}" for k, v in rs.sysctls]
    return "\n".join(out) + "\n"
