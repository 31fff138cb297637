"""kube-proxy's iptables mode as a pure renderer: NodeProxyView -> iptables-restore payload.

`render(view).payload()` is the input kube-proxy's syncProxyRules (v1.31+) feeds to
`iptables-restore --noflush` on a full sync. kube-proxy walks its service map in Go map order,
so its real output order varies from sync to sync; its unit tests compare outputs after a
canonical sort (sortIPTablesRules in proxier_test.go: tables by name; chains KUBE-NODEPORTS,
KUBE-SERVICES, then the other KUBE-* alphabetically; rules grouped by chain; KUBE-SERVICES and
KUBE-NODEPORTS ordered by service name; "-X" lines last). payload() produces exactly that
canonical text; payload(order="kube-proxy") produces kube-proxy's write order with services
taken in name order (one of the orders a real kube-proxy writes).

The jumps from the built-in chains into KUBE-* chains are not part of the payload: kube-proxy
ensures them with `iptables -C`/`-I` on full syncs; base_jump_rules() lists them.
"""
from __future__ import annotations

import bisect
import shlex
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional

from netemu.dataplane.proxy.addresses import IPV4, parse_ip
from netemu.dataplane.proxy.iptables.chains import (
    CT_STATE_INVALID_COUNTER,
    KUBE_EXTERNAL_SERVICES,
    KUBE_FIREWALL,
    KUBE_FORWARD,
    KUBE_MARK_MASQ,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_PROXY_CANARY,
    KUBE_PROXY_FIREWALL,
    KUBE_SERVICES,
    chain_line,
)
from netemu.dataplane.proxy.iptables.port import (
    FILTER,
    NAT,
    PortRules,
    RenderContext,
    localhost_nodeports_enabled,
    render_port,
)
from netemu.dataplane.proxy.view import NodeProxyView, ServicePortView, nodeport_cidrs

TABLES = (FILTER, NAT)
NODEPORTS_LAST_COMMENT = '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"'


# --------------------------------------------------------------------------- node-wide rules
@dataclass(frozen=True)
class NodeRules:
    """The rules that do not belong to any service: top-level chain lists, and lines written
    before (head) or after (tail) the services' lines in a top-level chain."""

    filter_chains: tuple[str, ...]
    nat_chains: tuple[str, ...]
    head: Mapping[tuple[str, str], tuple[str, ...]]
    tail: Mapping[tuple[str, str], tuple[str, ...]]

    def chains(self, table: str) -> tuple[str, ...]:
        return self.filter_chains if table == FILTER else self.nat_chains


def node_rules(view: NodeProxyView) -> NodeRules:
    o = view.options
    mark = o.masquerade_mark
    localhost = localhost_nodeports_enabled(view)
    filter_chains = [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL]
    head: dict[tuple[str, str], tuple[str, ...]] = {}
    if localhost:
        # route_localnet opens a hole (issue 90259); kubelet installs an identical rule
        filter_chains.append(KUBE_FIREWALL)
        head[(FILTER, KUBE_FIREWALL)] = (
            '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 '
            "! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",)
    head[(NAT, KUBE_POSTROUTING)] = (
        f"-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {mark}",  # clear it: no re-masquerade on re-traversal
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
        + (" --random-fully" if o.random_fully else ""),
    )
    head[(NAT, KUBE_MARK_MASQ)] = (f"-A KUBE-MARK-MASQ -j MARK --or-mark {mark}",)

    forward = []
    if not o.conntrack_tcp_be_liberal:
        # INVALID packets would otherwise reset connections (kubernetes issues 74839, 117924)
        counted = f" -m nfacct --nfacct-name {CT_STATE_INVALID_COUNTER}" if o.nfacct else ""
        forward.append(f"-A KUBE-FORWARD -m conntrack --ctstate INVALID{counted} -j DROP")
    forward.append('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" '
                   f"-m mark --mark {mark}/{mark} -j ACCEPT")
    forward.append('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
                   "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    tail = {(FILTER, KUBE_FORWARD): tuple(forward), (NAT, KUBE_SERVICES): _nodeports_jumps(view, localhost)}
    return NodeRules(tuple(filter_chains), (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ),
                     head, tail)


def _nodeports_jumps(view: NodeProxyView, localhost: bool) -> tuple[str, ...]:
    """The last rules of nat KUBE-SERVICES: hand NodePort traffic to KUBE-NODEPORTS."""
    o = view.options
    ipv4 = o.ip_family == IPV4
    cidrs = nodeport_cidrs(view)
    if not cidrs or any(c.prefixlen == 0 for c in cidrs):
        dest = "-m addrtype --dst-type LOCAL"
        if not ipv4:
            dest += " ! -d ::1/128"
        elif not localhost:
            dest += " ! -d 127.0.0.0/8"
        return (f"-A KUBE-SERVICES -m comment --comment {NODEPORTS_LAST_COMMENT} {dest} -j KUBE-NODEPORTS",)
    # One rule per matching interface address: loopback first, then the node's addresses.
    # (kube-proxy collects them through a map, so its own order varies.)
    out = []
    seen = set()
    for text in ("127.0.0.1" if ipv4 else "::1",) + tuple(o.node_ips):
        addr = parse_ip(text)
        if addr is None or (addr.version == 4) != ipv4 or str(addr) in seen:
            continue
        if not any(addr in c for c in cidrs):
            continue
        if addr.is_loopback and (not ipv4 or not localhost):
            continue
        seen.add(str(addr))
        out.append(f"-A KUBE-SERVICES -m comment --comment {NODEPORTS_LAST_COMMENT} -d {addr} -j KUBE-NODEPORTS")
    return tuple(out)


# --------------------------------------------------------------------------- the ruleset
def chain_sort_key(chain: str) -> tuple[int, str]:
    """kube-proxy's test order: KUBE-NODEPORTS, KUBE-SERVICES, other KUBE-*, then the rest."""
    if chain == KUBE_NODEPORTS:
        return (0, chain)
    if chain == KUBE_SERVICES:
        return (1, chain)
    return (2 if chain.startswith("KUBE-") else 3, chain)


@dataclass
class Table:
    name: str
    chains: dict[str, tuple[str, ...]]          # declared chain -> its rules, in declaration order
    deleted: tuple[str, ...] = ()               # chains flushed and removed ("-X")


def sorted_chains(names: Iterable[str]) -> list[str]:
    """Chains in chain_sort_key order (plain string sorts: much faster than sorting by key)."""
    names = set(names)
    head = [c for c in (KUBE_NODEPORTS, KUBE_SERVICES) if c in names]
    names.difference_update(head)
    rest = sorted(names)
    kube = [c for c in rest if c.startswith("KUBE-")]
    return head + (kube + [c for c in rest if not c.startswith("KUBE-")] if len(kube) < len(rest) else rest)


def format_table(table: Table) -> list[str]:
    """One table in canonical order (what kube-proxy's tests compare)."""
    names = sorted_chains(list(table.chains) + list(table.deleted))
    lines = [f"*{table.name}"]
    lines.extend(chain_line(c) for c in names)
    for c in names:
        rules = table.chains.get(c)
        if rules:
            lines.extend(rules)
    deleted = set(table.deleted)
    lines.extend(f"-X {c}" for c in names if c in deleted)
    lines.append("COMMIT")
    return lines


@dataclass
class IptablesRuleset:
    """A full kube-proxy iptables ruleset for the filter and nat tables."""

    filter: Table
    nat: Table
    # builds (filter lines, nat lines) in kube-proxy's write order; set by the renderer
    _raw: Optional[Callable[[], tuple[list[str], list[str]]]] = field(default=None, repr=False)

    def table(self, name: str) -> Table:
        return self.filter if name == FILTER else self.nat

    def chain(self, table: str, chain: str) -> tuple[str, ...]:
        return self.table(table).chains.get(chain, ())

    def chain_names(self, table: str) -> list[str]:
        return list(self.table(table).chains)

    def rule_count(self, table: str) -> int:
        return sum(len(r) for r in self.table(table).chains.values())

    def payload(self, order: str = "sorted") -> str:
        """The iptables-restore input. order="sorted": the canonical order of kube-proxy's unit
        tests; order="kube-proxy": kube-proxy's write order (services in name order)."""
        if order == "sorted":
            return "\n".join(format_table(self.filter) + format_table(self.nat)) + "\n"
        if order != "kube-proxy":
            raise ValueError(f"unknown order {order!r}")
        if self._raw is None:
            raw_f = [r for rules in self.filter.chains.values() for r in rules]
            raw_n = [r for rules in self.nat.chains.values() for r in rules] + [f"-X {c}" for c in self.nat.deleted]
        else:
            raw_f, raw_n = self._raw()
        out = ["*filter"] + [chain_line(c) for c in self.filter.chains] + raw_f + ["COMMIT", "*nat"]
        out += [chain_line(c) for c in self.nat.chains] + [chain_line(c) for c in self.nat.deleted]
        out += raw_n + ["COMMIT"]
        return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- the renderer
@dataclass
class RenderDelta:
    """What an IptablesRenderer.update() changed."""

    context_changed: bool          # every service port was re-rendered
    node_changed: bool             # node-wide rules changed
    services: dict[str, tuple[tuple[PortRules, ...], tuple[PortRules, ...]]]  # "ns/name" -> (old, new)
    inputs_changed: frozenset[str] = frozenset()  # Services whose ports or endpoints changed
    previous_context: Optional[RenderContext] = None


def merged_top(rules: Iterable[PortRules]) -> dict[tuple[str, str], tuple[str, ...]]:
    """A Service's lines in each top-level chain, its ports in order."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for r in rules:
        for key, lines in r.top:
            out[key] = out[key] + lines if key in out else lines
    return out


class IptablesRenderer:
    """Keeps each Service's rendered rules and re-renders only Services whose input changed.

    update() compares each Service's ports (with their endpoints) by identity, then equality;
    a change of node-wide context (options, large-cluster mode) re-renders everything. Rules of
    a port whose ServicePortView is unchanged are reused even when a sibling port changed.
    """

    def __init__(self) -> None:
        self.view: Optional[NodeProxyView] = None
        self.context: Optional[RenderContext] = None
        self.node: Optional[NodeRules] = None
        self._ports: dict[str, tuple[ServicePortView, ...]] = {}
        self._rules: dict[str, tuple[PortRules, ...]] = {}
        self._order: list[str] = []  # service keys, sorted
        self._contrib: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {}

    def update(self, view: NodeProxyView, changed: Optional[Iterable[str]] = None) -> RenderDelta:
        """Bring the rendered rules to `view`. `changed` ("ns/name" of Services whose Service or
        EndpointSlices changed) skips the scan of unchanged Services; None scans them all."""
        ctx = RenderContext.of(view)
        node = node_rules(view)
        previous = self.context
        context_changed = ctx != previous
        node_changed = node != self.node
        self.view, self.context, self.node = view, ctx, node
        services = view.services
        if context_changed or changed is None:
            keys: Iterable[str] = list(services) + [k for k in self._ports if k not in services]
        else:
            keys = changed
        delta: dict[str, tuple[tuple[PortRules, ...], tuple[PortRules, ...]]] = {}
        inputs_changed = set()
        for key in keys:
            new = services.get(key, ())
            old = self._ports.get(key, ())
            same = new is old or new == old
            if not same:
                inputs_changed.add(key)
            elif not context_changed:
                continue
            old_rules = self._rules.get(key, ())
            if context_changed:
                new_rules = tuple(render_port(p, ctx) for p in new)
            else:
                reuse = dict(zip(old, old_rules))
                new_rules = tuple(reuse.get(p) or render_port(p, ctx) for p in new)
            self._store(key, new, old_rules, new_rules)
            delta[key] = (old_rules, new_rules)
        return RenderDelta(context_changed, node_changed, delta, frozenset(inputs_changed), previous)

    def _store(self, key: str, ports, old_rules, new_rules) -> None:
        for tc in merged_top(old_rules):
            self._contrib[tc].pop(key, None)
        if not ports:
            if key in self._ports:
                del self._ports[key], self._rules[key]
                i = bisect.bisect_left(self._order, key)
                del self._order[i]
            return
        if key not in self._ports:
            bisect.insort(self._order, key)
        self._ports[key] = ports
        self._rules[key] = new_rules
        for tc, lines in merged_top(new_rules).items():
            self._contrib.setdefault(tc, {})[key] = lines

    # ---------------------------------------------------------------- assembling chains
    def top_chain(self, table: str, chain: str) -> tuple[str, ...]:
        """A top-level chain's full content: node head, each Service in name order, node tail."""
        assert self.node is not None
        lines = list(self.node.head.get((table, chain), ()))
        contrib = self._contrib.get((table, chain))
        if contrib:
            if len(contrib) * 8 < len(self._order):
                keys: Iterable[str] = sorted(contrib)
            else:
                keys = (k for k in self._order if k in contrib)
            for k in keys:
                lines.extend(contrib[k])
        lines.extend(self.node.tail.get((table, chain), ()))
        return tuple(lines)

    def top_chains(self, table: str) -> tuple[str, ...]:
        assert self.node is not None
        return self.node.chains(table)

    def service_rules(self, key: str) -> tuple[PortRules, ...]:
        return self._rules.get(key, ())

    def service_keys(self) -> list[str]:
        return list(self._order)

    def ruleset(self, *, deleted_nat: Iterable[str] = ()) -> IptablesRuleset:
        """The full ruleset (a full sync), optionally deleting stale nat chains."""
        assert self.node is not None
        filt = {c: self.top_chain(FILTER, c) for c in self.node.filter_chains}
        nat = {c: self.top_chain(NAT, c) for c in self.node.nat_chains}
        order, rules, node = list(self._order), dict(self._rules), self.node
        for key in order:
            for r in rules[key]:
                nat.update(r.own)
        deleted = tuple(c for c in deleted_nat if c not in nat)

        def raw() -> tuple[list[str], list[str]]:
            raw_f = list(node.head.get((FILTER, KUBE_FIREWALL), ()))
            raw_n = list(node.head[(NAT, KUBE_POSTROUTING)]) + list(node.head[(NAT, KUBE_MARK_MASQ)])
            for key in order:
                for r in rules[key]:
                    raw_f.extend(r.filter_order)
                    raw_n.extend(r.nat_top_order)
                    raw_n.extend(r.own_raw())
            raw_f.extend(node.tail[(FILTER, KUBE_FORWARD)])
            raw_n.extend(f"-X {c}" for c in deleted)
            raw_n.extend(node.tail[(NAT, KUBE_SERVICES)])
            return raw_f, raw_n

        return IptablesRuleset(Table(FILTER, filt), Table(NAT, nat, deleted), raw)


def render(view: NodeProxyView) -> IptablesRuleset:
    """The full ruleset kube-proxy writes for this view."""
    r = IptablesRenderer()
    r.update(view)
    return r.ruleset()


# --------------------------------------------------------------------------- base jumps
@dataclass(frozen=True)
class JumpRule:
    """A rule kube-proxy keeps in a built-in chain with `iptables -C` then `iptables -I`."""

    table: str
    chain: str            # built-in source chain (INPUT, PREROUTING, ...)
    target: str           # the KUBE-* chain jumped to (created first if missing)
    args: tuple[str, ...]  # match and jump arguments, as passed to iptables

    def check_argv(self) -> list[str]:
        return ["-t", self.table, "-C", self.chain, *self.args]

    def insert_argv(self) -> list[str]:
        return ["-t", self.table, "-I", self.chain, *self.args]

    def __str__(self) -> str:
        return shlex.join(["iptables", *self.insert_argv()])


_NEW = ("-m", "conntrack", "--ctstate", "NEW")
# (table, target chain, source chain, comment, extra args) in kube-proxy's order (iptablesJumpChains,
# then the kubelet duplicates).
_JUMPS = (
    (FILTER, KUBE_EXTERNAL_SERVICES, "INPUT", "kubernetes externally-visible service portals", _NEW),
    (FILTER, KUBE_EXTERNAL_SERVICES, "FORWARD", "kubernetes externally-visible service portals", _NEW),
    (FILTER, KUBE_NODEPORTS, "INPUT", "kubernetes health check service ports", ()),
    (FILTER, KUBE_SERVICES, "FORWARD", "kubernetes service portals", _NEW),
    (FILTER, KUBE_SERVICES, "OUTPUT", "kubernetes service portals", _NEW),
    (FILTER, KUBE_FORWARD, "FORWARD", "kubernetes forwarding rules", ()),
    (FILTER, KUBE_PROXY_FIREWALL, "INPUT", "kubernetes load balancer firewall", _NEW),
    (FILTER, KUBE_PROXY_FIREWALL, "OUTPUT", "kubernetes load balancer firewall", _NEW),
    (FILTER, KUBE_PROXY_FIREWALL, "FORWARD", "kubernetes load balancer firewall", _NEW),
    (NAT, KUBE_SERVICES, "OUTPUT", "kubernetes service portals", ()),
    (NAT, KUBE_SERVICES, "PREROUTING", "kubernetes service portals", ()),
    (NAT, KUBE_POSTROUTING, "POSTROUTING", "kubernetes postrouting rules", ()),
    (FILTER, KUBE_FIREWALL, "INPUT", "", ()),
    (FILTER, KUBE_FIREWALL, "OUTPUT", "", ()),
)


def base_jump_rules() -> tuple[JumpRule, ...]:
    """The jumps from built-in chains that kube-proxy ensures (prepends) on every full sync,
    in its order. Each target chain must exist first (`iptables -N`)."""
    out = []
    for table, target, chain, comment, extra in _JUMPS:
        args = list(extra)
        if comment:
            args += ["-m", "comment", "--comment", comment]
        args += ["-j", target]
        out.append(JumpRule(table, chain, target, tuple(args)))
    return tuple(out)


def canary_chains() -> tuple[tuple[str, str], ...]:
    """Empty chains kube-proxy creates and watches; if one vanishes (someone flushed iptables),
    it forces a full sync."""
    return (("mangle", KUBE_PROXY_CANARY), (NAT, KUBE_PROXY_CANARY), (FILTER, KUBE_PROXY_CANARY))


def base_payload() -> str:
    """What a fresh node needs before kube-proxy's first sync: the KUBE-* chains its built-in
    chains jump to, the jumps themselves, and the canary chains. kube-proxy prepends each jump
    with `iptables -I`, so the last one it ensures ends up first; on an empty chain that is the
    same as appending them in reverse."""
    tables: dict[str, dict] = {}
    for table, chain in canary_chains():
        tables.setdefault(table, {"chains": [], "rules": []})["chains"].append(chain)
    for rule in reversed(base_jump_rules()):
        t = tables.setdefault(rule.table, {"chains": [], "rules": []})
        if rule.target not in t["chains"]:
            t["chains"].append(rule.target)
        t["rules"].append("-A " + rule.chain + " " + " ".join(_quote(a) for a in rule.args))
    out = []
    for table in ("mangle", FILTER, NAT):
        if table not in tables:
            continue
        out.append(f"*{table}")
        out += [chain_line(c) for c in tables[table]["chains"]]
        out += tables[table]["rules"]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def _quote(arg: str) -> str:
    return f'"{arg}"' if (" " in arg or not arg) else arg
