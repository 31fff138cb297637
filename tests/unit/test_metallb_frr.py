"""MetalLB's BGP mode in FRR, the pure part: MetalLB's decisions -> each node's and router's FRR
configuration, the live changes (vtysh commands) between two sets of routes, and the Lab document's routers."""
from __future__ import annotations

import pytest

from test_metallb_bgp import ALL, EVERYWHERE, adv, bfd, cluster, decide, peer, pool, slice_, svc

from netemu.control import metallb, metallb_frr
from netemu.control.metallb_frr import Applied, applied_from, plan, router_config, speaker_configs
from netemu.dataplane.bgp import host_route_conflict
from netemu.dataplane.labnet import LabNet, NodeNet, RouterNet
from netemu.spec.errors import SpecError
from netemu.spec.load import load_text

IPS = {"m-k8s": "192.168.1.10", "w1-k8s": "192.168.1.101", "w2-k8s": "192.168.1.102", "w3-k8s": "192.168.1.103"}
ALIVE = {n: True for n in ALL}


def configs(c, services, slices, alive=ALIVE):
    return speaker_configs(decide(c, services, slices, alive), metallb.load_config(c), IPS, alive)


def test_a_node_speaker_renders_neighbors_networks_and_attributes():
    c = cluster(pool(), peer(address="192.168.1.254", holdTime="3s", bfdProfile="fast"),
                bfd(receiveInterval=300, transmitInterval=300, detectMultiplier=3),
                adv(communities='["64500:100", "large:1:2:3"]'))
    cfg = configs(c, [svc()], [slice_(endpoints=EVERYWHERE)])["w1-k8s"]
    files = cfg.files()
    bgpd = files["bgpd"]
    assert "router bgp 64512\n bgp router-id 192.168.1.101\n no bgp ebgp-requires-policy\n" \
           " no bgp network import-check\n" in bgpd
    assert " neighbor 192.168.1.254 remote-as 64500\n" in bgpd
    assert " neighbor 192.168.1.254 timers 1 3\n" in bgpd
    assert " neighbor 192.168.1.254 bfd profile fast\n" in bgpd
    rm = cfg.networks["10.10.10.1/32"].route_map
    assert f"  network 10.10.10.1/32 route-map {rm}\n" in bgpd
    assert f"route-map {rm} permit 10\n set community 64500:100\n set large-community 1:2:3\n" in bgpd
    assert "set local-preference" not in bgpd  # eBGP: no LOCAL_PREF
    assert "ip prefix-list ne-out-192.168.1.254 seq 1 permit 10.10.10.1/32\n" in bgpd
    assert "ip prefix-list ne-out-192.168.1.254 seq 4294967295 deny any\n" in bgpd
    assert "  neighbor 192.168.1.254 prefix-list ne-out-192.168.1.254 out\n" in bgpd
    assert " profile fast\n  receive-interval 300\n  transmit-interval 300\n  detect-multiplier 3\n" in files["bfdd"]


def test_nodes_keep_their_sessions_without_routes_and_dead_speakers_have_none():
    c = cluster(pool(), peer(), adv())
    alive = {**ALIVE, "w2-k8s": False}
    cfgs = configs(c, [svc()], [slice_(endpoints=(("172.16.1.5", "w1-k8s", True),))], alive)
    assert sorted(cfgs) == ["m-k8s", "w1-k8s", "w3-k8s"]
    assert cfgs["w3-k8s"].neighbors and cfgs["w3-k8s"].networks  # Cluster policy: every node announces
    local = configs(c, [svc(policy="Local")], [slice_(endpoints=(("172.16.1.5", "w1-k8s", True),))])
    assert [n for n, cfg in local.items() if cfg.networks] == ["w1-k8s"]
    assert local["w3-k8s"].neighbors and not local["w3-k8s"].networks  # still peers
    assert speaker_configs(decide(cluster(pool()), [svc()], [slice_()]), metallb.load_config(cluster(pool())),
                           IPS, ALIVE) == {}  # no peers: no FRR at all


def test_ibgp_sends_local_pref_and_each_peer_gets_its_own_filter():
    c = cluster(pool(), peer(my=64512, asn=64512, address="192.168.1.254"),
                peer(name="r2", my=64512, asn=64512, address="192.168.1.253"), adv(localPref=150))
    cfg = configs(c, [svc()], [slice_(endpoints=EVERYWHERE)])["w1-k8s"]
    bgpd = cfg.bgpd_text()
    assert "set local-preference 150" in bgpd
    assert " neighbor 192.168.1.253 remote-as 64512\n" in bgpd
    assert set(cfg.filters) == {"192.168.1.254", "192.168.1.253"}


def test_plan_adds_before_announcing_withdraws_before_unfiltering():
    c = cluster(pool(), peer(address="192.168.1.254"), adv())
    one = configs(c, [svc(ip="10.10.10.1")], [slice_(endpoints=EVERYWHERE)])["w1-k8s"]
    two = configs(c, [svc(ip="10.10.10.1"), svc(name="b", ip="10.10.10.2", app="b")],
                  [slice_(endpoints=EVERYWHERE), slice_(service="b", endpoints=EVERYWHERE)])["w1-k8s"]
    assert one.static_key() == two.static_key()
    have = applied_from(one)
    cmds, now = plan(have, two)
    rm = two.networks["10.10.10.2/32"].route_map
    assert cmds == ["ip prefix-list ne-out-192.168.1.254 seq 2 permit 10.10.10.2/32",
                    "router bgp 64512", " address-family ipv4 unicast", f"  network 10.10.10.2/32 route-map {rm}",
                    " exit-address-family", "exit"]
    assert plan(now, two)[0] == []  # nothing to do twice
    back, after = plan(now, one)
    assert back == ["router bgp 64512", " address-family ipv4 unicast", "  no network 10.10.10.2/32",
                    " exit-address-family", "exit",
                    "no ip prefix-list ne-out-192.168.1.254 seq 2 permit 10.10.10.2/32"]
    assert after.networks == applied_from(one).networks
    # a new set of attributes brings its route-map once
    c2 = cluster(pool(), peer(address="192.168.1.254"), adv(communities='["1:1"]'))
    three = configs(c2, [svc(ip="10.10.10.1")], [slice_(endpoints=EVERYWHERE)])["w1-k8s"]
    cmds, _ = plan(Applied(dict(one.networks), {"192.168.1.254": {"10.10.10.1/32": 1}},
                           frozenset(a.route_map for a in one.networks.values())), three)
    assert cmds[:3] == [f"route-map {three.networks['10.10.10.1/32'].route_map} permit 10", " set community 1:1",
                        "exit"]
    assert f"  network 10.10.10.1/32 route-map {three.networks['10.10.10.1/32'].route_map}" in cmds


def test_a_router_accepts_the_peers_nodes_with_their_session_settings_and_ecmp():
    c = cluster(pool(), peer(address="192.168.1.254", holdTime="3s", bfdProfile="fast", password="s3cret"),
                peer(name="other", address="192.168.1.9"), bfd(), adv())
    cfg = router_config("r1", "192.168.1.254", 64500, metallb.load_config(c), IPS)
    bgpd = cfg.files()["bgpd"]
    assert "router bgp 64500\n bgp router-id 192.168.1.254\n" in bgpd
    for node, ip in IPS.items():
        assert f" neighbor {ip} remote-as 64512\n" in bgpd
        assert f" neighbor {ip} description {node}\n" in bgpd
        assert f" neighbor {ip} bfd profile fast\n" in bgpd
        assert f" neighbor {ip} password s3cret\n" in bgpd
        assert f"  neighbor {ip} activate\n" in bgpd
    assert "  maximum-paths 64\n" in bgpd and " bgp bestpath as-path multipath-relax\n" in bgpd
    assert " profile fast\n" in cfg.files()["bfdd"]
    # a router no BGPPeer names has no neighbors
    assert router_config("r2", "192.168.1.253", 64501, metallb.load_config(c), IPS).neighbors == ()


def test_the_host_routes_a_pool_only_where_it_routes_nothing_of_it():
    routes = [{"dst": "default", "gateway": "10.0.0.1", "dev": "eth0"},
              {"dst": "10.0.0.0/24", "dev": "eth0"}, {"dst": "172.17.0.0/16", "dev": "docker0"}]
    assert host_route_conflict("10.10.10.0/24", routes) == ""
    assert "10.0.0.0/24" in host_route_conflict("10.0.0.128/25", routes)
    assert "172.17.0.0/16" in host_route_conflict("172.17.5.0/24", routes)


# --------------------------------------------------------------------------- IPv6 (a dual-stack lab)
IPS6 = {n: "fd00:1::" + ip.rsplit(".", 1)[1] for n, ip in IPS.items()}
DUAL_POOL = pool(addresses='10.10.10.0/24, "fd00:10:7::/120"')


def test_an_ipv6_peer_is_activated_in_ipv6_only_with_the_ipv6_lb_ips_as_networks():
    c = cluster(DUAL_POOL, peer(address="192.168.1.254", bfdProfile="fast"),
                peer(name="r1-v6", address='"fd00:1::fe"', bfdProfile="fast"), bfd(),
                adv(localPref=120, communities='["64512:100"]'))
    cfg = configs(c, [svc(ip="10.10.10.1,fd00:10:7::5")], [slice_(endpoints=EVERYWHERE)])["w1-k8s"]
    bgpd = cfg.bgpd_text()
    v4, v6 = bgpd.split(" address-family ipv4 unicast\n")[1].split(" address-family ipv6 unicast\n")
    assert "  neighbor 192.168.1.254 activate\n" in v4 and "fd00:1::fe" not in v4
    assert "  neighbor fd00:1::fe activate\n  neighbor fd00:1::fe prefix-list ne-out-fd00-1--fe out\n" in v6
    assert "192.168.1.254" not in v6
    rm = cfg.networks["fd00:10:7::5/128"].route_map
    assert f"  network fd00:10:7::5/128 route-map {rm}\n" in v6 and "10.10.10.1/32" in v4
    # the same attributes as IPv4's (eBGP: no LOCAL_PREF), so one route-map
    assert rm == cfg.networks["10.10.10.1/32"].route_map and f"route-map {rm} permit 10\n set community 64512:100\n" in bgpd
    assert "ipv6 prefix-list ne-out-fd00-1--fe seq 1 permit fd00:10:7::5/128\n" in bgpd
    assert "ipv6 prefix-list ne-out-fd00-1--fe seq 4294967295 deny any\n" in bgpd
    assert "ip prefix-list ne-out-192.168.1.254 seq 1 permit 10.10.10.1/32\n" in bgpd
    assert "ipv6 prefix-list ne-out-192.168.1.254" not in bgpd  # an IPv4 session carries no IPv6
    assert " neighbor fd00:1::fe bfd profile fast\n" in bgpd
    # MetalLB's mustDisableConnectedCheck: IPv6, eBGP, single hop
    assert " neighbor fd00:1::fe disable-connected-check\n" in bgpd
    assert "192.168.1.254 disable-connected-check" not in bgpd


def test_aggregation_length_v6_and_ibgp_local_pref_over_ipv6():
    c = cluster(DUAL_POOL, peer(name="r1-v6", my=64512, asn=64512, address='"fd00:1::fe"'),
                adv(aggregationLengthV6=124, localPref=150))
    cfg = configs(c, [svc(ip="10.10.10.1,fd00:10:7::5")], [slice_(endpoints=EVERYWHERE)])["w1-k8s"]
    assert list(cfg.networks) == ["fd00:10:7::/124"]
    bgpd = cfg.bgpd_text()
    assert "set local-preference 150" in bgpd and "disable-connected-check" not in bgpd  # iBGP


def test_dual_stack_address_family_puts_an_ipv4_session_in_both_families():
    c = cluster(DUAL_POOL, peer(address="192.168.1.254", dualStackAddressFamily="true"), adv())
    cfg = configs(c, [svc(ip="10.10.10.1,fd00:10:7::5")], [slice_(endpoints=EVERYWHERE)])["w1-k8s"]
    bgpd = cfg.bgpd_text()
    assert bgpd.count("  neighbor 192.168.1.254 activate\n") == 2
    assert cfg.filters["192.168.1.254"] == ("10.10.10.1/32", "fd00:10:7::5/128")
    assert "ipv6 prefix-list ne-out-192.168.1.254 seq 2 permit fd00:10:7::5/128\n" in bgpd
    assert "ipv6 prefix-list ne-out-192.168.1.254 seq 4294967295 deny any\n" in bgpd
    router = router_config("r1", "192.168.1.254", 64500, metallb.load_config(c), IPS).files()["bgpd"]
    six = router.split(" address-family ipv6 unicast\n")[1]
    assert "  neighbor 192.168.1.101 activate\n  neighbor 192.168.1.101 route-map ne-v6-global in\n" in six


def test_plan_uses_ipv6_prefix_lists_and_the_ipv6_address_family():
    c = cluster(DUAL_POOL, peer(name="r1-v6", address='"fd00:1::fe"'), adv())
    one = configs(c, [svc(ip="10.10.10.1,fd00:10:7::5")], [slice_(endpoints=EVERYWHERE)])["w1-k8s"]
    two = configs(c, [svc(ip="10.10.10.1,fd00:10:7::5"), svc(name="b", ip="10.10.10.2,fd00:10:7::6", app="b")],
                  [slice_(endpoints=EVERYWHERE), slice_(service="b", endpoints=EVERYWHERE)])["w1-k8s"]
    assert one.static_key() == two.static_key()
    cmds, now = plan(applied_from(one), two)
    rm = two.networks["fd00:10:7::6/128"].route_map
    assert cmds == ["ipv6 prefix-list ne-out-fd00-1--fe seq 2 permit fd00:10:7::6/128",
                    "router bgp 64512", " address-family ipv6 unicast", f"  network fd00:10:7::6/128 route-map {rm}",
                    " exit-address-family", "exit"]
    back, _ = plan(now, one)
    assert back[-1] == "no ipv6 prefix-list ne-out-fd00-1--fe seq 2 permit fd00:10:7::6/128"
    assert "  no network fd00:10:7::6/128" in back


def test_a_router_peers_with_the_nodes_ip6_for_a_peer_at_its_ip6_with_ecmp():
    c = cluster(DUAL_POOL, peer(address="192.168.1.254", bfdProfile="fast"),
                peer(name="r1-v6", address='"fd00:1::fe"', bfdProfile="fast", password="s3cret"), bfd(), adv())
    cfg = router_config("r1", "192.168.1.254", 64500, metallb.load_config(c), IPS, ip6="fd00:1::fe", node_ips6=IPS6)
    assert [n.address for n in cfg.neighbors] == [*IPS.values(), *IPS6.values()]
    bgpd = cfg.files()["bgpd"]
    v4, v6 = bgpd.split(" address-family ipv4 unicast\n")[1].split(" address-family ipv6 unicast\n")
    for node, ip6 in IPS6.items():
        assert f" neighbor {ip6} remote-as 64512\n neighbor {ip6} description {node}\n" in bgpd
        assert f" neighbor {ip6} bfd profile fast\n" in bgpd and f" neighbor {ip6} password s3cret\n" in bgpd
        assert f"  neighbor {ip6} activate\n  neighbor {ip6} route-map ne-v6-global in\n" in v6
        assert ip6 not in v4
    assert "  maximum-paths 64\n" in v6 and "route-map ne-v6-global permit 10\n set ipv6 next-hop prefer-global\n" in bgpd
    assert "192.168.1.101" not in v6
    # IPv4 only: no IPv6 address family, no route-map (the text as before)
    v4only = router_config("r1", "192.168.1.254", 64500, metallb.load_config(c), IPS).files()["bgpd"]
    assert "ipv6" not in v4only and "ne-v6-global" not in v4only


def test_a_dual_stack_labs_router_gets_ipv6_like_a_node_and_an_ipv4_labs_none():
    nodes = [NodeNet("w1-k8s", "192.168.1.101", "172.16.1.0/24", "fd00:192:168:1::101", "fd00:10:244:1::/64")]
    r = RouterNet("r1", "192.168.1.254", "fd00:192:168:1::254")
    dual = LabNet("lab", "192.168.1.0/24", "192.168.1.1", "10.96.0.0/12", nodes, [r],
                  network6="fd00:192:168:1::/64", service_cidr6="fd00:10:96::/112")
    assert dual.router_commands(r, 24) == ["link set lo up", "addr add 192.168.1.254/24 dev eth0",
                                           "addr add fd00:192:168:1::254/64 dev eth0 nodad", "link set eth0 up"]
    sysctls = dual.router_ipv6_sysctls(r)
    for scope in ("all", "default", "eth0"):
        assert sysctls[f"net.ipv6.conf.{scope}.accept_ra"] == "0" and sysctls[f"net.ipv6.conf.{scope}.autoconf"] == "0"
    assert sysctls["net.ipv6.conf.all.forwarding"] == "1" and sysctls["net.ipv6.conf.all.disable_ipv6"] == "0"
    assert sysctls["net.ipv6.fib_multipath_hash_policy"] == "1"
    v4 = LabNet("lab", "192.168.1.0/24", "192.168.1.1", "10.96.0.0/12", nodes[:0], [RouterNet("r1", "192.168.1.254")])
    assert v4.router_commands(RouterNet("r1", "192.168.1.254"), 24) == [
        "link set lo up", "addr add 192.168.1.254/24 dev eth0", "link set eth0 up"]
    assert v4.router_ipv6_sysctls(RouterNet("r1", "192.168.1.254")) == {
        "net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}


def test_the_host_checks_ipv6_pools_against_its_ipv6_routes():
    routes = [{"dst": "default", "gateway": "fe80::1", "dev": "eth0"}, {"dst": "fd00::/64", "dev": "eth0"},
              {"dst": "fe80::/64", "dev": "eth0"}, {"dst": "ff00::/8", "dev": "eth0", "type": "multicast"}]
    assert host_route_conflict("fd00:10:7::/120", routes) == ""
    assert "fd00::/64" in host_route_conflict("fd00::100/120", routes)


# --------------------------------------------------------------------------- the Lab document's routers
LAB = """apiVersion: netemu.dev/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  nodes:
  - {name: m-k8s, ip: 192.168.1.10, role: control-plane}
  - {name: w1-k8s, ip: 192.168.1.101}
  routers:
%s
---
apiVersion: v1
kind: Namespace
metadata: {name: x}
"""


def lab_errors(routers: str) -> list[str]:
    with pytest.raises(SpecError) as e:
        load_text(LAB % routers, "bgp.yaml")
    return e.value.errors


def test_routers_load():
    lab = load_text(LAB % "  - {name: r1, ip: 192.168.1.254, asn: 64500}", "bgp.yaml").lab
    assert lab.spec.routers[0].name == "r1" and lab.spec.routers[0].asn == 64500 and not lab.spec.routers[0].upstream


@pytest.mark.parametrize("routers, words", [
    ("  - {name: r1, ip: 192.168.2.254, asn: 64500}", "spec.routers[0].ip: 192.168.2.254 must be a host address inside"),
    ("  - {name: r1, ip: 192.168.1.101, asn: 64500}", "spec.routers[0].ip: 192.168.1.101 is taken (also spec.nodes[1])"),
    ("  - {name: r1, ip: 192.168.1.1, asn: 64500}", "spec.routers[0].ip: 192.168.1.1 is the gateway"),
    ("  - {name: r1, ip: 192.168.1.254, asn: 0}", "spec.routers[0].asn: must be between 1 and 4294967295, got 0"),
    ("  - {name: w1-k8s, ip: 192.168.1.254, asn: 1}", "spec.routers[0].name: duplicate name 'w1-k8s' (also spec.nodes[1])"),
    ("  - {name: r1, ip: 192.168.1.254, asn: 1}\n  - {name: r1, ip: 192.168.1.253, asn: 1}",
     "spec.routers[1].name: duplicate name 'r1' (also spec.routers[0])"),
    ("  - {name: r1, ip: 192.168.1.254, asn: 1}\n  - {name: r2, ip: 192.168.1.254, asn: 1}",
     "spec.routers[1].ip: 192.168.1.254 is taken (also spec.routers[0])"),
    ("  - {name: R_1, ip: 192.168.1.254, asn: 1}", "spec.routers[0].name"),
])
def test_router_errors_name_file_document_and_field(routers, words):
    errs = lab_errors(routers)
    assert any(words in e and e.startswith("bgp.yaml: document 1 (Lab/lab)") for e in errs), errs


def _host_static_routes(lab_doc: str, c) -> dict:
    """LabDaemon's pool routes for a Lab document (no daemon: its two deciding methods on a stand-in)."""
    import types

    from netemu.daemon.lab import LabDaemon

    me = types.SimpleNamespace(lab=load_text(lab_doc, "bgp.yaml").lab)
    me._bgp_pools = types.MethodType(LabDaemon._bgp_pools, me)
    return LabDaemon._pool_routes(me, metallb.load_config(c))


def test_the_host_routes_a_dual_stack_labs_ipv6_pools_via_the_routers_ip6():
    dual = LAB.replace("spec:\n", "spec:\n  network: 192.168.1.0/24,fd00:1::/64\n"
                                 "  podCIDR: 172.16.0.0/16,fd00:10:244::/56\n  serviceCIDR: 10.96.0.0/12,fd00:10:96::/112\n") % \
        "  - {name: r1, ip: 192.168.1.254, asn: 64500}"
    assert load_text(dual, "bgp.yaml").lab.spec.routers[0].ip6 == "fd00:1::254"  # defaulted as a node's
    c = cluster(pool(addresses='10.10.10.0/24, "fd00:10:7::/120", "fd00:1::100/124"'),
                peer(name="r1-v6", address='"fd00:1::254"'), adv())
    # IPv6 ranges via ip6 (not the one inside network6: the host reaches it on its own link), IPv4 via ip
    assert _host_static_routes(dual, c) == {"10.10.10.0/24": "192.168.1.254", "fd00:10:7::/120": "fd00:1::254"}
    v4 = LAB % "  - {name: r1, ip: 192.168.1.254, asn: 64500}"
    assert _host_static_routes(v4, cluster(pool(addresses='10.10.10.0/24, "fd00:10:7::/120"'), peer(), adv())) == {
        "10.10.10.0/24": "192.168.1.254"}  # an IPv4-only lab: no IPv6 route


def test_the_rendering_module_names_what_it_exports():
    assert set(metallb_frr.__all__) <= set(dir(metallb_frr))
