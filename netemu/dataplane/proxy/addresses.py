"""IP and CIDR parsing as kube-proxy does it ("sloppy": leading zeros allowed).

kube-proxy parses addresses with k8s.io/utils/net's ParseIPSloppy / ParseCIDRSloppy (Go's
pre-1.17 parser), so "10.180.00.001" is 10.180.0.1 and "203.0.113.000/025" is
203.0.113.0/25; the normalised form is what ends up in rules and in chain-name hashes.
Python's ipaddress rejects leading zeros, hence this module.
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Optional, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

IPV4 = "IPv4"
IPV6 = "IPv6"


def _sloppy_v4(text: str) -> Optional[ipaddress.IPv4Address]:
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not part.isdigit() or not part.isascii():
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = value * 256 + octet
    return ipaddress.IPv4Address(value)


@lru_cache(maxsize=65536)
def parse_ip(text: str) -> Optional[IPAddress]:
    """The address, or None when it is not one. IPv4-mapped IPv6 counts as IPv4, as in Go."""
    if not text:
        return None
    if ":" not in text:
        return _sloppy_v4(text)
    try:
        addr = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    return addr.ipv4_mapped or addr


def parse_cidr(text: str) -> Optional[IPNetwork]:
    """The network of a CIDR (host bits cleared, like Go's ParseCIDR), or None."""
    addr_text, sep, bits_text = text.partition("/")
    if not sep or not bits_text.isdigit() or not bits_text.isascii():
        return None
    addr = parse_ip(addr_text)
    if addr is None or (":" in addr_text and addr.version == 4):
        return None
    bits = int(bits_text)
    if bits > addr.max_prefixlen:
        return None
    return ipaddress.ip_network(f"{addr}/{bits}", strict=False)


def family_of(addr: Union[IPAddress, IPNetwork]) -> str:
    return IPV4 if addr.version == 4 else IPV6


def join_host_port(ip: str, port: int) -> str:
    """net.JoinHostPort: brackets around IPv6 addresses."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
