"""The host's side of safety: its routes and addresses, and does an address route into a lab?

A lab must never turn a curl into packets on the real network: before `up` the lab network must
not already be routed or addressed on the host (a more specific route than the default route,
or an address of the host: netemu/daemon/lifecycle.py's host_conflicts over what this module reads;
a dual-stack lab's network6 too, against the host's IPv6 routes and addresses),
and before anything sends to a lab address it checks that the route leaves through a lab's own
interface.
"""
from __future__ import annotations

import ipaddress
from typing import Iterator, Optional

from netemu.dataplane import names
from netemu.dataplane.ipcmd import IpError, ip_json


def host_routes(family: int = 4) -> list[dict]:
    """The host's routes of one family, every table (`ip -j [-6] route show table all`: without -6, ip
    lists IPv4 routes only)."""
    return ip_json((["-6"] if family == 6 else []) + ["route", "show", "table", "all"])


_ANY_DEV = object()


def overlapping_routes(cidr: str, routes: list[dict], skip_types: tuple[str, ...] = ("broadcast", "multicast"),
                       skip_dev=_ANY_DEV) -> Iterator[dict]:
    """The routes (`ip -j route show table all`) that reach into ``cidr``, of its family; a default route
    does not count, nor routes of ``skip_types`` or (when given) of the device ``skip_dev``. A route to
    one address has no length in `ip -j`: /32 or /128 by its family."""
    net = ipaddress.ip_network(cidr)
    for r in routes:
        dst = r.get("dst")
        if not dst or dst == "default" or r.get("type") in skip_types:
            continue
        if skip_dev is not _ANY_DEV and r.get("dev") == skip_dev:
            continue
        try:
            other = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if other.version == net.version and other.overlaps(net):
            yield r


def host_addresses() -> list[dict]:
    """The host's links with their addresses (`ip -j addr show`)."""
    return ip_json(["addr", "show"])


def route_device(address: str) -> Optional[str]:
    """The interface the host would send to `address` through (IPv4 or IPv6; an IPv6 address may be
    written as in a URL, in brackets)."""
    address = plain_address(address)
    try:
        routes = ip_json(["route", "get", address])
    except IpError:
        return None
    return routes[0].get("dev") if routes else None


def plain_address(address: str) -> str:
    """`[fd00::1]` (as curl -g takes it) -> `fd00::1`; anything else as it is."""
    address = address.strip()
    if address.startswith("[") and address.endswith("]"):
        return address[1:-1]
    return address


def routes_into_lab(address: str, lab: Optional[str] = None) -> bool:
    """True only if the host reaches `address` through a lab's host link (of `lab` if given)."""
    dev = route_device(address)
    if dev is None:
        return False
    if lab is not None:
        return dev == names.host_link(lab)
    return dev.startswith(names.PREFIX)
