"""The host's side of safety: its routes and addresses, and does an address route into a lab?

A lab must never turn a curl into packets on the real network: before `up` the lab network must
not already be routed or addressed on the host (a more specific route than the default route,
or an address of the host: netemu/daemon/lifecycle.py's host_conflicts over what this module reads),
and before anything sends to a lab address it checks that the route leaves through a lab's own
interface.
"""
from __future__ import annotations

from typing import Optional

from netemu.dataplane import names
from netemu.dataplane.ipcmd import IpError, ip_json


def host_routes() -> list[dict]:
    """The host's routes, every table (`ip -j route show table all`)."""
    return ip_json(["route", "show", "table", "all"])


def host_addresses() -> list[dict]:
    """The host's links with their addresses (`ip -j addr show`)."""
    return ip_json(["addr", "show"])


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
