"""Follow a packet through a rendered ruleset, without a kernel (a debugging and test aid).

The model is the one kube-proxy's own unit tests use (tracePacket in proxier_test.go): nat
KUBE-SERVICES first (reached from PREROUTING/OUTPUT), then, with the destination rewritten by
the first DNAT, the filter chains KUBE-SERVICES, KUBE-EXTERNAL-SERVICES, KUBE-NODEPORTS and
KUBE-PROXY-FIREWALL. A `--probability` jump is followed and the chain then continues, so every
endpoint a packet may reach is reported. Rules that depend on history (affinity `--rcheck`,
`--mark`, `--ctstate`) never match; "LOCAL" addresses are the node's.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Iterable

from netemu.dataplane.proxy.iptables.render import IptablesRuleset

_WORD = re.compile(r'(?:^|\s)("[^"]*"|[^"]\S*)')
_PARAMS = {"-p", "-s", "--src-type", "--sport", "-d", "--dst-type", "--dport", "-j", "--probability",
           "--to-destination", "--mark", "--ctstate", "--comment", "--name", "--seconds", "--mode",
           "--nfacct-name"}
_FLAGS = {"--rcheck", "--set", "--reap", "--random-fully"}


@dataclass
class _Rule:
    raw: str
    values: dict[str, tuple[bool, str]]   # param -> (negated, value)
    flags: dict[str, bool]


def _parse(rule: str) -> _Rule:
    words = [m.group(1).strip('"') for m in _WORD.finditer(rule)]
    values: dict[str, tuple[bool, str]] = {}
    flags: dict[str, bool] = {}
    negated = False
    i = 2  # after "-A CHAIN"
    while i < len(words):
        w = words[i]
        if w == "-m" and i + 1 < len(words):
            i += 2
            continue
        if w == "!":
            negated = True
            i += 1
            continue
        if w in _PARAMS and i + 1 < len(words):
            values[w] = (negated, words[i + 1])
            i += 2
        else:
            if w in _FLAGS:
                flags[w] = not negated
            i += 1
        negated = False
    return _Rule(rule, values, flags)


def _address_matches(value: tuple[bool, str], ip: str) -> bool:
    negated, text = value
    addr = ipaddress.ip_address(ip)
    if "/" in text:
        net = ipaddress.ip_network(text, strict=False)
        matches = addr.version == net.version and addr in net
    else:
        matches = addr == ipaddress.ip_address(text)
    return matches != negated


def _equals(value: tuple[bool, str], actual: str) -> bool:
    negated, text = value
    return (text == actual) != negated


@dataclass
class Trace:
    matches: list[str] = field(default_factory=list)   # every rule that matched, in order
    outputs: list[str] = field(default_factory=list)   # DNAT destinations, or ACCEPT/DROP/REJECT
    masquerade: bool = False

    @property
    def output(self) -> str:
        return ", ".join(self.outputs)


class _Tracer:
    def __init__(self, ruleset: IptablesRuleset, local_ips: set[str]):
        self.ruleset = ruleset
        self.local_ips = local_ips
        self.cache: dict[tuple[str, str], list[_Rule]] = {}
        self.trace = Trace()

    def rules(self, table: str, chain: str) -> list[_Rule]:
        key = (table, chain)
        if key not in self.cache:
            self.cache[key] = [_parse(r) for r in self.ruleset.chain(table, chain)]
        return self.cache[key]

    def matches(self, r: _Rule, src: str, proto: str, dst: str, dport: str) -> bool:
        v = r.values
        if "-s" in v and not _address_matches(v["-s"], src):
            return False
        if "--src-type" in v and not _equals(v["--src-type"], "LOCAL" if src in self.local_ips else "-"):
            return False
        if "-p" in v and not _equals(v["-p"], proto):
            return False
        if "-d" in v and not _address_matches(v["-d"], dst):
            return False
        if "--dst-type" in v and not _equals(v["--dst-type"], "LOCAL" if dst in self.local_ips else "-"):
            return False
        if "--dport" in v and not _equals(v["--dport"], dport):
            return False
        if "--rcheck" in r.flags or "--mark" in v or "--ctstate" in v:
            return False  # depends on history the tracer does not have
        return True

    def run(self, table: str, chain: str, src: str, proto: str, dst: str, dport: str) -> bool:
        for r in self.rules(table, chain):
            if "-j" not in r.values or not self.matches(r, src, proto, dst, dport):
                continue
            self.trace.matches.append(r.raw)
            target = r.values["-j"][1]
            if target == "KUBE-MARK-MASQ":
                self.trace.masquerade = True
            elif target in ("ACCEPT", "REJECT", "DROP"):
                self.trace.outputs.append(target)
                return True
            elif target == "DNAT":
                self.trace.outputs.append(r.values["--to-destination"][1])
                return True
            else:
                done = self.run(table, target, src, proto, dst, dport)
                if done and "--probability" not in r.values:
                    return True
        return False


def trace_packet(ruleset: IptablesRuleset, *, src: str, dst: str, dport: int, proto: str = "tcp",
                 local_ips: Iterable[str] = ()) -> Trace:
    """Where a new connection from src to dst:dport would go, and whether it is masqueraded."""
    tracer = _Tracer(ruleset, {"127.0.0.1", "::1", *local_ips})
    port = str(dport)
    proto = proto.lower()
    tracer.run("nat", "KUBE-SERVICES", src, proto, dst, port)
    if tracer.trace.outputs:
        first = tracer.trace.outputs[0]
        dst = first.rsplit(":", 1)[0].strip("[]")
    for chain in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL"):
        tracer.run("filter", chain, src, proto, dst, port)
    return tracer.trace

