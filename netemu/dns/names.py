"""Name and address helpers that follow the parsing rules CoreDNS inherits from Go.

CoreDNS turns strings into addresses with Go's ``net.ParseIP`` and prints them with
``net.IP.String``; the answers depend on both (an IPv4-mapped IPv6 address is an A record,
a reverse name with leftover nibbles still parses), so these helpers reproduce them.
"""
from __future__ import annotations

import ipaddress
from typing import Optional, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def parse_ip(text: str) -> Optional[IPAddress]:
    """Go's net.ParseIP: dotted IPv4 (no leading zeros) or IPv6 without a zone."""
    if not text or "%" in text:
        return None
    try:
        if ":" in text:
            return ipaddress.IPv6Address(text)
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def as_ipv4(ip: IPAddress) -> Optional[ipaddress.IPv4Address]:
    """Go's To4(): an IPv4 address, or the IPv4 inside an IPv4-mapped IPv6 one."""
    if ip.version == 4:
        return ip  # type: ignore[return-value]
    return ip.ipv4_mapped  # type: ignore[union-attr]


def go_string(ip: IPAddress) -> str:
    """Go's net.IP.String(): IPv4-mapped IPv6 prints as dotted IPv4."""
    v4 = as_ipv4(ip)
    return str(v4 if v4 is not None else ip)


def canonical_ip(text: str) -> str:
    """The key an address is indexed under for reverse lookups (the form Go prints).
    Kubernetes stores canonical IPv4 already, so only IPv6 is normalised (it is rare)."""
    if ":" not in text:
        return text
    ip = parse_ip(text)
    return go_string(ip) if ip is not None else text


def dashed(ip: str) -> str:
    """The DNS label of an endpoint without a hostname: its IP with '-' for '.' or ':'
    (an IPv6 label may not end in '-', so a trailing '::' gets a '0')."""
    if "." in ip:
        return ip.replace(".", "-")
    label = ip.replace(":", "-")
    return label + "0" if label.endswith("-") else label


def ip_from_pod_label(label: str) -> str:
    """The address a pod name like ``10-244-1-7`` spells: three dashes and no '--' is IPv4,
    anything else is read as IPv6 with ':' for '-'. The result may not be an address."""
    if label.count("-") == 3 and "--" not in label:
        return label.replace("-", ".")
    return label.replace("-", ":")


def ip_from_reverse(name: tuple[str, ...]) -> str:
    """The address a reverse name (lowercase labels) stands for, or '' when it is not one.

    As in CoreDNS: the labels before ``in-addr.arpa`` reversed must form an IPv4 address;
    before ``ip6.arpa`` they are reversed and glued four at a time into hextets (labels left
    over after the last full group are ignored)."""
    if len(name) > 2 and name[-2:] == ("in-addr", "arpa"):
        ip = parse_ip(".".join(reversed(name[:-2])))
        v4 = as_ipv4(ip) if ip is not None and ip.version == 4 else None
        return str(v4) if v4 is not None else ""
    if len(name) > 2 and name[-2:] == ("ip6", "arpa"):
        nibbles = list(reversed(name[:-2]))
        groups = ["".join(nibbles[i * 4:i * 4 + 4]) for i in range(len(nibbles) // 4)]
        ip = parse_ip(":".join(groups))
        return go_string(ip) if ip is not None else ""
    return ""


def is_under(name: tuple[str, ...], zone: tuple[str, ...]) -> bool:
    """True when the lowercase name equals the lowercase zone or lies below it."""
    n = len(zone)
    return len(name) >= n and (n == 0 or name[-n:] == zone)


def split_name(text: str) -> tuple[str, ...]:
    """'a.b.c.' or 'a.b.c' -> ('a', 'b', 'c'); the root is ()."""
    text = text.rstrip(".")
    return tuple(text.split(".")) if text else ()
