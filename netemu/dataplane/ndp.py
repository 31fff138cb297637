"""IPv6 Neighbor Discovery frames for MetalLB's layer-2 speaker (RFC 4861): pure functions, no sockets.

MetalLB's speaker (internal/layer2/ndp.go, announcer.go) does for an IPv6 LoadBalancer IP what its
ARP responder does for an IPv4 one:

- it joins the solicited-node multicast group of every announced address (ff02::1:ffXX:XXXX, the low
  24 bits of the address), where Neighbor Solicitations for it are sent;
- a Neighbor Solicitation whose target is an announced address and which carries the asker's source
  link-layer address option gets a Neighbor Advertisement: Solicited set, Override clear, Router
  clear, target link-layer address option = the interface's MAC, sent to the solicitation's source,
  from the interface's link-local address; any other solicitation (another target, no source
  link-layer option, as in duplicate address detection) is ignored;
- on gaining an address: unsolicited advertisements to all-nodes (ff02::1), Override set,
  Solicited clear, on the gratuitous-ARP schedule (every 1.1 s for 5 s).

Here the frames are whole Ethernet frames, sent and read on a raw packet socket (speaker.py); the
kernel-side pieces (sockets, group membership, filters attached) live there. This module builds and
checks them, and gives the classic BPF program that lets only Neighbor Solicitations through to
that socket (every other IPv6 packet of the node would otherwise wake the speaker).
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Optional

ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
NDP_HOP_LIMIT = 255  # RFC 4861: sent with 255, and a receiver drops anything else (not forwarded)
ICMPV6_NS = 135
ICMPV6_NA = 136
OPT_SOURCE_LLADDR = 1
OPT_TARGET_LLADDR = 2
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80, 0x40, 0x20  # flag bits in the NA's first byte after the checksum

ALL_NODES = ipaddress.IPv6Address("ff02::1").packed
_SOLICITED_PREFIX = ipaddress.IPv6Address("ff02::1:ff00:0").packed[:13]  # ff02::1:ff00:0/104
UNSPECIFIED = b"\x00" * 16


# --------------------------------------------------------------------------- addresses
def solicited_node(ip: bytes) -> bytes:
    """The solicited-node multicast address of a (packed) IPv6 address: ff02::1:ff + its low 24 bits."""
    return _SOLICITED_PREFIX + ip[13:16]


def multicast_mac(group: bytes) -> bytes:
    """The Ethernet address an IPv6 multicast group maps to: 33:33 + the group's low 32 bits (RFC 2464)."""
    return b"\x33\x33" + group[12:16]


def is_multicast(ip: bytes) -> bool:
    return ip[0] == 0xFF


def link_local_from_mac(mac: bytes) -> bytes:
    """fe80::/64 with the modified EUI-64 of the MAC (what the kernel gives eth0 by default)."""
    eui = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:6]
    return bytes.fromhex("fe80000000000000") + eui


# --------------------------------------------------------------------------- checksum
def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def icmpv6_checksum(src: bytes, dst: bytes, message: bytes) -> int:
    """RFC 4443 2.3: one's complement sum over the pseudo-header (source, destination, upper-layer
    length, next header 58) and the ICMPv6 message with its checksum field as it is (zero to compute)."""
    pseudo = src + dst + struct.pack("!IxxxB", len(message), IPPROTO_ICMPV6)
    total = _sum16(pseudo) + _sum16(message)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def checksum_ok(src: bytes, dst: bytes, message: bytes) -> bool:
    """A received message (checksum field filled in) sums to 0xffff, i.e. computes to 0."""
    return icmpv6_checksum(src, dst, message) == 0


# --------------------------------------------------------------------------- building
def _frame(src_mac: bytes, dst_mac: bytes, src_ip: bytes, dst_ip: bytes, body: bytes) -> bytes:
    """Ethernet + IPv6 (hop limit 255, no extension headers) + the ICMPv6 message, checksum filled in."""
    csum = icmpv6_checksum(src_ip, dst_ip, body)
    body = body[:2] + struct.pack("!H", csum) + body[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), IPPROTO_ICMPV6, NDP_HOP_LIMIT) + src_ip + dst_ip
    return dst_mac + src_mac + struct.pack("!H", ETH_P_IPV6) + ip6 + body


def _lladdr_option(kind: int, mac: bytes) -> bytes:
    return struct.pack("!BB", kind, 1) + mac  # length in units of 8 octets: 2 + 6 = 8


def neighbor_advertisement(src_mac: bytes, dst_mac: bytes, src_ip: bytes, dst_ip: bytes, target: bytes, *,
                           solicited: bool, override: bool, router: bool = False,
                           target_mac: Optional[bytes] = None) -> bytes:
    """A Neighbor Advertisement for ``target`` with the target link-layer address option (default src_mac)."""
    flags = (NA_ROUTER if router else 0) | (NA_SOLICITED if solicited else 0) | (NA_OVERRIDE if override else 0)
    body = (struct.pack("!BBHB3x", ICMPV6_NA, 0, 0, flags) + target
            + _lladdr_option(OPT_TARGET_LLADDR, target_mac or src_mac))
    return _frame(src_mac, dst_mac, src_ip, dst_ip, body)


def solicited_reply(mac: bytes, src_ip: bytes, ns: "NeighborSolicitation") -> bytes:
    """MetalLB's answer to a solicitation for an announced address: Solicited, not Override, not Router,
    to the asker's address and link-layer address (its source link-layer option)."""
    assert ns.source_lladdr is not None
    return neighbor_advertisement(mac, ns.source_lladdr, src_ip, ns.src, ns.target, solicited=True, override=False)


def unsolicited_advertisement(mac: bytes, src_ip: bytes, target: bytes) -> bytes:
    """MetalLB's "gratuitous" NA on gaining ``target``: to all-nodes, Override set, Solicited clear."""
    return neighbor_advertisement(mac, multicast_mac(ALL_NODES), src_ip, ALL_NODES, target,
                                  solicited=False, override=True)


def neighbor_solicitation(src_mac: bytes, src_ip: bytes, target: bytes, *, dst_ip: Optional[bytes] = None,
                          dst_mac: Optional[bytes] = None, source_lladdr: Optional[bytes] = b"") -> bytes:
    """A Neighbor Solicitation (what a client sends; the tests and the benchmark use it). Default: to the
    target's solicited-node group, with the source link-layer option (src_mac); source_lladdr=None leaves
    the option out (as duplicate address detection does, from ::)."""
    dst_ip = dst_ip or solicited_node(target)
    dst_mac = dst_mac or multicast_mac(dst_ip)
    body = struct.pack("!BBH4x", ICMPV6_NS, 0, 0) + target
    if source_lladdr is not None:
        body += _lladdr_option(OPT_SOURCE_LLADDR, source_lladdr or src_mac)
    return _frame(src_mac, dst_mac, src_ip, dst_ip, body)


# --------------------------------------------------------------------------- parsing
@dataclass
class NeighborSolicitation:
    eth_dst: bytes
    eth_src: bytes
    src: bytes  # IPv6 source (:: in duplicate address detection)
    dst: bytes  # IPv6 destination: the target's solicited-node group, or the target itself (unicast probe)
    target: bytes
    source_lladdr: Optional[bytes]  # the source link-layer address option, if any


@dataclass
class NeighborAdvertisement:
    eth_dst: bytes
    eth_src: bytes
    src: bytes
    dst: bytes
    target: bytes
    router: bool
    solicited: bool
    override: bool
    target_lladdr: Optional[bytes]
    hop_limit: int = NDP_HOP_LIMIT
    options: list = field(default_factory=list)


def _icmpv6(frame: bytes, icmp_type: int, min_len: int) -> Optional[tuple[bytes, bytes, bytes, int]]:
    """(source, destination, ICMPv6 message, hop limit) of a valid NDP frame of this type, else None.
    RFC 4861 7.1: hop limit 255, code 0, long enough, checksum right."""
    if len(frame) < 14 + 40 + min_len or frame[12:14] != b"\x86\xdd":
        return None
    ver_tc_fl, plen, nxt, hlim = struct.unpack("!IHBB", frame[14:22])
    if ver_tc_fl >> 28 != 6 or nxt != IPPROTO_ICMPV6 or hlim != NDP_HOP_LIMIT:
        return None
    if plen < min_len or 54 + plen > len(frame):  # frames may carry Ethernet padding after the payload
        return None
    src, dst = frame[22:38], frame[38:54]
    msg = frame[54:54 + plen]
    if msg[0] != icmp_type or msg[1] != 0 or not checksum_ok(src, dst, msg):
        return None
    return src, dst, msg, hlim


def parse_options(data: bytes) -> Optional[list[tuple[int, bytes]]]:
    """NDP options as (type, value) pairs; None when one is malformed (length 0 or past the end),
    which makes the whole message invalid (RFC 4861 7.1.1)."""
    out, i = [], 0
    while i < len(data):
        if i + 2 > len(data):
            return None
        kind, units = data[i], data[i + 1]
        if units == 0 or i + units * 8 > len(data):
            return None
        out.append((kind, data[i + 2:i + units * 8]))
        i += units * 8
    return out


def _lladdr(options: list[tuple[int, bytes]], kind: int) -> Optional[bytes]:
    for k, value in options:
        if k == kind and len(value) >= 6:
            return value[:6]  # Ethernet: 6 bytes, then padding to the 8-octet unit
    return None


def parse_ns(frame: bytes) -> Optional[NeighborSolicitation]:
    """A valid Neighbor Solicitation on Ethernet, or None for anything else."""
    got = _icmpv6(frame, ICMPV6_NS, 24)
    if got is None:
        return None
    src, dst, msg, _ = got
    target = msg[8:24]
    if is_multicast(target):
        return None
    options = parse_options(msg[24:])
    if options is None:
        return None
    slla = _lladdr(options, OPT_SOURCE_LLADDR)
    if src == UNSPECIFIED and (slla is not None or dst != solicited_node(target)):
        return None  # duplicate address detection goes to the solicited-node group and has no option
    return NeighborSolicitation(frame[0:6], frame[6:12], src, dst, target, slla)


def parse_na(frame: bytes) -> Optional[NeighborAdvertisement]:
    got = _icmpv6(frame, ICMPV6_NA, 24)
    if got is None:
        return None
    src, dst, msg, hlim = got
    options = parse_options(msg[24:])
    if options is None:
        return None
    flags = msg[4]
    return NeighborAdvertisement(frame[0:6], frame[6:12], src, dst, msg[8:24], bool(flags & NA_ROUTER),
                                 bool(flags & NA_SOLICITED), bool(flags & NA_OVERRIDE),
                                 _lladdr(options, OPT_TARGET_LLADDR), hlim, options)


# --------------------------------------------------------------------------- deciding
def wanted(ns: NeighborSolicitation, announced: frozenset, own_mac: bytes) -> Optional[str]:
    """Why a solicitation is not answered (None: answer it). MetalLB's reasons, plus two a packet
    socket needs that its ICMPv6 socket got from the kernel: frames for another machine, our own."""
    if ns.eth_src == own_mac:
        return "own frame"
    if ns.eth_dst != own_mac and ns.eth_dst[:2] != b"\x33\x33":
        return "for another machine"
    if ns.source_lladdr is None:
        return "no source link-layer address"  # MetalLB: dropReasonNoSourceLL (covers DAD)
    if ns.target not in announced:
        return "not announced"
    if ns.dst != ns.target and ns.dst != solicited_node(ns.target):
        return "wrong destination"
    return None


# --------------------------------------------------------------------------- socket filter
# classic BPF (linux/filter.h): load half-word/byte at absolute offset, jump if equal, return
_LDH_ABS, _LDB_ABS, _JEQ_K, _RET_K = 0x28, 0x30, 0x15, 0x06


def icmpv6_filter(icmp_type: int = ICMPV6_NS) -> bytes:
    """A socket filter (array of struct sock_filter) passing only IPv6 frames that carry ICMPv6 of this
    type right after the fixed header (as NDP messages do): offsets 12 (EtherType), 20 (next header),
    54 (ICMPv6 type) of the Ethernet frame."""
    prog = [
        (_LDH_ABS, 0, 0, 12), (_JEQ_K, 0, 5, ETH_P_IPV6),
        (_LDB_ABS, 0, 0, 20), (_JEQ_K, 0, 3, IPPROTO_ICMPV6),
        (_LDB_ABS, 0, 0, 54), (_JEQ_K, 0, 1, icmp_type),
        (_RET_K, 0, 0, 0x40000),  # accept the whole frame
        (_RET_K, 0, 0, 0),  # drop
    ]
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


# --------------------------------------------------------------------------- the interface's addresses
def parse_if_inet6(text: str, iface: str) -> list[tuple[bytes, int, int]]:
    """(address, scope, flags) of iface's IPv6 addresses from /proc/net/if_inet6."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5] == iface:
            out.append((bytes.fromhex(parts[0]), int(parts[3], 16), int(parts[4], 16)))
    return out


IFA_F_TENTATIVE, IFA_F_DADFAILED = 0x40, 0x08
SCOPE_LINK = 0x20


def source_address(addresses: list[tuple[bytes, int, int]], mac: bytes) -> bytes:
    """Where the speaker's advertisements come from: the interface's link-local address, as MetalLB's
    (ndp.Dial with ndp.LinkLocal); failing that one of its other addresses; failing that the
    EUI-64 link-local the kernel would have made from the MAC."""
    usable = [a for a in addresses if not a[2] & (IFA_F_TENTATIVE | IFA_F_DADFAILED)] or addresses
    for addr, scope, _ in usable:
        if scope == SCOPE_LINK:
            return addr
    for addr, scope, _ in usable:
        if scope == 0 and not is_multicast(addr):
            return addr
    return link_local_from_mac(mac)


__all__ = ["solicited_node", "multicast_mac", "icmpv6_checksum", "checksum_ok", "neighbor_advertisement",
           "solicited_reply", "unsolicited_advertisement", "neighbor_solicitation", "parse_ns", "parse_na",
           "parse_options", "wanted", "icmpv6_filter", "parse_if_inet6", "source_address", "link_local_from_mac",
           "NeighborSolicitation", "NeighborAdvertisement", "ETH_P_IPV6", "ICMPV6_NS", "ICMPV6_NA"]
