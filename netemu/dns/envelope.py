"""Reply envelopes: the header, the negative and error replies, and EDNS0, as CoreDNS's server
and miekg/dns build them around the records.

- ``SetReply``: id, opcode and question kept; RD and CD copied for queries; never RA or AD.
- negative answers (NXDOMAIN, NODATA) are authoritative and carry the zone's SOA;
- errors (SERVFAIL, REFUSED) are neither;
- a request's OPT record is echoed: its buffer size and DO bit, version 0, known options.
"""
from __future__ import annotations

from typing import Optional

from dnslib import QTYPE, RCODE, RR, SOA, DNSHeader, DNSLabel, DNSRecord

SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 7200, 1800, 86400
SOA_MAX_TTL = 300
# EDNS0 options CoreDNS echoes back: NSID, EXPIRE, COOKIE, TCP-KEEPALIVE, PADDING
ECHOED_EDNS_OPTIONS = frozenset({3, 9, 10, 11, 12})
RCODE_BADVERS = 16

_QR, _AA, _RD, _CD = 0x8000, 0x0400, 0x0100, 0x0010


def find_opt(request: DNSRecord) -> Optional[RR]:
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return rr
    return None


def edns_version(opt: RR) -> int:
    return (opt.ttl >> 16) & 0xFF


def header(request: DNSRecord, rcode: int, *, authoritative: bool) -> DNSHeader:
    h = request.header
    bits = _QR | (h.opcode << 11) | (rcode & 0xF)
    if authoritative:
        bits |= _AA
    if h.opcode == 0:
        bits |= h.bitmap & (_RD | _CD)
    return DNSHeader(id=h.id, bitmap=bits)


def soa_record(apex: DNSLabel, serial: int, ttl: int) -> RR:
    """The SOA CoreDNS synthesises for a zone: ns.dns.<zone>, hostmaster.<zone>, minimum = TTL."""
    return RR(apex, QTYPE.SOA, ttl=min(ttl, SOA_MAX_TTL),
              rdata=SOA(DNSLabel((b"ns", b"dns") + apex.label), DNSLabel((b"hostmaster",) + apex.label),
                        (serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, ttl)))


def positive(request: DNSRecord, records: list[RR], extra: list[RR]) -> DNSRecord:
    reply = DNSRecord(header(request, RCODE.NOERROR, authoritative=True),
                      questions=[request.questions[0]], rr=records, ar=extra)
    echo_opt(reply, find_opt(request))
    return reply


def negative(request: DNSRecord, rcode: int, soa: RR) -> DNSRecord:
    """NXDOMAIN, or NODATA (NOERROR without records): authoritative, the SOA as authority."""
    reply = DNSRecord(header(request, rcode, authoritative=True), questions=[request.questions[0]], auth=[soa])
    echo_opt(reply, find_opt(request))
    return reply


def error(request: DNSRecord, rcode: int) -> DNSRecord:
    """What CoreDNS's server writes when a plugin returns an error code (SERVFAIL, REFUSED)."""
    reply = DNSRecord(header(request, rcode, authoritative=False), questions=[request.questions[0]])
    echo_opt(reply, find_opt(request))
    return reply


def server_failure(request: DNSRecord) -> DNSRecord:
    """SERVFAIL, as CoreDNS answers while it has no view of the cluster (or a handler failed)."""
    if len(request.questions) != 1:
        return header_only(request, RCODE.FORMERR)
    return error(request, RCODE.SERVFAIL)


def header_only(request: DNSRecord, rcode: int) -> DNSRecord:
    """miekg/dns's reply to a malformed request: the request's flags, no sections."""
    bits = (request.header.bitmap & ~0x7C4F & 0xFFFF) | _QR | rcode  # opcode QUERY; AA, Z, rcode cleared
    return DNSRecord(DNSHeader(id=request.header.id, bitmap=bits))


def badvers(request: DNSRecord) -> DNSRecord:
    """An EDNS version other than 0: rcode 16, split between the header (0) and the OPT (1)."""
    reply = DNSRecord(header(request, RCODE_BADVERS, authoritative=False), questions=[request.questions[0]])
    reply.add_ar(RR(DNSLabel(()), QTYPE.OPT, rclass=0, ttl=(RCODE_BADVERS >> 4) << 24, rdata=[]))
    return reply


def echo_opt(reply: DNSRecord, opt: Optional[RR]) -> None:
    if opt is None:
        return
    options = [o for o in opt.rdata if o.code in ECHOED_EDNS_OPTIONS]
    reply.add_ar(RR(DNSLabel(()), QTYPE.OPT, rclass=opt.rclass, ttl=opt.ttl & 0xFF00, rdata=options))
