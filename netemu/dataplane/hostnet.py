"""The host's side of safety: is a lab network free here, and does an address route into a lab?

A lab must never turn a curl into packets on the real network: before `up` the lab network must
not already be routed or addressed on the host (a more specific route than the default route,
or an address of the host), and before anything sends to a lab address it checks that the
route leaves through a lab's own interface.
"""
from __future__ import annotations

import ipaddress
from typing import Optional

from netemu.dataplane import names
from netemu.dataplane.ipcmd import IpError, ip_json


def network_conflicts(network: str, own_link: Optional[str] = None) -> list[str]:
    """Reasons why `network` cannot be used for a lab on this host (empty when it is free)."""
    net = ipaddress.ip_network(network)
    problems = []
    for r in ip_json(["route", "show", "table", "all"]):
        dst = r.get("dst")
        if not dst or dst == "default" or r.get("type") in ("local", "broadcast", "multicast", "anycast"):
            continue
        if r.get("dev") == own_link:
            continue
        try:
            rnet = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if rnet.version == net.version and rnet.overlaps(net):
            via = f" via {r['gateway']}" if r.get("gateway") else ""
            problems.append(f"route {dst}{via} dev {r.get('dev', '?')} (table {r.get('table', 'main')}) "
                            f"already covers {network}")
    for link in ip_json(["addr", "show"]):
        if link.get("ifname") == own_link:
            continue
        for a in link.get("addr_info", []):
            if a.get("family") != ("inet" if net.version == 4 else "inet6"):
                continue
            iface = ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")
            if iface.network.overlaps(net) or iface.ip in net:
                problems.append(f"address {a['local']}/{a['prefixlen']} on {link['ifname']} is inside {network}")
    return problems


def route_device(address: str) -> Optional[str]:
    """The interface the host would send to `address` through."""
    try:
        routes = ip_json(["route", "get", address])
    except IpError:
        return None
    return routes[0].get("dev") if routes else None


def routes_into_lab(address: str, lab: Optional[str] = None) -> bool:
    """True only if the host reaches `address` through a lab's host link (of `lab` if given)."""
    dev = route_device(address)
    if dev is None:
        return False
    if lab is not None:
        return dev == names.host_link(lab)
    return dev.startswith(names.PREFIX)
