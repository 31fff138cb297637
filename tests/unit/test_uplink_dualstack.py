"""The uplink's refusals in a dual-stack lab: the interface's IPv6 addresses and routes count as inside
the lab when they are in network6, and a host forwarding IPv6 gives no uplink to a dual-stack lab."""
from __future__ import annotations

import pytest

from netemu.dataplane import uplink

ADDRS = [{"family": "inet", "local": "192.168.56.5", "prefixlen": 24},
         {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"},
         {"family": "inet6", "local": "fd00:56::5", "prefixlen": 64, "scope": "global"}]
ROUTES = [{"dst": "fd00:56::/64", "dev": "eth9", "protocol": "kernel", "family": "inet6"},
          {"dst": "fd00:77::/64", "dev": "eth9", "gateway": "fd00:56::1", "protocol": "static", "family": "inet6"}]


@pytest.fixture
def eth9(monkeypatch):
    monkeypatch.setattr(uplink, "_link", lambda ifname, netns: {"ifname": ifname, "link_type": "ether", "flags": []})
    monkeypatch.setattr(uplink, "_all_routes", lambda netns: ROUTES)
    monkeypatch.setattr(uplink, "ip_json", lambda args, netns=None: [{"addr_info": ADDRS}])
    monkeypatch.setattr(uplink.paths, "running_labs", lambda: [])


def test_ipv6_address_and_routes_inside_network6_are_the_lab_s(eth9):
    hard, soft = uplink.refusals("eth9", "192.168.56.0/24", netns="x", network6="fd00:56::/64")
    assert hard == []
    # the connected route is the kernel's own; the static one leaves the lab's IPv6 segment
    assert soft == ["eth9 carries a route to another network (fd00:77::/64 via fd00:56::1 dev eth9)"]


def test_ipv4_only_lab_counts_an_ipv6_address_as_outside(eth9):
    _, soft = uplink.refusals("eth9", "192.168.56.0/24", netns="x")
    assert "eth9 has the address fd00:56::5/64, outside the lab network 192.168.56.0/24" in soft
    assert not any("fe80::1" in s for s in soft)  # link-local addresses are every interface's


def test_dual_stack_preflight_refuses_a_host_forwarding_ipv6(eth9, monkeypatch):
    monkeypatch.setattr(uplink.os.path, "exists", lambda p: True)
    monkeypatch.setattr(uplink, "host_forwards_ipv6", lambda: True)
    with pytest.raises(uplink.UplinkError, match=r"forwards IPv6 \(net.ipv6.conf.all.forwarding=1\)"):
        uplink.preflight("x/eth9", "192.168.56.0/24", force=True, network6="fd00:56::/64")
    monkeypatch.setattr(uplink, "host_forwards_ipv6", lambda: False)
    assert uplink.preflight("x/eth9", "192.168.56.0/24", force=True, network6="fd00:56::/64") == [
        "uplink x/eth9 taken with --force-uplink: eth9 carries a route to another network (fd00:77::/64 via fd00:56::1 dev eth9)"]
