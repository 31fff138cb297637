"""The lab's wires in both families, as decided (no kernel): what labnet asks of iproute2 and sysctl in an
IPv4-only lab (as before IPv6 existed) and in a dual-stack one; the host's safety checks for IPv6; pods'
IPv6 addresses; the stand-ins listening on :: beside 0.0.0.0."""
from __future__ import annotations

import socket
import threading
import types

import pytest

from netemu.dataplane import hostnet, names
from netemu.dataplane.labnet import LabNet, NodeNet, PodNet, host_link_sysctls, pod_sysctls

NODES4 = [NodeNet("m-k8s", "192.168.1.10", "172.16.0.0/24"), NodeNet("w1-k8s", "192.168.1.101", "172.16.1.0/24"),
          NodeNet("w2-k8s", "192.168.1.102", "172.16.2.0/24")]
NODES6 = [NodeNet("m-k8s", "192.168.1.10", "172.16.0.0/24", "fd00:192:168:1::10", "fd00:10:244::/64"),
          NodeNet("w1-k8s", "192.168.1.101", "172.16.1.0/24", "fd00:192:168:1::101", "fd00:10:244:1::/64"),
          NodeNet("w2-k8s", "192.168.1.102", "172.16.2.0/24", "fd00:192:168:1::102", "fd00:10:244:2::/64")]


def _v4() -> LabNet:
    return LabNet("lab", "192.168.1.0/24", "192.168.1.1", "10.96.0.0/12", NODES4)


def _dual() -> LabNet:
    return LabNet("lab", "192.168.1.0/24", "192.168.1.1", "10.96.0.0/12", NODES6,
                  network6="fd00:192:168:1::/64", gateway6="fd00:192:168:1::1", service_cidr6="fd00:10:96::/112")


# ------------------------------------------------------------------------------------------- IPv4 only
def test_an_ipv4_lab_is_wired_as_before():
    net = _v4()
    assert not net.dual_stack and net.network6 is None and net.gateway6 is None
    mac = [c for c in net.node_commands(NODES4[1], 24) if c.startswith("link add cni0")][0]
    assert net.node_commands(NODES4[1], 24) == [
        "link set lo up",
        "addr add 192.168.1.101/24 dev eth0",
        "link set eth0 up",
        mac,
        "addr add 172.16.1.1/24 dev cni0",
        "link set cni0 up",
        "route add 10.96.0.0/12 dev eth0 src 192.168.1.101",
        "route add 172.16.0.0/24 via 192.168.1.10 dev eth0",
        "route add 172.16.2.0/24 via 192.168.1.102 dev eth0",
    ]
    assert net.node_sysctls() == {
        "net.ipv4.ip_forward": "1",
        "net.bridge.bridge-nf-call-iptables": "1",
        "net.ipv4.conf.all.rp_filter": "0",
        "net.ipv4.conf.default.rp_filter": "0",
        "net.ipv6.conf.all.disable_ipv6": "1",
        "net.ipv6.conf.default.disable_ipv6": "1",
        "net.ipv4.conf.all.route_localnet": "1",
        "net.ipv4.icmp_ratelimit": "0",
    }
    assert net.host_link_commands() == [f"link set {net.host_link} up"]
    assert host_link_sysctls(False) == {"disable_ipv6": "1"}
    pod = PodNet("default", "p", "w1-k8s", "172.16.1.5", 24, "172.16.1.1")
    assert pod_sysctls(pod) == {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
    veth = names.pod_veth("default", "p")
    assert net.pod_port_commands(pod) == [
        f"link add {veth} type veth peer name eth0 netns {net.pod_netns('default', 'p')} index 2",
        f"link set {veth} master cni0 up",
        f"link set dev {veth} type bridge_slave hairpin on",
    ]


# ------------------------------------------------------------------------------------------- dual-stack
def test_a_dual_stack_node_has_both_families_and_no_ipv6_default_route():
    net = _dual()
    assert net.dual_stack and net.gateway6 == "fd00:192:168:1::1"
    cmds = net.node_commands(NODES6[1], 24)
    assert "addr add fd00:192:168:1::101/64 dev eth0 nodad" in cmds
    # cni0: the first host of the node's IPv6 pod subnet, the pods' gateway
    assert NODES6[1].gateway6 == "fd00:10:244:1::1"
    assert "addr add fd00:10:244:1::1/64 dev cni0 nodad" in cmds
    assert "route add fd00:10:96::/112 dev eth0 src fd00:192:168:1::101" in cmds
    # host-gw in IPv6: the other nodes' IPv6 pod subnets via their IPv6 addresses
    assert "route add fd00:10:244::/64 via fd00:192:168:1::10 dev eth0" in cmds
    assert "route add fd00:10:244:2::/64 via fd00:192:168:1::102 dev eth0" in cmds
    assert not [c for c in cmds if "default" in c or "::/0" in c]
    # the addresses come before their links are up; the IPv4 commands are those of an IPv4 lab
    assert cmds.index("addr add fd00:192:168:1::101/64 dev eth0 nodad") < cmds.index("link set eth0 up")
    assert [c for c in cmds if "fd00:" not in c] == _v4().node_commands(NODES4[1], 24)


def test_a_dual_stack_node_forwards_ipv6_and_takes_nothing_from_router_advertisements():
    values = _dual().node_sysctls()
    keys = list(values)
    for scope in ("all", "default", "eth0"):
        for key in ("accept_ra", "autoconf", "accept_redirects", "router_solicitations"):
            assert values[f"net.ipv6.conf.{scope}.{key}"] == "0"
            # quiet before IPv6 is switched on
            assert keys.index(f"net.ipv6.conf.{scope}.{key}") < keys.index("net.ipv6.conf.all.disable_ipv6")
    assert values["net.ipv6.conf.all.disable_ipv6"] == values["net.ipv6.conf.default.disable_ipv6"] == "0"
    assert values["net.ipv6.conf.all.forwarding"] == "1"
    assert values["net.bridge.bridge-nf-call-ip6tables"] == "1"
    assert values["net.ipv4.ip_forward"] == "1" and values["net.ipv4.conf.all.route_localnet"] == "1"


def test_a_node_without_its_ipv6_pieces_is_wired_in_ipv4_alone():
    net = LabNet("lab", "192.168.1.0/24", "192.168.1.1", "10.96.0.0/12", NODES4, network6="fd00:192:168:1::/64")
    assert net.gateway6 == "fd00:192:168:1::1"  # unset: network6's first address
    assert net.node_commands(NODES4[1], 24) == _v4().node_commands(NODES4[1], 24)


def test_the_host_link_of_a_dual_stack_lab_has_gateway6_and_takes_no_router_advertisements():
    net = _dual()
    assert net.host_link_commands() == [f"addr add fd00:192:168:1::1/64 dev {net.host_link} nodad",
                                        f"link set {net.host_link} up"]
    values = host_link_sysctls(True)
    assert values == {"accept_ra": "0", "autoconf": "0", "accept_redirects": "0", "router_solicitations": "0",
                      "disable_ipv6": "0"}
    assert list(values)[-1] == "disable_ipv6"


def test_a_dual_stack_pod_gets_its_ipv6_address_and_its_ports_no_link_local():
    net = _dual()
    pod = PodNet("default", "p", "w1-k8s", "172.16.1.5", 24, "172.16.1.1", "fd00:10:244:1::5", 64, "fd00:10:244:1::1")
    values = pod_sysctls(pod)
    assert values["net.ipv6.conf.eth0.accept_ra"] == values["net.ipv6.conf.all.autoconf"] == "0"
    assert values["net.ipv6.conf.all.disable_ipv6"] == "0"
    veth = names.pod_veth("default", "p")
    cmds = net.pod_port_commands(pod)
    assert cmds.index(f"link set {veth} addrgenmode none") < cmds.index(f"link set {veth} master cni0 up")


def test_pod_net_takes_the_pods_ipv6_address_in_a_dual_stack_lab():
    from netemu.dataplane.kubelet import pod_net
    from netemu.spec.models import Pod

    pod = Pod.model_validate({"metadata": {"name": "p", "namespace": "default"},
                              "spec": {"nodeName": "w1-k8s", "containers": [{"name": "c", "image": "nginx"}]},
                              "status": {"podIP": "172.16.1.5",
                                         "podIPs": [{"ip": "172.16.1.5"}, {"ip": "fd00:10:244:1::5"}]}})
    assert pod_net(pod, NODES6[1]) == PodNet("default", "p", "w1-k8s", "172.16.1.5", 24, "172.16.1.1",
                                             "fd00:10:244:1::5", 64, "fd00:10:244:1::1")
    # an IPv4 lab's node (or one without an IPv6 pod subnet): IPv4 alone, as before
    assert pod_net(pod, NODES4[1]) == PodNet("default", "p", "w1-k8s", "172.16.1.5", 24, "172.16.1.1")


def test_the_daemon_reads_a_nodes_ipv6_address_and_pod_subnet():
    from netemu.daemon.lab import _node_ipv6
    from netemu.spec.models import Node

    lab = types.SimpleNamespace(spec=types.SimpleNamespace(nodes=[types.SimpleNamespace(name="w1-k8s",
                                                                                        ip6="fd00:1::101")]))
    node = Node.model_validate({"metadata": {"name": "w1-k8s"},
                                "spec": {"podCIDR": "172.16.1.0/24", "podCIDRs": ["172.16.1.0/24", "fd00:10:244:1::/64"]},
                                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.101"},
                                                         {"type": "InternalIP", "address": "fd00:192:168:1::101"},
                                                         {"type": "Hostname", "address": "w1-k8s"}]}})
    assert _node_ipv6(lab, node) == ("fd00:192:168:1::101", "fd00:10:244:1::/64")
    bare = Node.model_validate({"metadata": {"name": "w1-k8s"}, "spec": {"podCIDR": "172.16.1.0/24"},
                                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.101"}]}})
    assert _node_ipv6(lab, bare) == ("fd00:1::101", None)  # the Lab document's ip6; no IPv6 pod subnet yet


# ------------------------------------------------------------------------------------------- the host's safety
def test_the_host_reads_its_ipv6_routes_with_dash_6(monkeypatch):
    seen = []
    monkeypatch.setattr(hostnet, "ip_json", lambda args: seen.append(args) or [])
    hostnet.host_routes()
    hostnet.host_routes(6)
    assert seen == [["route", "show", "table", "all"], ["-6", "route", "show", "table", "all"]]


def test_check_route_takes_an_ipv6_address_in_brackets(monkeypatch):
    seen = []
    monkeypatch.setattr(hostnet, "ip_json", lambda args: seen.append(args) or [{"dev": "ne-lab"}])
    assert hostnet.routes_into_lab("[fd00:192:168:1::101]", "lab")
    assert seen == [["route", "get", "fd00:192:168:1::101"]]
    assert hostnet.plain_address("192.168.1.1") == "192.168.1.1"


def test_a_lab_network6_the_host_routes_is_refused():
    from netemu.daemon.lifecycle import host_conflicts

    routes6 = [{"dst": "default", "gateway": "fd00::1", "dev": "eth0"},
               {"dst": "fd00::/64", "dev": "eth0", "protocol": "kernel"},
               {"dst": "fe80::/64", "dev": "eth0", "protocol": "kernel"},
               {"type": "local", "dst": "fd00::2", "dev": "eth0", "table": "local"},
               {"type": "multicast", "dst": "ff00::/8", "dev": "eth0", "table": "local"},
               {"dst": "fd00:192:168:1::77", "dev": "tun0"}]
    links = [{"ifname": "eth0", "addr_info": [{"family": "inet6", "local": "fd00::2", "prefixlen": 64},
                                              {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]}]
    assert host_conflicts("fd00:192:168:1::/64", routes6, links) == [
        "route fd00:192:168:1::77 dev tun0 (table main) already covers fd00:192:168:1::/64"]
    # a route to one IPv6 address is a /128, not a /32 that would cover half of fd00::/16
    assert host_conflicts("fd00:192:168:2::/64", routes6, links) == []
    assert host_conflicts("fd00::/64", routes6, links) == [
        "route fd00::/64 dev eth0 (table main) already covers fd00::/64",
        "address fd00::2/64 on eth0 is inside fd00::/64"]


def _spec6(network6=None, pod_cidr6=None, service_cidr6=None, network="192.168.2.0/24"):
    return types.SimpleNamespace(network=network, pod_cidr="172.17.0.0/16", service_cidr="10.112.0.0/12",
                                 uplink=None, network6=network6, pod_cidr6=pod_cidr6, service_cidr6=service_cidr6)


def test_a_dual_stack_lab_may_not_take_another_labs_ipv6_ranges():
    from netemu.daemon.lifecycle import ipv6_ranges, lab_overlaps

    theirs = {"network": "192.168.1.0/24", "podCIDR": "172.16.0.0/16", "serviceCIDR": "10.96.0.0/12",
              "network6": "fd00:192:168:1::/64", "podCIDR6": "fd00:10:244::/56", "serviceCIDR6": "fd00:10:96::/112"}
    mine = _spec6("fd00:192:168:1::/64", "fd00:10:244:100::/56", "fd00:10:96::/108")
    assert lab_overlaps("me", mine, {"lab": theirs}) == [
        'IPv6 lab network fd00:192:168:1::/64 overlaps the IPv6 lab network fd00:192:168:1::/64 of lab "lab"',
        'IPv6 service CIDR fd00:10:96::/108 overlaps the IPv6 service CIDR fd00:10:96::/112 of lab "lab"']
    assert lab_overlaps("me", _spec6("fd00:192:168:2::/64", "fd00:20:244::/56", "fd00:20:96::/112"),
                        {"lab": theirs}) == []
    # an IPv4-only lab beside a dual-stack one: IPv4 ranges only, and never an IPv4 range against an IPv6 one
    assert lab_overlaps("me", _spec6(), {"lab": theirs}) == []
    assert ipv6_ranges(_spec6()) == {}
    assert ipv6_ranges(types.SimpleNamespace(network="10.0.0.0/24")) == {}  # a spec from before IPv6


# ------------------------------------------------------------------------------------------- stand-ins
def test_a_stand_in_listening_everywhere_listens_on_ipv6_too(monkeypatch):
    """With IPv6 on, a stand-in on 0.0.0.0 takes the same port on ::, an IPv6-only socket, so IPv4 clients
    are still seen as IPv4 (tried on loopback: the 'everywhere' addresses are swapped for 127.0.0.1 and ::1)."""
    from netemu.workloads import listeners

    if not socket.has_ipv6 or not listeners.ipv6_enabled():
        pytest.skip("no IPv6 here")
    monkeypatch.setattr(listeners, "ANY4", "127.0.0.1")
    monkeypatch.setattr(listeners, "ANY6", "::1")
    seen = []
    loop = listeners.Loop("127.0.0.1")

    def serve(conn, client):
        seen.append(client[0])
        conn.sendall(client[0].encode())

    loop.add_tcp(0, serve)
    loop.add_udp(0, lambda data, client, local: f"{client[0]} -> {local[0]}".encode())
    assert [e.split()[0] for e in loop.endpoints] == ["TCP", "TCP", "UDP", "UDP"]
    tcp4, tcp6, udp4, udp6 = (e.split()[1] for e in loop.endpoints)
    assert tcp4.startswith("127.0.0.1:") and tcp6 == f"[::1]:{tcp4.split(':')[1]}"
    port, uport = int(tcp4.split(":")[1]), int(udp4.split(":")[1])
    assert udp6 == f"[::1]:{uport}"
    threading.Thread(target=loop.run_forever, daemon=True).start()
    for host, family in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
        with socket.create_connection((host, port), timeout=5) as s:
            assert s.recv(100).decode() == host
        with socket.socket(family, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.sendto(b"x", (host, uport))
            assert u.recv(100).decode() == f"{host} -> {host}"
    assert seen == ["127.0.0.1", "::1"]


def test_a_stand_in_without_ipv6_or_on_one_address_listens_as_before(monkeypatch):
    from netemu.workloads import listeners

    monkeypatch.setattr(listeners, "ipv6_enabled", lambda: False)
    monkeypatch.setattr(listeners, "ANY4", "127.0.0.1")
    loop = listeners.Loop("127.0.0.1")
    loop.add_tcp(0, lambda conn, client: None)
    assert len(loop.endpoints) == 1 and loop.endpoints[0].startswith("TCP 127.0.0.1:")
    monkeypatch.setattr(listeners, "ipv6_enabled", lambda: True)
    loop = listeners.Loop("127.0.0.2")  # one address, not every address: no IPv6 twin
    loop.add_tcp(0, lambda conn, client: None)
    assert len(loop.endpoints) == 1
