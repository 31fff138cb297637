"""kubeadm's Corefile has ``loadbalance``: the order of address records changes per reply, so
clients that take the first address spread over a headless service's endpoints.

CoreDNS shuffles at random per reply. Replies here are encoded once and cached, so instead a few
rotations of each encoded reply are prepared and served in turn: every address comes first
equally often. Rotation works on the bytes: an address record whose owner name is a compression
pointer has a fixed size and nothing else points into it, so records can trade places. Only the
answer section turns (CoreDNS also shuffles additional records; no client relies on their order).
"""
from __future__ import annotations

from dnslib import QTYPE, DNSRecord

from netemu.dns.wire import Encoded

MAX_VARIANTS = 16
_ADDRESS = (QTYPE.A, QTYPE.AAAA)


def rotations(reply: DNSRecord, encoded: Encoded, limit: int = MAX_VARIANTS) -> list[bytes]:
    """The encoded reply's rotations (just the reply when there is nothing to rotate). Like
    CoreDNS, only successful replies are touched; CNAMEs stay in front of the addresses."""
    data, spans = encoded.data, encoded.answers
    if reply.header.rcode != 0 or len(spans) < 2:
        return [data]
    # the trailing run of address records (after any CNAMEs) among those kept
    types = [rr.rtype for rr in reply.rr[:len(spans)]]
    first = len(types)
    while first > 0 and types[first - 1] in _ADDRESS:
        first -= 1
    run = spans[first:]
    if len(run) < 2 or not _movable(data, run):
        return [data]
    start, end = run[0][0], run[-1][1]
    chunks = [data[a:b] for a, b in run]
    head, tail = data[:start], data[end:]
    return [head + b"".join(chunks[k:] + chunks[:k]) + tail for k in range(min(len(chunks), limit))]


def _movable(data: bytes, run: list[tuple[int, int]]) -> bool:
    """All of one size, each owner a compression pointer (two bytes, top bits 11)."""
    size = run[0][1] - run[0][0]
    return all(b - a == size and data[a] & 0xC0 == 0xC0 for a, b in run)
