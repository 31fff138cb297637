"""Bytes on the wire: screening raw requests, fitting replies into the client's buffer.

Mirrors what CoreDNS's server (miekg/dns underneath) does around the plugins: requests that are
responses are dropped, odd opcodes get NOTIMP, malformed ones FORMERR; replies larger than the
client can take (512 bytes, or its EDNS0 buffer size; 64 KiB over TCP) keep as many records as
fit, in section order, with the TC bit set when any was left out.
"""
from __future__ import annotations

import struct
from typing import NamedTuple, Optional

from dnslib import QTYPE, DNSRecord
from dnslib.label import DNSBuffer

UDP_MIN_SIZE = 512
TCP_MAX_SIZE = 65535
_TC = 0x0200
_HEADER = struct.Struct("!HHHHHH")

IGNORE = b""  # screen(): send nothing back


def screen(data: bytes) -> Optional[bytes]:
    """None when the request may be parsed and answered; otherwise the reply to send
    (IGNORE: none). The checks are miekg/dns's DefaultMsgAcceptFunc."""
    if len(data) < 12:
        return IGNORE  # not even a header: answering would only help amplification
    ident, bits, qd, an, ns, ar = _HEADER.unpack_from(data)
    if bits & 0x8000:
        return IGNORE  # a response
    opcode = (bits >> 11) & 0xF
    if opcode not in (0, 4):  # QUERY, NOTIFY
        return reject(data, 4)  # NOTIMP
    if qd != 1 or an > 1 or ns > 1 or ar > 2:
        return reject(data, 1)  # FORMERR
    return None


def reject(data: bytes, rcode: int) -> bytes:
    """A header-only reply keeping the request's flags (opcode kept only for NOTIMP)."""
    ident, bits = struct.unpack_from("!HH", data)
    keep_opcode = bits & 0x7800 if rcode == 4 else 0
    bits = (bits & ~0x7C4F & 0xFFFF) | 0x8000 | keep_opcode | rcode
    return _HEADER.pack(ident, bits, 0, 0, 0, 0)


def size_limit(request: DNSRecord, tcp: bool) -> int:
    """How large a reply the client accepts: CoreDNS's request.Size()."""
    if tcp:
        return TCP_MAX_SIZE
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(UDP_MIN_SIZE, rr.rclass)
    return UDP_MIN_SIZE


class Encoded(NamedTuple):
    data: bytes
    # (start, end) in data of each answer record that was kept, in order
    answers: list[tuple[int, int]]


def encode(reply: DNSRecord, limit: int) -> bytes:
    return encode_with_layout(reply, limit).data


def encode_with_layout(reply: DNSRecord, limit: int) -> Encoded:
    """The reply's wire form fitted into ``limit`` bytes (miekg's Msg.Truncate): answer, then
    authority, then additional records are kept while they fit; the OPT record always stays;
    TC is set when anything was dropped.

    Packed once: names are compressed with pointers to earlier bytes only, so the records up
    to any boundary form a valid message by themselves."""
    opts = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    records = reply.rr + reply.auth + [rr for rr in reply.ar if rr.rtype != QTYPE.OPT]
    buf = DNSBuffer()
    buf.pack("!HHHHHH", 0, 0, 0, 0, 0, 0)
    for q in reply.questions:
        q.pack(buf)
    ends = [buf.offset]  # ends[i]: where the first i records end
    for rr in records:
        rr.pack(buf)
        ends.append(buf.offset)
    tail = DNSBuffer()
    for rr in opts:
        rr.pack(tail)  # the root name: nothing to compress against

    budget = max(limit, UDP_MIN_SIZE) - len(tail.data)
    kept = len(records)
    while ends[kept] > budget:
        kept -= 1
    counts = _section_counts(kept, len(reply.rr), len(reply.auth))
    bits = reply.header.bitmap | (_TC if kept < len(records) else 0)
    head = _HEADER.pack(reply.header.id, bits, len(reply.questions), counts[0], counts[1], counts[2] + len(opts))
    data = head + bytes(buf.data[12:ends[kept]]) + bytes(tail.data)
    return Encoded(data, [(ends[i], ends[i + 1]) for i in range(counts[0])])


def _section_counts(kept: int, answers: int, authority: int) -> tuple[int, int, int]:
    a = min(kept, answers)
    ns = min(kept - a, authority)
    return a, ns, kept - a - ns
