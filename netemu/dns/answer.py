"""The reply to one DNS request, as CoreDNS (kubeadm's Corefile, no ``forward``) would give it.

``answer(zone, request)`` is pure: same zone, same request, same reply. It picks the records per
query type from ``lookup``'s hits, and the kind of reply: records, NXDOMAIN or NODATA (with the
zone's SOA), SERVFAIL for names no zone here covers (nothing to forward to, as with kubeadm's
``fallthrough`` of unknown reverse names), REFUSED for zone transfers and classes other than IN.
``envelope`` builds the messages; truncation to the client's buffer belongs to ``wire``.
"""
from __future__ import annotations

import math
from typing import Optional

from dnslib import AAAA, CNAME, NS, PTR, QTYPE, RCODE, RR, SRV, TXT, A, DNSLabel, DNSRecord

from netemu.dns import envelope, lookup
from netemu.dns.lookup import Hit, NoSuchName, Query
from netemu.dns.names import as_ipv4, is_under, parse_ip, split_name
from netemu.dns.zone import ClusterZone

MAX_CNAME_CHAIN = 10
MAX_SELF_LOOKUPS = 8  # ExternalName targets outside the zone are asked of this server again


class _Refused(Exception):
    pass


def answer(zone: ClusterZone, request: DNSRecord) -> DNSRecord:
    if len(request.questions) != 1:
        return envelope.header_only(request, RCODE.FORMERR)
    question = request.questions[0]
    if question.qclass != 1:  # IN
        return envelope.error(request, RCODE.REFUSED)
    opt = envelope.find_opt(request)
    if opt is not None and envelope.edns_version(opt) != 0:
        return envelope.badvers(request)

    q = _query(zone, question.qname)
    if q is None:
        # not a zone of ours, and no plugin behind kubernetes to pass it to
        return envelope.error(request, RCODE.SERVFAIL)
    try:
        records, extra = _records(q, question.qtype, 0)
    except _Refused:
        return envelope.error(request, RCODE.REFUSED)
    except NoSuchName:
        if any(is_under(q.lower, split_name(z)) for z in zone.fallthrough_zones):
            return envelope.error(request, RCODE.SERVFAIL)  # fallthrough, to nothing
        return envelope.negative(request, RCODE.NXDOMAIN, _soa(q))
    if not records:
        return envelope.negative(request, RCODE.NOERROR, _soa(q))
    return envelope.positive(request, records, extra)


def _query(zone: ClusterZone, qname: DNSLabel) -> Optional[Query]:
    """The query relative to the longest zone it falls in, or None."""
    name = tuple(label.decode("latin-1") for label in qname.label)
    lower = tuple(label.lower().decode("latin-1") for label in qname.label)
    best = -1
    for z in (zone.domain,) + zone.reverse_zones:
        labels = split_name(z)
        if len(labels) > best and is_under(lower, labels):
            best = len(labels)
    if best < 0:
        return None
    return Query(zone, name, lower, name[len(name) - best:])


def _records(q: Query, qtype: int, depth: int) -> tuple[list[RR], list[RR]]:
    """Answer and additional records for one query type (NoSuchName -> NXDOMAIN)."""
    if qtype in (QTYPE.A, QTYPE.AAAA):
        return _addresses(q, qtype, (), depth), []
    if qtype == QTYPE.SRV:
        return _srv(q)
    if qtype == QTYPE.PTR:
        return _ptr(q), []
    if qtype == QTYPE.TXT:
        return [RR(_label(h.owner), QTYPE.TXT, ttl=h.ttl, rdata=TXT(h.text))
                for h in lookup.services(q, "TXT")], []
    if qtype == QTYPE.CNAME:
        hits = lookup.services(q, "CNAME")
        if hits and parse_ip(hits[0].host) is None:
            return [_cname(q, hits[0])], []
        return [], []
    if qtype == QTYPE.MX:
        lookup.services(q, "MX")  # the cluster has no mail exchangers: only existence counts
        return [], []
    if qtype == QTYPE.SOA:
        return ([_soa(q)] if len(q.name) == len(q.apex) else []), []
    if qtype in (QTYPE.AXFR, QTYPE.IXFR):
        raise _Refused
    if qtype == QTYPE.NS and ".".join(q.lower) == ".".join(q.apex):
        return _ns(q)
    # any other type: the name's existence decides between NXDOMAIN and NODATA
    _addresses(q, QTYPE.A, (), depth)
    return [], []


def _addresses(q: Query, qtype: int, chain: tuple[str, ...], depth: int) -> list[RR]:
    records: list[RR] = []
    seen: set[str] = set()
    for hit in lookup.services(q, "A" if qtype == QTYPE.A else "AAAA"):
        ip = parse_ip(hit.host)
        if ip is None:
            records.extend(_alias(q, hit, qtype, chain, depth))
            continue
        v4 = as_ipv4(ip)
        if hit.host in seen or (v4 is None) == (qtype == QTYPE.A):
            continue
        seen.add(hit.host)
        if v4 is not None:
            records.append(RR(_label(q.name), QTYPE.A, ttl=hit.ttl, rdata=A(tuple(v4.packed))))
        else:
            records.append(RR(_label(q.name), QTYPE.AAAA, ttl=hit.ttl, rdata=AAAA(tuple(ip.packed))))
    return records


def _alias(q: Query, hit: Hit, qtype: int, chain: tuple[str, ...], depth: int) -> list[RR]:
    """An ExternalName: the CNAME, followed by the target's addresses when they can be found
    (in the zone, or by asking this server; with nothing to forward to, outside names add no
    addresses). A target inside the zone that resolves to nothing drops the CNAME too."""
    target = split_name(hit.host)
    target_lower = tuple(label.lower() for label in target)
    fqdn = hit.host if hit.host.endswith(".") else hit.host + "."
    if is_under(target_lower, q.lower) or len(chain) > MAX_CNAME_CHAIN or fqdn in chain:
        return []  # a loop
    cname = _cname(q, hit)
    apex_lower = tuple(label.lower() for label in q.apex)
    if is_under(target_lower, apex_lower):
        try:
            followed = _addresses(Query(q.zone, target, target_lower, q.apex), qtype, chain + (fqdn,), depth)
        except NoSuchName:
            return []
        return [cname] + followed if followed else []
    return [cname] + _self_lookup(q.zone, target, qtype, depth + 1)


def _self_lookup(zone: ClusterZone, name: tuple[str, ...], qtype: int, depth: int) -> list[RR]:
    """The answer section this server would give for (name, qtype)."""
    if depth > MAX_SELF_LOOKUPS:
        return []
    q = _query(zone, DNSLabel([label.encode("latin-1") for label in name]))
    if q is None:
        return []  # SERVFAIL: nowhere to forward
    try:
        return _records(q, qtype, depth)[0]
    except (NoSuchName, _Refused):
        return []


def _srv(q: Query) -> tuple[list[RR], list[RR]]:
    hits = lookup.services(q, "SRV")
    if not hits:
        return [], []
    # every record has priority 0 and no weight of its own, so each gets an equal share of
    # 100, rounded down, at least 1 (CoreDNS counts port-less hits in the total too)
    share = 100.0 / (100 * len(hits))
    share *= 100
    weight = max(1, math.floor(share))
    records: list[RR] = []
    extra: list[RR] = []
    seen_srv: set[tuple[str, int]] = set()
    seen_addr: set[tuple[str, str]] = set()
    for hit in hits:
        if hit.port == -1:
            continue
        target = ".".join(hit.owner)
        if (target, hit.port) not in seen_srv:
            seen_srv.add((target, hit.port))
            records.append(RR(_label(q.name), QTYPE.SRV, ttl=hit.ttl,
                              rdata=SRV(0, weight, hit.port, _label(hit.owner))))
        if (target, hit.host) not in seen_addr:
            seen_addr.add((target, hit.host))
            extra.append(_address_record(hit.owner, hit.host, hit.ttl))
    return records, extra


def _ptr(q: Query) -> list[RR]:
    domain = q.zone.domain_labels
    records = []
    seen: set[tuple[str, ...]] = set()
    for relative in lookup.reverse(q):
        if relative not in seen:
            seen.add(relative)
            records.append(RR(_label(q.name), QTYPE.PTR, ttl=q.zone.ttl, rdata=PTR(_label(relative + domain))))
    return records


def _ns(q: Query) -> tuple[list[RR], list[RR]]:
    records: list[RR] = []
    extra: list[RR] = []
    seen: set[tuple[str, ...]] = set()
    for hit in lookup.services(q, "NS"):
        extra.append(_address_record(hit.owner, hit.host, hit.ttl))
        if hit.owner not in seen:
            seen.add(hit.owner)
            records.append(RR(_label(q.name), QTYPE.NS, ttl=hit.ttl, rdata=NS(_label(hit.owner))))
    return records, extra


def _soa(q: Query) -> RR:
    return envelope.soa_record(_label(q.apex), q.zone.serial, q.zone.ttl)


def _cname(q: Query, hit: Hit) -> RR:
    return RR(_label(q.name), QTYPE.CNAME, ttl=hit.ttl, rdata=CNAME(_label(split_name(hit.host))))


def _address_record(owner: tuple[str, ...], host: str, ttl: int) -> RR:
    ip = parse_ip(host)
    v4 = as_ipv4(ip)
    if v4 is not None:
        return RR(_label(owner), QTYPE.A, ttl=ttl, rdata=A(tuple(v4.packed)))
    return RR(_label(owner), QTYPE.AAAA, ttl=ttl, rdata=AAAA(tuple(ip.packed)))


def _label(labels: tuple[str, ...]) -> DNSLabel:
    return DNSLabel([label.encode("latin-1") for label in labels])
