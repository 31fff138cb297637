"""Address and port allocation: node pod subnets, pod IPs, cluster IPs, node ports.

Pure functions of declared state: what is taken is read from the objects themselves, so a
restart or a `down`/`up` never needs a separate allocation table.
"""
from __future__ import annotations

import ipaddress
import random
from typing import Iterable, Optional


class Exhausted(Exception):
    pass


def node_pod_cidrs(pod_cidr: str, prefix: int, count: int) -> list[str]:
    """One /prefix per node, in node order (node 0 gets the first subnet). Either family: the subnets
    are generated one at a time, so a /56 cut into /64s costs only the nodes'."""
    net = ipaddress.ip_network(pod_cidr)
    subnets = net.subnets(new_prefix=prefix)
    out = []
    for _ in range(count):
        try:
            out.append(str(next(subnets)))
        except StopIteration:
            raise Exhausted(f"pod CIDR {pod_cidr} has fewer than {count} /{prefix} subnets") from None
    return out


def next_pod_ip(subnet: str, used: Iterable[str], last: Optional[str]) -> str:
    """host-local IPAM: the next free address after the last one handed out, wrapping around, so
    that a replaced pod gets a new address (as on a real node). The first host is the bridge."""
    return next_free_pod_ip(subnet, {int(ipaddress.ip_address(u)) for u in used}, last)


def next_free_pod_ip(subnet: str, taken_ints: set[int], last: Optional[str]) -> str:
    """next_pod_ip with the used addresses as integers (a caller handing out many keeps them so).

    IPv4 skips the network, gateway (.1) and broadcast addresses; IPv6 has no broadcast, so only the
    first address and ::1 (cni0's, the pods' gateway) are skipped, as host-local does."""
    net = ipaddress.ip_network(subnet)
    base = int(net.network_address)
    first, count = 2, net.num_addresses - (3 if net.version == 4 else 2)
    if count <= 0:
        raise Exhausted(f"no free pod address left in {subnet}")
    start = 0
    if last:
        off = int(ipaddress.ip_address(last)) - base
        if first <= off < first + count:
            start = off - first + 1
    # of any len(taken) + 1 distinct addresses one is free: the walk is bounded by the pods, not by the
    # subnet (an IPv6 /64 has 2^64 addresses)
    for i in range(min(count, len(taken_ints) + 1)):
        off = first + (start + i) % count
        if base + off not in taken_ints:
            return str(net.network_address + off)
    raise Exhausted(f"no free pod address left in {subnet}")


def allocate_cluster_ip(service_cidr: str, used: Iterable[str], rng: random.Random) -> str:
    """A random free address from the service CIDR, preferring the upper band the way the API
    server does (the lower band is left for addresses people pick by hand, like kube-dns's).

    IPv6: kube-apiserver's allocator covers only the first 65,536 addresses of the range (its bitmap's
    size) and, IPv6 having no broadcast address, the last of them is usable; so a /64 costs no more
    than a /112."""
    net = ipaddress.ip_network(service_cidr)
    taken = {ipaddress.ip_address(u) for u in used if u and u != "None"}
    size = net.num_addresses
    lo = 1
    # kube-apiserver: min(max(16, size/16), 256) addresses form the static (lower) band
    static_band = min(max(16, size // 16), 256)
    # one past the last usable offset: IPv4 leaves out the broadcast address
    end = min(size, 1 << 16) if net.version == 6 else size - 1
    ranges = [(lo + static_band, end), (lo, end)]
    for first, last in ranges:
        if first >= last:
            continue
        for _ in range(64):
            ip = net.network_address + rng.randrange(first, last)
            if ip not in taken:
                return str(ip)
        for off in range(first, last):
            ip = net.network_address + off
            if ip not in taken:
                return str(ip)
    raise Exhausted(f"service CIDR {service_cidr} is full")


def parse_port_range(text: str) -> tuple[int, int]:
    a, _, b = text.partition("-")
    return int(a), int(b)


def allocate_node_port(port_range: str, used: Iterable[int], rng: random.Random) -> int:
    lo, hi = parse_port_range(port_range)
    taken = set(used)
    if len(taken) >= hi - lo + 1:
        raise Exhausted(f"no free node port left in {port_range}")
    for _ in range(64):
        p = rng.randint(lo, hi)
        if p not in taken:
            return p
    for p in range(lo, hi + 1):
        if p not in taken:
            return p
    raise Exhausted(f"no free node port left in {port_range}")


def in_cidr(ip: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)
    except ValueError:
        return False
