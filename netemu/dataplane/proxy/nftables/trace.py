"""Follow a packet through a kube-proxy nftables table, without a kernel (a test and debugging aid).

The model is the one of kube-proxy's nftablesTracer (pkg/proxy/nftables/helpers_test.go), for
the base chains of v1.33+: filter-prerouting-pre-dnat (LoadBalancerSourceRanges), then
nat-prerouting (service dispatch and DNAT), then, with the destination rewritten by the DNAT,
filter-input when the destination is a node address, else filter-forward (no-endpoint
reject/drop, ClusterIP checks). Only new connections are traced (`ct state new` matches,
affinity sets are empty); `fib ... type local` means the node's addresses. An endpoint choice is
followed into every endpoint, so the output lists every endpoint the packet may reach.

Both rule forms are understood: kube-proxy's `numgen random mod N vmap { i : goto X, ... }` and
the fast form's `numgen random mod K 0 goto X` chains. endpoint_probabilities() computes the exact
probability of each endpoint from a dispatch chain, so the two forms can be compared.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterable, Optional, Union

from netemu.dataplane.proxy.nftables.model import NftModel, Table

_COMMENT = re.compile(r' comment "[^"]*"$')
_PATTERNS = [
    ("ctnew", re.compile(r"^ct state new\b")),
    ("dispatch3", re.compile(r"^ip6? daddr \. meta l4proto \. th dport vmap @(\S+)")),
    ("dispatch2", re.compile(r"^meta l4proto \. th dport vmap @(\S+)")),
    ("addr_set", re.compile(r"^ip6? ([sd])addr (!= )?@(\S+)")),
    ("addr_anon", re.compile(r"^ip6? ([sd])addr (!= )?\{ ([^}]*) \}")),
    ("addr", re.compile(r"^ip6? ([sd])addr (!= )?([0-9a-fA-F.:/]+)")),
    ("fib", re.compile(r"^fib ([sd])addr type local\b")),
    ("numgen_vmap", re.compile(r"^numgen random mod (\d+) vmap \{ (.*) \}$")),
    ("numgen_pick", re.compile(r"^numgen random mod (\d+) (?:== )?0 goto (\S+)$")),
    ("jump", re.compile(r"^(jump|goto) (\S+)$")),
    ("verdict", re.compile(r"^(drop|reject|accept)$")),
    ("return", re.compile(r"^return$")),
    ("dnat", re.compile(r"^meta l4proto (\S+) dnat to (\S+)$")),
    ("update", re.compile(r"^update @\S+ \{ ip6? saddr \}")),
    ("mark", re.compile(r"^(mark .*|masquerade.*)$")),
]
_VMAP_ENTRY = re.compile(r"\d+ : goto (\S+)")


class TraceError(Exception):
    pass


@dataclass
class Trace:
    matches: list[str] = field(default_factory=list)    # rules that matched, for debugging
    outputs: list[tuple[str, Fraction]] = field(default_factory=list)   # (endpoint or verdict, probability)
    masq: bool = False
    steps: list[tuple[int, str, str]] = field(default_factory=list)  # (depth, chain, rule) of each match

    @property
    def output(self) -> str:
        """kube-proxy's tracer output: the endpoints ("ip:port", comma-separated) or DROP/REJECT."""
        seen: list[str] = []
        for out, _ in self.outputs:
            if out not in seen:
                seen.append(out)
        return ", ".join(seen)


def _table(source: Union[NftModel, Table, object]) -> Table:
    if isinstance(source, Table):
        return source
    if isinstance(source, NftModel):
        return source.only_table()
    state = getattr(source, "state", None)   # an NftRuleset
    if callable(state):
        return state().only_table()
    raise TypeError(f"cannot trace through {type(source).__name__}")


def _in(ip: str, text: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if "/" in text:
        net = ipaddress.ip_network(text, strict=False)
        return addr.version == net.version and addr in net
    other = ipaddress.ip_address(text)
    return addr == other


def _host(endpoint: str) -> str:
    if endpoint.startswith("["):
        return endpoint[1:endpoint.index("]")]
    return endpoint.rsplit(":", 1)[0]


class _Tracer:
    def __init__(self, table: Table, src: str, proto: str, dst: str, dport: int, node_ips: Iterable[str]):
        self.t = table
        self.src, self.proto, self.dst, self.dport = src, proto, dst, str(dport)
        self.node_ips = {str(ipaddress.ip_address(i)) for i in node_ips}
        self.trace = Trace()
        self.depth = 0
        self.chains: list[str] = []

    def run(self, chain_name: str, weight: Fraction) -> bool:
        """Run a chain; True when the packet met a terminal verdict (dnat, drop, reject)."""
        chain = self.t.chains.get(chain_name)
        if chain is None:
            raise TraceError(f"unknown chain {chain_name!r}")
        self.depth += 1
        if self.depth > 64:
            raise TraceError("chain loop")
        self.chains.append(chain_name)
        try:
            for raw in chain.rules:
                res = self._rule(raw, weight)
                if res is None:
                    continue          # did not match, or matched without a verdict
                if isinstance(res, tuple):   # ("continue", remaining weight) after a numgen pick
                    weight = res[1]
                    continue
                return res
            return False
        finally:
            self.depth -= 1
            self.chains.pop()

    def _matched(self, raw: str) -> None:
        self.trace.matches.append(raw)
        self.trace.steps.append((self.depth, self.chains[-1], raw))

    def _lookup(self, name: str, key: str) -> Optional[str]:
        s = self.t.sets.get(name)
        if s is None:
            raise TraceError(f"unknown set {name!r}")
        if key in s.elements:
            return s.elements[key][0] or ""
        return None

    def _verdict(self, rule: str, verdict: str, weight: Fraction) -> Optional[bool]:
        """Run a verdict statement ("goto X", "drop", ...); None when it falls through."""
        m = re.match(r"^(jump|goto) (\S+)$", verdict)
        if m:
            action, target = m.groups()
            if target == "mark-for-masquerade" and action == "jump":
                self.trace.masq = True
                return None
            terminated = self.run(target, weight)
            if terminated:
                return True
            return False if action == "goto" else None
        if verdict in ("drop", "reject"):
            self.trace.outputs.append((verdict.upper(), weight))
            return True
        if verdict == "accept":
            self.trace.outputs.append(("ACCEPT", weight))
            return True
        if verdict == "return":
            return False
        raise TraceError(f"unknown verdict {verdict!r} in {rule!r}")

    def _rule(self, raw: str, weight: Fraction):
        rest = _COMMENT.sub("", raw).strip()
        while rest:
            for kind, rx in _PATTERNS:
                m = rx.match(rest)
                if m:
                    break
            else:
                raise TraceError(f"unknown rule: {raw}")
            rest = rest[m.end():].strip()
            if kind == "ctnew" or kind == "update" or kind == "mark":
                continue
            if kind in ("dispatch3", "dispatch2"):
                key = (f"{self.dst} . {self.proto} . {self.dport}" if kind == "dispatch3"
                       else f"{self.proto} . {self.dport}")
                value = self._lookup(m.group(1), key)
                if value is None:
                    return None
                self._matched(raw)
                return self._verdict(raw, value, weight)
            if kind == "addr_set":
                ip = self.src if m.group(1) == "s" else self.dst
                found = self._lookup(m.group(3), ip) is not None
                if found == bool(m.group(2)):
                    return None
                continue
            if kind == "addr_anon":
                ip = self.src if m.group(1) == "s" else self.dst
                items = [x.strip() for x in m.group(3).replace(" , ", ",").split(",") if x.strip()]
                found = any(_in(ip, x) for x in items)
                if found == bool(m.group(2)):
                    return None
                continue
            if kind == "addr":
                ip = self.src if m.group(1) == "s" else self.dst
                found = _in(ip, m.group(3))
                if found == bool(m.group(2)):
                    return None
                continue
            if kind == "fib":
                ip = self.src if m.group(1) == "s" else self.dst
                if ip not in self.node_ips:
                    return None
                continue
            self._matched(raw)
            if kind == "numgen_vmap":
                n = int(m.group(1))
                targets = _VMAP_ENTRY.findall(m.group(2))
                if len(targets) != n:
                    raise TraceError(f"numgen mod {n} with {len(targets)} entries: {raw}")
                for target in targets:
                    self.run(target, weight / n)
                return True
            if kind == "numgen_pick":
                k = int(m.group(1))
                self.run(m.group(2), weight / k)
                return ("continue", weight * (k - 1) / k)
            if kind == "jump":
                return self._verdict(raw, f"{m.group(1)} {m.group(2)}", weight)
            if kind in ("verdict", "return"):
                return self._verdict(raw, m.group(0), weight)
            if kind == "dnat":
                self.trace.outputs.append((m.group(2), weight))
                return True
        return None


def trace_packet(source, src: str, dst: str, dport: int, protocol: str = "tcp",
                 node_ips: Iterable[str] = ()) -> Trace:
    """What happens to a new connection from `src` to `dst`:`dport` on this node."""
    table = _table(source)
    proto = protocol.lower()
    node_ips = list(node_ips)
    tr = _Tracer(table, src, proto, dst, dport, node_ips)
    one = Fraction(1)
    if tr.run("filter-prerouting-pre-dnat", one):
        return tr.trace
    tr.run("nat-prerouting", one)
    dnat = [out for out, _ in tr.trace.outputs if out not in ("DROP", "REJECT", "ACCEPT")]
    if dnat:
        tr.dst = _host(dnat[0])
    tr.run("filter-input" if tr.dst in tr.node_ips else "filter-forward", one)
    return tr.trace


def endpoint_probabilities(source, chain: str, src: str = "198.51.100.1") -> dict[str, Fraction]:
    """The probability of each endpoint ("ip:port") a new connection entering `chain` (a service
    or local policy chain) is sent to; affinity sets are empty."""
    table = _table(source)
    tr = _Tracer(table, src, "tcp", "0.0.0.0", 0, ())
    tr.run(chain, Fraction(1))
    out: dict[str, Fraction] = {}
    for target, p in tr.trace.outputs:
        out[target] = out.get(target, Fraction(0)) + p
    return out
