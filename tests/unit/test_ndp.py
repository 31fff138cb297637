"""MetalLB layer 2's IPv6 side: the NDP frames (netemu.dataplane.ndp) checked against scapy's, and the
speaker's NDP behaviour without root (the raw sockets replaced by socketpairs; tests/e2e/test_speaker_ndp.py
does it on real namespaces)."""
from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import time

import pytest

from netemu.dataplane import ndp
from netemu.dataplane import speaker as sp
from netemu.dataplane.speaker import NdpSocket, Speaker, SpeakerThread

scapy_all = pytest.importorskip("scapy.all")
Ether, IPv6, ICMPv6ND_NS, ICMPv6ND_NA = (scapy_all.Ether, scapy_all.IPv6, scapy_all.ICMPv6ND_NS,
                                         scapy_all.ICMPv6ND_NA)
SrcLL, DstLL = scapy_all.ICMPv6NDOptSrcLLAddr, scapy_all.ICMPv6NDOptDstLLAddr

NODE_MAC = bytes.fromhex("020000000001")
CLIENT_MAC = bytes.fromhex("020000000099")
NODE_LL = ipaddress.IPv6Address("fe80::1").packed
CLIENT = "fd00:192:168:1::1"
VIP = "fd00:192:168:1::200"
OTHER = "fd00:192:168:1::201"


def p6(a: str) -> bytes:
    return ipaddress.IPv6Address(a).packed


def mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def scapy_ns(target: str, *, src: str = CLIENT, dst: str | None = None, hlim: int = 255, slla: bool = True,
             eth_dst: str | None = None):
    dst = dst or str(ipaddress.IPv6Address(ndp.solicited_node(p6(target))))
    eth_dst = eth_dst or mac(ndp.multicast_mac(p6(dst)))
    pkt = Ether(src=mac(CLIENT_MAC), dst=eth_dst) / IPv6(src=src, dst=dst, hlim=hlim) / ICMPv6ND_NS(tgt=target)
    if slla:
        pkt = pkt / SrcLL(lladdr=mac(CLIENT_MAC))
    return bytes(pkt)


# --------------------------------------------------------------------------- addresses
def test_solicited_node_group_and_its_mac():
    assert ipaddress.IPv6Address(ndp.solicited_node(p6("fd00:10:96::12:3456"))) == ipaddress.IPv6Address(
        "ff02::1:ff12:3456")
    assert ndp.solicited_node(p6(VIP)) == p6("ff02::1:ff00:200")
    assert ndp.multicast_mac(p6("ff02::1:ff00:200")) == bytes.fromhex("3333ff000200")
    assert ndp.multicast_mac(ndp.ALL_NODES) == bytes.fromhex("333300000001")


def test_link_local_from_mac_is_the_kernels_eui64():
    assert ipaddress.IPv6Address(ndp.link_local_from_mac(bytes.fromhex("0200c0a80165"))) == ipaddress.IPv6Address(
        "fe80::c0ff:fea8:165")
    assert ndp.link_local_from_mac(NODE_MAC) == p6("fe80::ff:fe00:1")


# --------------------------------------------------------------------------- checksum and building
def test_checksum_matches_scapy_and_verifies():
    frame = scapy_ns(VIP)
    msg = frame[54:]
    assert ndp.checksum_ok(p6(CLIENT), p6("ff02::1:ff00:200"), msg)
    zeroed = msg[:2] + b"\x00\x00" + msg[4:]
    assert ndp.icmpv6_checksum(p6(CLIENT), p6("ff02::1:ff00:200"), zeroed) == struct.unpack("!H", msg[2:4])[0]
    # the pseudo-header counts: another destination or a flipped bit fails it
    assert not ndp.checksum_ok(p6(CLIENT), p6(VIP), msg)
    assert not ndp.checksum_ok(p6(CLIENT), p6("ff02::1:ff00:200"), msg[:-1] + bytes([msg[-1] ^ 1]))
    # an odd length is padded with a zero byte (RFC 1071)
    assert ndp.icmpv6_checksum(b"\x00" * 16, b"\x00" * 16, b"\x01") == ~(0x0100 + 1 + 58) & 0xFFFF


def test_our_solicitation_is_scapys_byte_for_byte():
    assert ndp.neighbor_solicitation(CLIENT_MAC, p6(CLIENT), p6(VIP)) == scapy_ns(VIP)
    assert ndp.neighbor_solicitation(CLIENT_MAC, p6(CLIENT), p6(VIP), source_lladdr=None) == scapy_ns(VIP, slla=False)
    uni = ndp.neighbor_solicitation(CLIENT_MAC, p6(CLIENT), p6(VIP), dst_ip=p6(VIP), dst_mac=NODE_MAC)
    assert uni == scapy_ns(VIP, dst=VIP, eth_dst=mac(NODE_MAC))


def test_solicited_reply_is_metallbs_advertisement():
    ns = ndp.parse_ns(scapy_ns(VIP))
    frame = ndp.solicited_reply(NODE_MAC, NODE_LL, ns)
    expected = (Ether(src=mac(NODE_MAC), dst=mac(CLIENT_MAC)) / IPv6(src="fe80::1", dst=CLIENT, hlim=255)
                / ICMPv6ND_NA(tgt=VIP, R=0, S=1, O=0) / DstLL(lladdr=mac(NODE_MAC)))
    assert frame == bytes(expected)
    parsed = Ether(frame)
    assert parsed[ICMPv6ND_NA].S == 1 and parsed[ICMPv6ND_NA].O == 0 and parsed[ICMPv6ND_NA].R == 0
    assert parsed[DstLL].lladdr == mac(NODE_MAC)
    # scapy's own checksum check: rebuilding with the field cleared gives the same value
    na = parsed[ICMPv6ND_NA]
    cks = na.cksum
    del na.cksum
    assert Ether(bytes(parsed))[ICMPv6ND_NA].cksum == cks
    got = ndp.parse_na(frame)
    assert (got.target, got.solicited, got.override, got.router, got.target_lladdr, got.dst) == (
        p6(VIP), True, False, False, NODE_MAC, p6(CLIENT))


def test_unsolicited_advertisement_goes_to_all_nodes_with_override():
    frame = ndp.unsolicited_advertisement(NODE_MAC, NODE_LL, p6(VIP))
    expected = (Ether(src=mac(NODE_MAC), dst="33:33:00:00:00:01") / IPv6(src="fe80::1", dst="ff02::1", hlim=255)
                / ICMPv6ND_NA(tgt=VIP, R=0, S=0, O=1) / DstLL(lladdr=mac(NODE_MAC)))
    assert frame == bytes(expected)
    got = ndp.parse_na(frame)
    assert got.override and not got.solicited and not got.router and got.dst == ndp.ALL_NODES
    assert len(frame) == 14 + 40 + 32


# --------------------------------------------------------------------------- parsing
def test_parse_ns_reads_the_source_link_layer_option():
    ns = ndp.parse_ns(scapy_ns(VIP))
    assert ns.target == p6(VIP) and ns.src == p6(CLIENT) and ns.dst == p6("ff02::1:ff00:200")
    assert ns.source_lladdr == CLIENT_MAC and ns.eth_src == CLIENT_MAC
    assert ns.eth_dst == bytes.fromhex("3333ff000200")
    # other options before it, and Ethernet padding after the payload, are fine
    pkt = (Ether(src=mac(CLIENT_MAC), dst="33:33:ff:00:02:00") / IPv6(src=CLIENT, dst="ff02::1:ff00:200")
           / ICMPv6ND_NS(tgt=VIP) / scapy_all.ICMPv6NDOptMTU(mtu=1500) / SrcLL(lladdr="02:00:00:00:00:42"))
    ns = ndp.parse_ns(bytes(pkt) + b"\x00" * 8)
    assert ns.source_lladdr == bytes.fromhex("020000000042")
    assert ndp.parse_ns(scapy_ns(VIP, slla=False)).source_lladdr is None


def test_parse_ns_rejects_invalid_messages():
    good = scapy_ns(VIP)
    assert ndp.parse_ns(scapy_ns(VIP, hlim=254)) is None  # forwarded: not from the link
    bad_sum = bytearray(good)
    bad_sum[56] ^= 0xFF
    assert ndp.parse_ns(bytes(bad_sum)) is None
    assert ndp.parse_ns(scapy_ns("ff02::1")) is None  # multicast target
    zero_opt = bytes(Ether(src=mac(CLIENT_MAC)) / IPv6(src=CLIENT, dst="ff02::1:ff00:200")
                     / ICMPv6ND_NS(tgt=VIP) / scapy_all.Raw(b"\x01\x00" + b"\x00" * 6))
    assert ndp.parse_ns(zero_opt) is None  # an option of length 0 invalidates the message
    assert ndp.parse_ns(good[:60]) is None  # cut short
    # duplicate address detection: from ::, to the solicited-node group, no option: valid, no lladdr
    dad = scapy_ns(VIP, src="::", slla=False)
    assert ndp.parse_ns(dad).source_lladdr is None
    assert ndp.parse_ns(scapy_ns(VIP, src="::")) is None  # from :: with a source option: invalid
    # not a solicitation at all
    assert ndp.parse_ns(ndp.unsolicited_advertisement(NODE_MAC, NODE_LL, p6(VIP))) is None
    assert ndp.parse_ns(sp.arp_frame(1, CLIENT_MAC, CLIENT_MAC, b"\x01" * 4, b"\x00" * 6, b"\x02" * 4,
                                     sp.BROADCAST)) is None
    echo = bytes(Ether() / IPv6(src=CLIENT, dst=VIP, hlim=255) / scapy_all.ICMPv6EchoRequest())
    assert ndp.parse_ns(echo) is None


def test_parse_options():
    assert ndp.parse_options(b"") == []
    assert ndp.parse_options(b"\x01\x01" + CLIENT_MAC + b"\x05\x01" + b"\x00" * 6) == [(1, CLIENT_MAC), (5, b"\x00" * 6)]
    assert ndp.parse_options(b"\x01\x02" + CLIENT_MAC) is None  # runs past the end
    assert ndp.parse_options(b"\x01") is None


# --------------------------------------------------------------------------- deciding
def test_only_announced_targets_are_answered():
    announced = frozenset({p6(VIP), bytes([192, 168, 1, 11])})
    ns = lambda target, **kw: ndp.parse_ns(scapy_ns(target, **kw))  # noqa: E731
    assert ndp.wanted(ns(VIP), announced, NODE_MAC) is None
    assert ndp.wanted(ns(VIP, dst=VIP, eth_dst=mac(NODE_MAC)), announced, NODE_MAC) is None  # unicast probe
    assert ndp.wanted(ns(OTHER), announced, NODE_MAC) == "not announced"
    assert ndp.wanted(ns(VIP, slla=False), announced, NODE_MAC) == "no source link-layer address"
    assert ndp.wanted(ns(VIP, src="::", slla=False), announced, NODE_MAC) == "no source link-layer address"
    assert ndp.wanted(ns(VIP, dst=VIP, eth_dst="02:aa:aa:aa:aa:aa"), announced, NODE_MAC) == "for another machine"
    assert ndp.wanted(ns(VIP, dst=OTHER, eth_dst=mac(NODE_MAC)), announced, NODE_MAC) == "wrong destination"
    own = ndp.parse_ns(ndp.neighbor_solicitation(NODE_MAC, NODE_LL, p6(VIP)))
    assert ndp.wanted(own, announced, NODE_MAC) == "own frame"


# --------------------------------------------------------------------------- socket filter
def run_bpf(program: bytes, frame: bytes) -> int:
    """A classic BPF interpreter for the instructions icmpv6_filter uses (loads past the end drop)."""
    ins = [struct.unpack("HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = ins[pc]
        if code == 0x28:
            if k + 2 > len(frame):
                return 0
            acc = int.from_bytes(frame[k:k + 2], "big")
        elif code == 0x30:
            if k + 1 > len(frame):
                return 0
            acc = frame[k]
        elif code == 0x15:
            pc += jt if acc == k else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1


def test_socket_filter_passes_solicitations_only():
    prog = ndp.icmpv6_filter()
    assert len(prog) == 8 * 8
    assert run_bpf(prog, scapy_ns(VIP)) > 0
    assert run_bpf(prog, scapy_ns(VIP, dst=VIP, eth_dst=mac(NODE_MAC))) > 0
    assert run_bpf(prog, ndp.unsolicited_advertisement(NODE_MAC, NODE_LL, p6(VIP))) == 0
    assert run_bpf(prog, bytes(Ether() / IPv6(src=CLIENT, dst=VIP) / scapy_all.TCP(dport=80))) == 0
    assert run_bpf(prog, bytes(Ether() / IPv6(src=CLIENT, dst=VIP) / scapy_all.ICMPv6EchoRequest())) == 0
    assert run_bpf(prog, sp.gratuitous_frames(NODE_MAC, b"\x01\x02\x03\x04")[0]) == 0
    assert run_bpf(prog, b"\x00" * 20) == 0
    assert run_bpf(ndp.icmpv6_filter(ndp.ICMPV6_NA), ndp.unsolicited_advertisement(NODE_MAC, NODE_LL, p6(VIP))) > 0


# --------------------------------------------------------------------------- the interface's addresses
IF_INET6 = """\
fd000192016800010000000000000101 02 40 00 80     eth0
fe800000000000000000000000000001 02 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fe8000000000000000000000000000aa 03 40 20 80     cni0
"""


def test_source_address_is_the_link_local_one():
    addrs = ndp.parse_if_inet6(IF_INET6, "eth0")
    assert [ipaddress.IPv6Address(a).compressed for a, _, _ in addrs] == ["fd00:192:168:1::101", "fe80::1"]
    assert ndp.source_address(addrs, NODE_MAC) == p6("fe80::1")
    assert ndp.source_address(addrs[:1], NODE_MAC) == p6("fd00:192:168:1::101")  # no link-local: a global one
    assert ndp.source_address([], NODE_MAC) == ndp.link_local_from_mac(NODE_MAC)
    tentative = [(p6("fe80::2"), 0x20, 0x40), (p6("fe80::3"), 0x20, 0x80)]
    assert ndp.source_address(tentative, NODE_MAC) == p6("fe80::3")


# --------------------------------------------------------------------------- the speaker, with fake sockets
class FakeSock:
    """The speaker's end of a datagram socketpair, answering recvfrom like a packet socket."""

    def __init__(self, sock: socket.socket, proto: int):
        self.sock, self.proto = sock, proto

    def recvfrom(self, n: int):
        data = self.sock.recv(n)
        return data, ("eth0", self.proto, sp.PACKET_OUTGOING if data[6:12] == NODE_MAC else 0, 1, CLIENT_MAC)

    def send(self, data: bytes) -> int:
        return self.sock.send(data)

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def close(self) -> None:
        self.sock.close()


class FakeMember:
    def __init__(self):
        self.calls: list[tuple[str, str, int]] = []
        self.closed = False

    def setsockopt(self, level, opt, value):
        assert level == socket.IPPROTO_IPV6 and len(value) == 20
        what = "join" if opt == socket.IPV6_JOIN_GROUP else "leave"
        self.calls.append((what, str(ipaddress.IPv6Address(value[:16])), struct.unpack("@I", value[16:])[0]))

    def close(self):
        self.closed = True


@pytest.fixture
def wires(monkeypatch):
    """(ARP peer, NDP peer, the member socket) of a speaker whose node has IPv6."""
    arp_mine, arp_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ndp_mine, ndp_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (arp_mine, ndp_mine):
        s.setblocking(False)
    for s in (arp_theirs, ndp_theirs):
        s.settimeout(0.5)
    member = FakeMember()
    opened = []
    monkeypatch.setattr(sp, "open_arp_socket", lambda netns, iface: (FakeSock(arp_mine, sp.ETH_P_ARP), NODE_MAC))

    def open_ndp(netns, iface):
        opened.append(netns)
        return NdpSocket(FakeSock(ndp_mine, ndp.ETH_P_IPV6), member, NODE_MAC, 7, NODE_LL)

    monkeypatch.setattr(sp, "open_ndp_socket", open_ndp)
    yield arp_theirs, ndp_theirs, member, opened
    arp_theirs.close()
    ndp_theirs.close()


def frames(peer: socket.socket, seconds: float) -> list[tuple[float, bytes]]:
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        peer.settimeout(max(0.001, end - time.monotonic()))
        try:
            frame = peer.recv(2048)
        except (socket.timeout, BlockingIOError):
            break
        out.append((time.monotonic(), frame))
    return out


def test_speaker_answers_solicitations_for_announced_addresses_only(wires):
    arp_peer, ndp_peer, member, opened = wires
    with SpeakerThread() as loop:
        s = Speaker("w1-k8s", "ne-x_w1-k8s", loop=loop, garp_duration=0)
        assert not s.ndp and opened == []  # nothing of IPv6 before an IPv6 address
        s.set_announced({VIP, "192.168.1.11"})
        assert s.ndp and opened == ["ne-x_w1-k8s"]
        assert s.announced == frozenset({VIP, "192.168.1.11"})
        assert [ndp.parse_na(f).target for _, f in frames(ndp_peer, 0.1)] == [p6(VIP)]  # the first round
        assert len(frames(arp_peer, 0.1)) == 2  # the IPv4 address's gratuitous request + reply
        ndp_peer.send(scapy_ns(VIP))
        na = ndp.parse_na(ndp_peer.recv(2048))
        assert na is not None and na.eth_dst == CLIENT_MAC and na.eth_src == NODE_MAC
        assert na.src == NODE_LL and na.dst == p6(CLIENT) and na.target == p6(VIP)
        assert (na.solicited, na.override, na.router, na.target_lladdr) == (True, False, False, NODE_MAC)
        ndp_peer.send(scapy_ns(OTHER))  # not ours
        ndp_peer.send(scapy_ns(VIP, slla=False))  # no source link-layer option (MetalLB drops it)
        ndp_peer.send(scapy_ns(VIP, src="::", slla=False))  # someone's DAD for it
        ndp_peer.send(scapy_ns(VIP, hlim=64))  # invalid
        ndp_peer.send(scapy_ns(VIP, dst=VIP, eth_dst="02:aa:aa:aa:aa:aa"))  # unicast to another machine
        ndp_peer.send(scapy_ns(VIP, dst=VIP, eth_dst=mac(NODE_MAC)))  # unicast probe to us: answered
        got = frames(ndp_peer, 0.2)
        assert len(got) == 1 and ndp.parse_na(got[0][1]).solicited
        assert s.stats.replies == 2 and s.stats.requests == 6 and s.stats.ignored == 5, s.stats
        s.set_announced({"192.168.1.11"})
        ndp_peer.send(scapy_ns(VIP))
        assert frames(ndp_peer, 0.2) == []
        assert s.announced == frozenset({"192.168.1.11"})
        s.close()
    assert member.closed


def test_unsolicited_advertisements_on_the_gratuitous_schedule(wires):
    _, ndp_peer, member, _ = wires
    with SpeakerThread() as loop:
        s = Speaker("w1-k8s", "ns", loop=loop, garp_interval=0.1, garp_duration=0.45)
        t0 = time.monotonic()
        s.set_announced({VIP})
        got = [(t - t0, ndp.parse_na(f)) for t, f in frames(ndp_peer, 0.7)]
        assert len(got) == 5, got  # rounds at 0, 0.1 .. 0.4: one NA each
        for _, na in got:
            assert na.override and not na.solicited and na.dst == ndp.ALL_NODES and na.target == p6(VIP)
            assert na.eth_dst == bytes.fromhex("333300000001") and na.target_lladdr == NODE_MAC
        times = [t for t, _ in got]
        assert times[0] < 0.05 and all(0.05 < b - a < 0.2 for a, b in zip(times, times[1:])), times
        assert s.stats.gratuitous == 5
        s.set_announced({VIP})  # kept: nothing more
        assert frames(ndp_peer, 0.15) == []
        s.set_announced({OTHER})
        s.set_announced(set())  # lost at once: only its first round went out
        assert [ndp.parse_na(f).target for _, f in frames(ndp_peer, 0.5)] == [p6(OTHER)]
        s.close()


def test_solicited_node_groups_are_joined_and_left_refcounted(wires):
    _, _, member, _ = wires
    with SpeakerThread() as loop:
        s = Speaker("w1-k8s", "ns", loop=loop, garp_duration=0)
        same_group = "fd00:10:96::1:0:200"  # same low 24 bits as VIP: the same group
        s.set_announced({VIP, same_group})
        assert member.calls == [("join", "ff02::1:ff00:200", 7)]
        s.set_announced({same_group, OTHER})
        assert member.calls[1:] == [("join", "ff02::1:ff00:201", 7)]
        s.set_announced(set())
        assert sorted(member.calls[2:]) == [("leave", "ff02::1:ff00:200", 7), ("leave", "ff02::1:ff00:201", 7)]
        s.close()


def test_ipv4_only_node_skips_ipv6_with_one_warning(monkeypatch, caplog):
    arp_mine, arp_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    arp_mine.setblocking(False)
    monkeypatch.setattr(sp, "open_arp_socket", lambda netns, iface: (FakeSock(arp_mine, sp.ETH_P_ARP), NODE_MAC))

    def off(netns, iface):
        raise sp.Ipv6Off(f"IPv6 is off on {iface}")

    monkeypatch.setattr(sp, "open_ndp_socket", off)
    caplog.set_level(logging.WARNING, logger="netemu.speaker")
    with SpeakerThread() as loop:
        s = Speaker("w1-k8s", "ns", loop=loop, garp_duration=0)
        for _ in range(3):  # the daemon offers it again every pass
            s.set_announced({VIP, "192.168.1.11"})
        assert s.announced == frozenset({"192.168.1.11"}) and not s.ndp
        warnings = [r.getMessage() for r in caplog.records if "is IPv6: not announced" in r.getMessage()]
        assert warnings == [f"w1-k8s: {VIP} is IPv6: not announced (no NDP responder: IPv6 is off on eth0)"]
        s.close()
    arp_theirs.close()


def test_speakers_sync_compares_ipv6_in_one_spelling(wires):
    from netemu.dataplane.speaker import Speakers

    _, ndp_peer, _, _ = wires
    sps = Speakers({"n1": "ns1"})
    try:
        calls = []
        real = sps.speakers["n1"].set_announced
        sps.speakers["n1"].set_announced = lambda ips: (calls.append(set(ips)), real(ips))
        sps.sync({"n1": {"fd00:192:168:1:0:0:0:200"}})
        sps.sync({"n1": {"FD00:192:168:1::200"}})
        assert calls == [{VIP}]
        assert sps.stats()["n1"]["announced"] == [VIP]
    finally:
        sps.close()
