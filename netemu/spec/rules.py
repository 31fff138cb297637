"""Kubernetes' syntax rules for names, label keys and values, port names; and address parsing.

Each ``check_*`` returns None when the value is fine, else the reason, worded like the API server's.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Optional, Union

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def check_dns_label(value: str) -> Optional[str]:
    """RFC 1123 label: namespaces, container names, node names."""
    if len(value) > 63:
        return f"must be no more than 63 characters, got {len(value)}"
    if not _DNS_LABEL.match(value):
        return ("must be a lowercase RFC 1123 label: lowercase letters, digits and '-', "
                "starting and ending with a letter or digit (e.g. 'my-name')")
    return None


def check_dns_1035_label(value: str) -> Optional[str]:
    """RFC 1035 label: Service names (they become DNS names, so they must start with a letter)."""
    if len(value) > 63:
        return f"must be no more than 63 characters, got {len(value)}"
    if not _DNS_1035_LABEL.match(value):
        return ("must be a lowercase RFC 1035 label: lowercase letters, digits and '-', starting with a "
                "letter and ending with a letter or digit (e.g. 'my-name')")
    return None


def check_dns_subdomain(value: str) -> Optional[str]:
    """RFC 1123 subdomain: names of pods, deployments, config maps, ..."""
    if len(value) > 253:
        return f"must be no more than 253 characters, got {len(value)}"
    if not _DNS_SUBDOMAIN.match(value):
        return ("must be a lowercase RFC 1123 subdomain: lowercase letters, digits, '-' and '.', "
                "starting and ending with a letter or digit (e.g. 'example.com')")
    return None


def check_label_key(key: str) -> Optional[str]:
    """``[prefix/]name``: prefix a DNS subdomain, name up to 63 characters."""
    prefix, _, name = key.rpartition("/")
    if prefix and check_dns_subdomain(prefix):
        return f"the prefix {prefix!r} " + check_dns_subdomain(prefix)
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return ("must be a qualified name: up to 63 letters, digits, '-', '_' or '.', starting and ending "
                "with a letter or digit, with an optional DNS subdomain prefix and '/'")
    return None


def check_label_value(value: str) -> Optional[str]:
    if value == "":
        return None
    if len(value) > 63 or not _QUALIFIED_NAME.match(value):
        return ("must be empty or up to 63 letters, digits, '-', '_' or '.', starting and ending with a "
                "letter or digit")
    return None


def check_port_name(value: str) -> Optional[str]:
    """IANA service name: container port names (targetPort may refer to them)."""
    if len(value) > 15:
        return f"must be no more than 15 characters, got {len(value)}"
    if not _IANA_SVC_NAME.match(value) or "--" in value:
        return "must contain only lowercase letters, digits and '-' (not '--'), starting and ending with one"
    if not re.search(r"[a-z]", value):
        return "must contain at least one letter"
    return None


def check_config_key(value: str) -> Optional[str]:
    if len(value) > 253 or not _CONFIG_KEY.match(value):
        return "must consist of letters, digits, '-', '_' or '.' (at most 253 characters)"
    return None


def check_port(value: int) -> Optional[str]:
    return None if 1 <= value <= 65535 else f"must be between 1 and 65535, got {value}"


def parse_cidr(value: str) -> tuple[Optional[IPNetwork], Optional[str]]:
    """An IPv4 network in CIDR form, or why not (a host address with a prefix gets a suggestion)."""
    text = str(value)
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        return None, f"must be a CIDR like 192.168.1.0/24, got {text!r}"
    if "/" not in text:
        return None, f"must be a CIDR with a prefix length, like {text}/24, got {text!r}"
    if iface.version != 4:
        return None, f"only IPv4 is supported, got {text!r}"
    if iface.ip != iface.network.network_address:
        return None, f"has host bits set: did you mean {iface.network}?"
    return iface.network, None


def parse_ip(value: str) -> tuple[Optional[ipaddress.IPv4Address], Optional[str]]:
    try:
        ip = ipaddress.ip_address(str(value))
    except ValueError:
        return None, f"must be an IP address, got {value!r}"
    if ip.version != 4:
        return None, f"only IPv4 is supported, got {value!r}"
    return ip, None


def parse_port_range(value: str) -> tuple[Optional[tuple[int, int]], Optional[str]]:
    """``"30000-32767"`` -> (30000, 32767)."""
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(value))
    if not m:
        return None, f"must be a range like 30000-32767, got {value!r}"
    lo, hi = int(m.group(1)), int(m.group(2))
    if not (1 <= lo < hi <= 65535):
        return None, f"must be A-B with 1 <= A < B <= 65535, got {value!r}"
    return (lo, hi), None
