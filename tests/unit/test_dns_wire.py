"""Wire encoding: truncation to the client's buffer, request screening, rotations of answers."""
from __future__ import annotations

import struct

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from netemu.dns import loadbalance, wire
from netemu.dns.answer import answer
from netemu.dns.zone import ClusterZone
from netemu.spec.models import EndpointSlice, Service

HTTP = [{"name": "http", "protocol": "TCP", "port": 80}]


def _zone(n: int = 60) -> ClusterZone:
    specs = {"big": {"clusterIP": "None", "ports": HTTP},
             "alias": {"type": "ExternalName", "externalName": "big.default.svc.cluster.local"},
             "one": {"clusterIP": "10.96.0.7", "ports": HTTP}}
    services = [Service.model_validate({"metadata": {"name": name, "namespace": "default"}, "spec": spec})
                for name, spec in specs.items()]
    sl = EndpointSlice.model_validate({
        "metadata": {"name": "big-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "big"}},
        "endpoints": [{"addresses": [f"172.16.{i // 200}.{i % 200 + 1}"]} for i in range(n)], "ports": HTTP})
    return ClusterZone.build(services, [sl], [], serial=1)


def _reply(qname: str, qtype: str = "A", edns: int = 0, n: int = 60) -> tuple[DNSRecord, DNSRecord]:
    request = DNSRecord.question(qname, qtype)
    if edns:
        request.add_ar(EDNS0(udp_len=edns))
    return request, answer(_zone(n), request)


def _texts(rrs) -> list[str]:
    return [str(rr) for rr in rrs if rr.rtype != QTYPE.OPT]


def test_a_reply_that_fits_is_packed_as_dnslib_packs_it():
    _, reply = _reply("big.default.svc.cluster.local", n=5)
    assert wire.encode(reply, 512) == reply.pack()


def test_truncation_keeps_a_prefix_of_the_records_and_sets_tc():
    _, reply = _reply("big.default.svc.cluster.local")
    full = reply.pack()
    assert len(full) > 512
    data = wire.encode(reply, 512)
    cut = DNSRecord.parse(data)
    assert len(data) <= 512 and cut.header.tc == 1
    assert 0 < len(cut.rr) < len(reply.rr) and _texts(cut.rr) == _texts(reply.rr[:len(cut.rr)])
    assert wire.encode(reply, len(full)) == full  # an exact fit is not truncated


def test_truncation_keeps_the_opt_record_and_drops_the_additional_section_first():
    _, reply = _reply("_http._tcp.big.default.svc.cluster.local", "SRV", edns=1232)
    data = wire.encode(reply, 1232)
    cut = DNSRecord.parse(data)
    assert len(data) <= 1232 and cut.header.tc == 1
    assert [rr.rtype for rr in cut.ar][-1] == QTYPE.OPT
    assert len(cut.rr) == len(reply.rr) or not [rr for rr in cut.ar if rr.rtype != QTYPE.OPT]


def test_negative_replies_are_never_truncated():
    _, reply = _reply("nosuch.default.svc.cluster.local")
    cut = DNSRecord.parse(wire.encode(reply, 512))
    assert cut.header.tc == 0 and RCODE[cut.header.rcode] == "NXDOMAIN" and len(cut.auth) == 1


def test_size_limit():
    request = DNSRecord.question("x.cluster.local")
    assert wire.size_limit(request, tcp=False) == 512
    assert wire.size_limit(request, tcp=True) == 65535
    request.add_ar(EDNS0(udp_len=4096))
    assert wire.size_limit(request, tcp=False) == 4096
    small = DNSRecord.question("x.cluster.local")
    small.add_ar(EDNS0(udp_len=100))
    assert wire.size_limit(small, tcp=False) == 512  # RFC 6891: less than 512 means 512


# ----------------------------------------------------------------------------- screening
def _raw(qr=0, opcode=0, qd=1, an=0, ns=0, ar=0) -> bytes:
    bits = (qr << 15) | (opcode << 11) | 0x0100
    return struct.pack("!HHHHHH", 77, bits, qd, an, ns, ar) + b"\x00\x00\x01\x00\x01"


@pytest.mark.parametrize("data,rcode", [
    (_raw(), None),
    (b"\x00" * 11, "ignore"),
    (_raw(qr=1), "ignore"),
    (_raw(opcode=5), "NOTIMP"),
    (_raw(qd=0), "FORMERR"),
    (_raw(qd=2), "FORMERR"),
    (_raw(an=2), "FORMERR"),
    (_raw(ar=3), "FORMERR"),
])
def test_screen(data, rcode):
    verdict = wire.screen(data)
    if rcode is None:
        assert verdict is None
    elif rcode == "ignore":
        assert verdict == wire.IGNORE
    else:
        ident, bits, qd, an, ns, ar = struct.unpack("!HHHHHH", verdict)
        assert ident == 77 and bits & 0x8000 and (qd, an, ns, ar) == (0, 0, 0, 0)
        assert RCODE[bits & 0xF] == rcode and bits & 0x0100  # RD kept
        assert (bits >> 11) & 0xF == (5 if rcode == "NOTIMP" else 0)


# ----------------------------------------------------------------------------- rotations
def _first_addresses(variants: list[bytes]) -> list[str]:
    return [str([rr for rr in DNSRecord.parse(v).rr if rr.rtype == QTYPE.A][0].rdata) for v in variants]


def test_each_address_comes_first_once():
    _, reply = _reply("big.default.svc.cluster.local", n=5)
    variants = loadbalance.rotations(reply, wire.encode_with_layout(reply, 512))
    assert len(variants) == 5
    assert _first_addresses(variants) == [f"172.16.0.{i}" for i in (1, 2, 3, 4, 5)]
    sets = {tuple(sorted(_texts(DNSRecord.parse(v).rr))) for v in variants}
    assert len(sets) == 1  # same records, other order


def test_cname_stays_in_front_of_rotated_addresses():
    _, reply = _reply("alias.default.svc.cluster.local", n=3)
    variants = loadbalance.rotations(reply, wire.encode_with_layout(reply, 512))
    assert len(variants) == 3
    for v in variants:
        assert [QTYPE[rr.rtype] for rr in DNSRecord.parse(v).rr] == ["CNAME", "A", "A", "A"]
    assert len(set(_first_addresses(variants))) == 3


def test_nothing_to_rotate():
    for qname, qtype in (("one.default.svc.cluster.local", "A"), ("_http._tcp.big.default.svc.cluster.local", "SRV"),
                         ("nosuch.default.svc.cluster.local", "A")):
        _, reply = _reply(qname, qtype, n=5)
        encoded = wire.encode_with_layout(reply, 4096)
        assert loadbalance.rotations(reply, encoded) == [encoded.data]


def test_truncated_replies_rotate_what_was_kept():
    _, reply = _reply("big.default.svc.cluster.local")
    encoded = wire.encode_with_layout(reply, 512)
    variants = loadbalance.rotations(reply, encoded)
    kept = len(DNSRecord.parse(encoded.data).rr)
    assert len(variants) == min(kept, loadbalance.MAX_VARIANTS)
    assert all(len(v) == len(encoded.data) and DNSRecord.parse(v).header.tc == 1 for v in variants)
