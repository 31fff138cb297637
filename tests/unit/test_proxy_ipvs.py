"""kube-proxy's IPVS mode, rendered without a kernel, against kube-proxy's own expectations.

Scenarios and expectations come from kubernetes pkg/proxy/ipvs/proxier_test.go (v1.31+): the
virtual servers and real servers of its fake IPVS, the entries of its fake ipsets and the
(target, match-set) sequence of each iptables chain (checkIptables), with NewFakeProxier's settings
(node "test-node", no local-traffic detector, no --random-fully, scheduler rr). Test names below
are kube-proxy's. The sync tests check the diff kube-proxy makes (syncService, syncEndpoint,
graceful termination, cleanLegacyService, address unbinding).
"""
from __future__ import annotations

import pytest

from netemu.dataplane.proxy.ipvs.render import (
    FLAG_PERSISTENT,
    IpvsRenderer,
    IpvsSettings,
    RealServer,
    VirtualServer,
    base_jump_rules,
    render,
    set_name,
    sysctls,
)
from netemu.dataplane.proxy.ipvs.sync import (
    IpvsState,
    IpvsSyncer,
    parse_ipvsadm_list,
    parse_ipvsadm_save,
)
from netemu.dataplane.proxy.view import KUBE_PROXY_TEST_OPTIONS, build_view
from kube_objects import NODE, ep, port, slice_, svc

OPTS = {**KUBE_PROXY_TEST_OPTIONS, "masquerade_mark": "0x4000"}


def rs_of(services, slices, *, node_ips=(), family="IPv4", node_port_addresses=(), scheduler="rr", **options):
    """Render as NewFakeProxier would: `node_ips` are the netlink local addresses of the fake."""
    view = build_view(services, slices, node_name=NODE, node_ips=list(node_ips), ip_family=family,
                      node_port_addresses=tuple(node_port_addresses), **{**OPTS, **options})
    return render(view, IpvsSettings(scheduler=scheduler, node_addresses=tuple(node_ips)))


def ipvs_of(ruleset) -> dict:
    """{(ip, port, proto): (scheduler, [(rs ip, rs port, weight)])} like kube-proxy's FakeIPVS."""
    return {(s.vs.address, s.vs.port, s.vs.protocol): (s.vs.scheduler, [(r.address, r.port, r.weight)
                                                                         for r in s.real_servers])
            for s in ruleset.services}


def chain(ruleset, name: str) -> list[tuple[str, str]]:
    """checkIptables: (jump target, match-set or "") of each rule of a chain, nat then filter."""
    out = []
    for rule in ruleset.chain_rules("nat", name) + ruleset.chain_rules("filter", name):
        args = rule.split()
        target = args[args.index("-j") + 1]
        mset = args[args.index("--match-set") + 1] if "--match-set" in args else ""
        out.append((target, mset))
    return out


def entries(ruleset, name: str) -> set[str]:
    return set(ruleset.ipset_entries[name])


# --------------------------------------------------------------------------- TestNodePortIPv4
def np_svc(protocol="TCP", **extra):
    return svc("ns1", "svc1", type="NodePort", clusterIP="10.20.30.41",
               ports=[port(protocol=protocol, nodePort=3001)], **extra)


def np_slice(protocol="TCP", endpoints=None, address_type="IPv4", n=1):
    return slice_("ns1", "svc1", endpoints or [ep("10.180.0.1")], [port(protocol=protocol)], n=n,
                  address_type=address_type)


def test_node_port_ipv4_two_families_of_endpoints():
    r = rs_of([np_svc()], [np_slice(), np_slice(endpoints=[ep("1002:ab8::2:10")], address_type="IPv6", n=2)],
              node_ips=["100.101.102.103", "2001:db8::1:1"])
    assert ipvs_of(r) == {
        ("10.20.30.41", 80, "TCP"): ("rr", [("10.180.0.1", 80, 1)]),
        ("100.101.102.103", 3001, "TCP"): ("rr", [("10.180.0.1", 80, 1)]),
    }


def test_node_port_ipv4_udp():
    r = rs_of([np_svc("UDP")], [np_slice("UDP")], node_ips=["100.101.102.103"], node_port_addresses=["0.0.0.0/0"])
    assert ipvs_of(r) == {
        ("10.20.30.41", 80, "UDP"): ("rr", [("10.180.0.1", 80, 1)]),
        ("100.101.102.103", 3001, "UDP"): ("rr", [("10.180.0.1", 80, 1)]),
    }
    assert entries(r, "KUBE-NODE-PORT-UDP") == {"3001"}
    assert chain(r, "KUBE-NODE-PORT") == [("KUBE-MARK-MASQ", "KUBE-NODE-PORT-UDP"),
                                          ("ACCEPT", "KUBE-HEALTH-CHECK-NODE-PORT")]
    assert chain(r, "KUBE-SERVICES") == [("RETURN", ""), ("KUBE-MARK-MASQ", "KUBE-CLUSTER-IP"),
                                         ("KUBE-NODE-PORT", ""), ("ACCEPT", "KUBE-CLUSTER-IP")]


def test_node_port_ipv4_no_endpoints():
    r = rs_of([np_svc()], [], node_ips=["100.101.102.103"])
    assert ipvs_of(r) == {("10.20.30.41", 80, "TCP"): ("rr", []), ("100.101.102.103", 3001, "TCP"): ("rr", [])}


def test_node_port_ipv4_sctp_multiple_node_ips():
    ips = ["100.101.102.103", "100.101.102.104", "100.101.102.105", "2001:db8::1:1", "2001:db8::1:2", "2001:db8::1:3"]
    r = rs_of([np_svc("SCTP")], [np_slice("SCTP")], node_ips=ips)
    assert ipvs_of(r) == {("10.20.30.41", 80, "SCTP"): ("rr", [("10.180.0.1", 80, 1)]),
                          **{(ip, 3001, "SCTP"): ("rr", [("10.180.0.1", 80, 1)]) for ip in ips[:3]}}
    assert entries(r, "KUBE-NODE-PORT-SCTP-HASH") == {f"{ip},sctp:3001" for ip in ips[:3]}


def test_node_port_ipv4_sctp_external_traffic_policy_local():
    r = rs_of([np_svc("SCTP", externalTrafficPolicy="Local")],
              [np_slice("SCTP", endpoints=[ep("10.180.0.1", NODE), ep("10.180.1.1", "other-node")])],
              node_ips=["100.101.102.103"])
    assert ipvs_of(r) == {
        ("10.20.30.41", 80, "SCTP"): ("rr", [("10.180.0.1", 80, 1), ("10.180.1.1", 80, 1)]),
        ("100.101.102.103", 3001, "SCTP"): ("rr", [("10.180.0.1", 80, 1)]),
    }
    assert entries(r, "KUBE-NODE-PORT-SCTP-HASH") == {"100.101.102.103,sctp:3001"}
    assert entries(r, "KUBE-NODE-PORT-LOCAL-SCTP-HASH") == {"100.101.102.103,sctp:3001"}
    assert chain(r, "KUBE-NODE-PORT") == [("RETURN", "KUBE-NODE-PORT-LOCAL-SCTP-HASH"),
                                          ("KUBE-MARK-MASQ", "KUBE-NODE-PORT-SCTP-HASH"),
                                          ("ACCEPT", "KUBE-HEALTH-CHECK-NODE-PORT")]
    sctp = [rule for rule in r.nat_rules if "KUBE-NODE-PORT-SCTP-HASH" in rule]
    assert sctp == ['-A KUBE-NODE-PORT -p sctp -m comment --comment "Kubernetes nodeport SCTP port for masquerade '
                    "purpose with type 'hash ip:port'\" -m set --match-set KUBE-NODE-PORT-SCTP-HASH dst,dst "
                    "-j KUBE-MARK-MASQ"]


# --------------------------------------------------------------------------- TestNodePortIPv6
def test_node_port_ipv6_two_families_of_endpoints():
    r = rs_of([svc("ns1", "svc1", type="NodePort", clusterIP="2020::1", ports=[port(nodePort=3001)])],
              [np_slice(), np_slice(endpoints=[ep("1002:ab8::2:10")], address_type="IPv6", n=2)],
              node_ips=["100.101.102.103", "2001:db8::1:1"], family="IPv6")
    assert ipvs_of(r) == {
        ("2001:db8::1:1", 3001, "TCP"): ("rr", [("1002:ab8::2:10", 80, 1)]),
        ("2020::1", 80, "TCP"): ("rr", [("1002:ab8::2:10", 80, 1)]),
    }
    text = r.ipvsadm_restore()
    assert "-A -t [2020::1]:80 -s rr\n-a -t [2020::1]:80 -r [1002:ab8::2:10]:80 -m -w 1\n" in text
    assert r.address_cidrs() == ("2020::1/128",)
    assert "create KUBE-6-CLUSTER-IP hash:ip,port family inet6 hashsize 1024 maxelem 65536" in r.ipset_restore()
    assert r.chain_rules("nat", "KUBE-SERVICES")[0] == "-A KUBE-SERVICES -s ::1/128 -j RETURN"


def test_node_port_ipv6_ipv4_service_is_ignored():
    r = rs_of([np_svc("UDP")], [np_slice("UDP", address_type="IPv6")], node_ips=["100.101.102.103"],
              node_port_addresses=["0.0.0.0/0"], family="IPv6")
    assert ipvs_of(r) == {}


def test_node_port_ipv6_sctp_multiple_node_ips():
    r = rs_of([svc("ns1", "svc1", type="NodePort", clusterIP="2020::1", ports=[port(protocol="SCTP", nodePort=3001)])],
              [slice_("ns1", "svc1", [ep("2001::1")], [port(protocol="SCTP")], address_type="IPv6")],
              node_ips=["2001:db8::1:1", "2001:db8::1:2"], family="IPv6")
    assert set(ipvs_of(r)) == {("2001:db8::1:1", 3001, "SCTP"), ("2001:db8::1:2", 3001, "SCTP"),
                               ("2020::1", 80, "SCTP")}
    assert entries(r, "KUBE-NODE-PORT-SCTP-HASH") == {"2001:db8::1:1,sctp:3001", "2001:db8::1:2,sctp:3001"}
    assert set_name("KUBE-NODE-PORT-LOCAL-SCTP-HASH", "IPv6") == "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS"  # 31 chars


# --------------------------------------------------------------------------- TestIPv4Proxier / TestIPv6Proxier
def two_family_services():
    return ([svc("ns1", "svc1", clusterIP="10.20.30.41", ports=[port()]),
             svc("ns2", "svc2", clusterIP="1002:ab8::2:1", ports=[port("p8080", 8080)])],
            [slice_("ns1", "svc1", [ep("10.180.0.1")], [port()]),
             slice_("ns2", "svc2", [ep("1009:ab8::5:6")], [port("p8080", 8080)], address_type="IPv6")])


def test_ipv4_proxier():
    r = rs_of(*two_family_services())
    assert ipvs_of(r) == {("10.20.30.41", 80, "TCP"): ("rr", [("10.180.0.1", 80, 1)])}
    r = rs_of([svc("ns1", "svc1", clusterIP="10.20.30.41", ports=[port()])], [])
    assert ipvs_of(r) == {("10.20.30.41", 80, "TCP"): ("rr", [])}


def test_ipv6_proxier():
    r = rs_of(*two_family_services(), family="IPv6")
    assert ipvs_of(r) == {("1002:ab8::2:1", 8080, "TCP"): ("rr", [("1009:ab8::5:6", 8080, 1)])}
    r = rs_of([svc("ns1", "svc1", clusterIP="2001::1", ports=[port()])], [], family="IPv6")
    assert ipvs_of(r) == {("2001::1", 80, "TCP"): ("rr", [])}


# --------------------------------------------------------------------------- TestMasqueradeRule
@pytest.mark.parametrize("random_fully", [False, True])
def test_masquerade_rule(random_fully):
    r = rs_of([], [], random_fully=random_fully)
    masq = [x for x in r.chain_rules("nat", "KUBE-POSTROUTING") if "-j MASQUERADE" in x]
    assert masq == ['-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
                    "-j MASQUERADE" + (" --random-fully" if random_fully else "")]


# --------------------------------------------------------------------------- external IPs
def test_external_ips_no_endpoint():
    r = rs_of([svc("ns1", "svc1", type="ClusterIP", clusterIP="10.20.30.41", externalIPs=["50.60.70.81"],
                   ports=[port(targetPort=80)])], [])
    assert ipvs_of(r) == {("10.20.30.41", 80, "TCP"): ("rr", []), ("50.60.70.81", 80, "TCP"): ("rr", [])}


def test_external_ips():
    # the endpoint's port is UDP: no endpoint for the TCP service port
    r = rs_of([svc("ns1", "svc1", type="ClusterIP", clusterIP="10.20.30.41",
                   externalIPs=["50.60.70.81", "2012::51", "127.0.0.1"], ports=[port(targetPort=80)])],
              [slice_("ns1", "svc1", [ep("10.180.0.1")], [port(protocol="UDP")])])
    assert set(ipvs_of(r)) == {("10.20.30.41", 80, "TCP"), ("50.60.70.81", 80, "TCP"), ("127.0.0.1", 80, "TCP")}
    assert all(rs == [] for _, rs in ipvs_of(r).values())
    assert entries(r, "KUBE-EXTERNAL-IP") == {"50.60.70.81,tcp:80", "127.0.0.1,tcp:80"}
    assert r.addresses == ("10.20.30.41", "50.60.70.81", "127.0.0.1")


def test_only_local_external_ips():
    r = rs_of([svc("ns1", "svc1", type="NodePort", clusterIP="10.20.30.41", externalTrafficPolicy="Local",
                   externalIPs=["50.60.70.81", "2012::51", "127.0.0.1"], ports=[port(targetPort=80)])],
              [slice_("ns1", "svc1", [ep("10.180.0.1", NODE), ep("10.180.1.1", "other-node")], [port()])])
    assert len(r.services) == 3
    for ip in ("50.60.70.81", "127.0.0.1"):
        assert ipvs_of(r)[(ip, 80, "TCP")] == ("rr", [("10.180.0.1", 80, 1)])
    assert entries(r, "KUBE-EXTERNAL-IP-LOCAL") == {"50.60.70.81,tcp:80", "127.0.0.1,tcp:80"}
    assert entries(r, "KUBE-EXTERNAL-IP") == set()


def test_external_ip_on_a_node_address_is_not_bound():
    r = rs_of([svc("ns1", "svc1", clusterIP="10.20.30.41", externalIPs=["100.101.102.103"], ports=[port()])], [],
              node_ips=["100.101.102.103"])
    assert r.addresses == ("10.20.30.41",)
    assert ("100.101.102.103", 80, "TCP") in ipvs_of(r)


# --------------------------------------------------------------------------- load balancers
def lb_svc(**extra):
    status = extra.pop("status", {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}})
    return svc("ns1", "svc1", type="LoadBalancer", clusterIP="10.20.30.41", status=status, **extra)


def test_load_balancer():
    r = rs_of([lb_svc(ports=[port(nodePort=3001)])], [slice_("ns1", "svc1", [ep("10.180.0.1")], [port(protocol="UDP")])])
    assert len(r.services) == 2   # ClusterIP and LB IP (the fake has no node address for the NodePort)
    assert entries(r, "KUBE-LOAD-BALANCER") == {"1.2.3.4,tcp:80"}
    assert chain(r, "KUBE-SERVICES") == [
        ("RETURN", ""), ("KUBE-LOAD-BALANCER", "KUBE-LOAD-BALANCER"), ("KUBE-MARK-MASQ", "KUBE-CLUSTER-IP"),
        ("KUBE-NODE-PORT", ""), ("ACCEPT", "KUBE-CLUSTER-IP"), ("ACCEPT", "KUBE-LOAD-BALANCER")]
    assert chain(r, "KUBE-LOAD-BALANCER") == [("KUBE-MARK-MASQ", "")]
    assert set(r.addresses) == {"10.20.30.41", "1.2.3.4"}


def test_only_local_load_balancing():
    r = rs_of([lb_svc(ports=[port(nodePort=3001)], externalTrafficPolicy="Local")],
              [slice_("ns1", "svc1", [ep("10.180.0.1", NODE), ep("10.180.1.1", "other-node")], [port()])])
    assert len(r.services) == 2
    assert ipvs_of(r)[("1.2.3.4", 80, "TCP")] == ("rr", [("10.180.0.1", 80, 1)])
    assert entries(r, "KUBE-LOAD-BALANCER") == entries(r, "KUBE-LOAD-BALANCER-LOCAL") == {"1.2.3.4,tcp:80"}
    assert chain(r, "KUBE-SERVICES") == [
        ("RETURN", ""), ("KUBE-LOAD-BALANCER", "KUBE-LOAD-BALANCER"), ("KUBE-MARK-MASQ", "KUBE-CLUSTER-IP"),
        ("KUBE-NODE-PORT", ""), ("ACCEPT", "KUBE-CLUSTER-IP"), ("ACCEPT", "KUBE-LOAD-BALANCER")]
    assert chain(r, "KUBE-LOAD-BALANCER") == [("RETURN", "KUBE-LOAD-BALANCER-LOCAL"), ("KUBE-MARK-MASQ", "")]


def test_load_balancer_source_ranges():
    r = rs_of([lb_svc(ports=[port()], loadBalancerSourceRanges=["10.0.0.0/8"])],
              [slice_("ns1", "svc1", [ep("10.180.0.1")], [port()])])
    assert ipvs_of(r)[("1.2.3.4", 80, "TCP")] == ("rr", [("10.180.0.1", 80, 1)])
    assert entries(r, "KUBE-LOAD-BALANCER") == entries(r, "KUBE-LOAD-BALANCER-FW") == {"1.2.3.4,tcp:80"}
    assert entries(r, "KUBE-LOAD-BALANCER-SOURCE-CIDR") == {"1.2.3.4,tcp:80,10.0.0.0/8"}
    assert chain(r, "KUBE-PROXY-FIREWALL") == [("KUBE-SOURCE-RANGES-FIREWALL", "KUBE-LOAD-BALANCER-FW")]
    assert chain(r, "KUBE-SOURCE-RANGES-FIREWALL") == [("RETURN", "KUBE-LOAD-BALANCER-SOURCE-CIDR"), ("DROP", "")]
    # the (unset) node IP is in no source range: the node itself may not reach the LB IP (issue 119656)
    assert r.chain_rules("filter", "KUBE-IPVS-OUT-FILTER") == [
        "-A KUBE-IPVS-OUT-FILTER -s 1.2.3.4 -m ipvs --vaddr 1.2.3.4 --vproto tcp --vport 80 -j DROP"]


def test_load_balancer_source_ranges_allow_the_node():
    r = rs_of([lb_svc(ports=[port()], loadBalancerSourceRanges=["100.101.102.0/24"])], [],
              node_ips=["100.101.102.103"])
    assert entries(r, "KUBE-LOAD-BALANCER-SOURCE-IP") == {"1.2.3.4,tcp:80,1.2.3.4"}
    assert r.chain_rules("filter", "KUBE-IPVS-OUT-FILTER") == []
    assert chain(r, "KUBE-SOURCE-RANGES-FIREWALL") == [("RETURN", "KUBE-LOAD-BALANCER-SOURCE-CIDR"),
                                                       ("RETURN", "KUBE-LOAD-BALANCER-SOURCE-IP"), ("DROP", "")]


def test_accept_ipvs_traffic():
    services = [
        svc("ns1", "svc1", type="ClusterIP", clusterIP="10.20.30.40", externalIPs=["5.6.7.8"],
            ports=[port(nodePort=80)]),
        svc("ns1", "svc2", type="LoadBalancer", clusterIP="10.20.30.41", ports=[port(nodePort=80)],
            status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}),
        svc("ns1", "svc3", type="NodePort", clusterIP="10.20.30.42", ports=[port(nodePort=80)]),
    ]
    r = rs_of(services, [])
    assert chain(r, "KUBE-SERVICES") == [
        ("RETURN", ""), ("KUBE-LOAD-BALANCER", "KUBE-LOAD-BALANCER"), ("KUBE-MARK-MASQ", "KUBE-CLUSTER-IP"),
        ("KUBE-MARK-MASQ", "KUBE-EXTERNAL-IP"), ("ACCEPT", "KUBE-EXTERNAL-IP"), ("ACCEPT", "KUBE-EXTERNAL-IP"),
        ("KUBE-NODE-PORT", ""), ("ACCEPT", "KUBE-CLUSTER-IP"), ("ACCEPT", "KUBE-LOAD-BALANCER")]
    ext = [x for x in r.nat_rules if "KUBE-EXTERNAL-IP dst,dst -m" in x]
    assert ext == [
        '-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port for masquerade and filter purpose" '
        "-m set --match-set KUBE-EXTERNAL-IP dst,dst -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT",
        '-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port for masquerade and filter purpose" '
        "-m set --match-set KUBE-EXTERNAL-IP dst,dst -m addrtype --dst-type LOCAL -j ACCEPT"]


@pytest.mark.parametrize("ip_mode,expected", [("Proxy", 1), ("VIP", 2), (None, 2)])
def test_load_balancer_ingress_route_type_proxy(ip_mode, expected):
    ingress = {"ip": "1.2.3.4", **({"ipMode": ip_mode} if ip_mode else {})}
    r = rs_of([lb_svc(ports=[port(nodePort=3001)], status={"loadBalancer": {"ingress": [ingress]}})],
              [slice_("ns1", "svc1", [ep("10.180.0.1")], [port()])])
    assert len(r.services) == expected


# --------------------------------------------------------------------------- NodePorts and health checks
def test_only_local_node_ports():
    r = rs_of([np_svc(externalTrafficPolicy="Local")],
              [np_slice(endpoints=[ep("10.180.0.1", NODE), ep("10.180.1.1", "other-node")])],
              node_ips=["100.101.102.103", "2001:db8::"], node_port_addresses=["100.101.102.0/24"])
    assert len(r.services) == 2
    assert ipvs_of(r)[("100.101.102.103", 3001, "TCP")] == ("rr", [("10.180.0.1", 80, 1)])
    assert entries(r, "KUBE-NODE-PORT-TCP") == entries(r, "KUBE-NODE-PORT-LOCAL-TCP") == {"3001"}
    assert chain(r, "KUBE-SERVICES") == [("RETURN", ""), ("KUBE-MARK-MASQ", "KUBE-CLUSTER-IP"),
                                         ("KUBE-NODE-PORT", ""), ("ACCEPT", "KUBE-CLUSTER-IP")]
    assert chain(r, "KUBE-NODE-PORT") == [("RETURN", "KUBE-NODE-PORT-LOCAL-TCP"),
                                          ("KUBE-MARK-MASQ", "KUBE-NODE-PORT-TCP"),
                                          ("ACCEPT", "KUBE-HEALTH-CHECK-NODE-PORT")]


def test_health_check_node_port():
    def hc(name, policy, hc_port):
        return svc("ns1", name, type="LoadBalancer", clusterIP="10.20.30.41", externalTrafficPolicy=policy,
                   healthCheckNodePort=hc_port, ports=[port(nodePort=3000)])
    r = rs_of([hc("valid-svc1", "Local", 30000), hc("valid-svc2", "Local", 30001), hc("invalid-svc3", "Cluster", 30002)],
              [], node_ips=["100.101.102.103", "2001:db8::"], node_port_addresses=["100.101.102.0/24"])
    assert entries(r, "KUBE-HEALTH-CHECK-NODE-PORT") == {"30000", "30001"}
    assert chain(r, "KUBE-NODE-PORT") == [("RETURN", "KUBE-NODE-PORT-LOCAL-TCP"),
                                          ("KUBE-MARK-MASQ", "KUBE-NODE-PORT-TCP"),
                                          ("ACCEPT", "KUBE-HEALTH-CHECK-NODE-PORT")]


def test_node_port_on_every_node_address_but_loopback():
    r = rs_of([np_svc()], [], node_ips=["192.168.1.101", "127.0.0.1", "172.16.1.1", "fe80::1"])
    assert {k[0] for k in ipvs_of(r) if k[1] == 3001} == {"192.168.1.101", "172.16.1.1"}


# --------------------------------------------------------------------------- TestSessionAffinity
def test_session_affinity():
    r = rs_of([svc("ns1", "svc1", type="NodePort", clusterIP="10.20.30.41", externalIPs=["50.60.70.81"],
                   sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 10800}},
                   ports=[port(nodePort=3001)])], [], node_ips=["100.101.102.103"])
    assert len(r.services) == 3
    for s in r.services:
        assert s.vs.flags & FLAG_PERSISTENT and s.vs.timeout == 10800
    assert "-A -t 10.20.30.41:80 -s rr -p 10800\n" in r.ipvsadm_restore()


def test_scheduler_and_mh_source_hash_flag():
    r = rs_of([svc("ns1", "svc1", clusterIP="10.20.30.41", ports=[port()])], [], scheduler="mh")
    assert r.ipvsadm_restore() == "-A -t 10.20.30.41:80 -s mh -b mh-port\n"
    r = rs_of([svc("ns1", "svc1", clusterIP="10.20.30.41", ports=[port()])], [], scheduler="wlc")
    assert r.ipvsadm_restore() == "-A -t 10.20.30.41:80 -s wlc\n"


# --------------------------------------------------------------------------- endpoints
def e2e_service(**spec):
    return svc("ns1", "svc1", clusterIP="172.20.1.1", selector={"foo": "bar"},
               ports=[port("", 80, targetPort=80)], **spec)


def e2e_slice(endpoints):
    return slice_("ns1", "svc1", endpoints, [port("", 80)])


def test_endpoint_slice_e2e():
    r = rs_of([e2e_service()], [e2e_slice([ep("10.0.1.1", NODE, ready=True), ep("10.0.1.2", "node2", ready=True),
                                           ep("10.0.1.3", "node3", ready=True), ep("10.0.1.4", "node3", ready=False)])])
    assert entries(r, "KUBE-LOOP-BACK") == {"10.0.1.1,tcp:80,10.0.1.1"}
    assert len(r.services) == 1
    assert [str(x) for x in r.services[0].real_servers] == ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]
    r = rs_of([e2e_service()], [])
    assert entries(r, "KUBE-LOOP-BACK") == set() and r.services[0].real_servers == ()


@pytest.mark.parametrize("policy,nodes,local_entries,expected", [
    ("Cluster", [NODE, "node1", "node2"], 1, ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]),
    ("Cluster", ["node0", "node1", "node2"], 0, ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]),
    ("Local", [NODE, "node1", "node2"], 1, ["10.0.1.1:80"]),
    ("Local", ["node0", "node1", "node2"], 0, []),
])
def test_internal_traffic_policy_e2e(policy, nodes, local_entries, expected):
    eps = [ep(f"10.0.1.{i + 1}", n, ready=True) for i, n in enumerate(nodes)]
    r = rs_of([e2e_service(internalTrafficPolicy=policy)], [e2e_slice(eps)])
    assert len(entries(r, "KUBE-LOOP-BACK")) == local_entries
    assert [str(x) for x in r.services[0].real_servers] == expected


def terminating_endpoints(only_terminating: bool):
    t = dict(ready=False, serving=True, terminating=True)
    if only_terminating:
        return [ep("10.0.1.1", NODE, **t), ep("10.0.1.2", NODE, **t),
                ep("10.0.1.3", NODE, ready=False, serving=False, terminating=True),
                ep("10.0.1.4", "another-node", **t),
                ep("10.0.1.5", "another-node", ready=False, serving=False, terminating=False)]
    return [ep("10.0.1.1", NODE, ready=True, serving=True, terminating=False),
            ep("10.0.1.2", NODE, ready=True, serving=True, terminating=False),
            ep("10.0.1.3", NODE, **t), ep("10.0.1.4", NODE, ready=False, serving=False, terminating=True),
            ep("10.0.1.5", "another-node", ready=True, serving=True, terminating=False)]


def terminating_case(policy, only_terminating, ready_b5=False):
    eps = terminating_endpoints(only_terminating)
    if ready_b5:
        eps[4] = ep("10.0.1.5", "another-node", ready=True, serving=True, terminating=False)
    r = rs_of([svc("ns1", "svc1", clusterIP="172.20.1.1", type="NodePort", externalTrafficPolicy=policy,
                   internalTrafficPolicy="Cluster", externalIPs=["1.2.3.4"], ports=[port("", 80, targetPort=80)])],
              [e2e_slice(eps)])
    got = {s.vs.address: [str(x) for x in s.real_servers] for s in r.services}
    return r, got


def test_endpoint_slice_ready_and_terminating_cluster():
    r, got = terminating_case("Cluster", False)
    assert len(entries(r, "KUBE-LOOP-BACK")) == 4
    assert len(r.services) == 2
    assert got["172.20.1.1"] == got["1.2.3.4"] == ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"]


def test_endpoint_slice_ready_and_terminating_local():
    r, got = terminating_case("Local", False)
    assert len(entries(r, "KUBE-LOOP-BACK")) == 4
    assert got["172.20.1.1"] == ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"]
    assert got["1.2.3.4"] == ["10.0.1.1:80", "10.0.1.2:80"]


def test_endpoint_slice_only_ready_and_terminating_cluster():
    r, got = terminating_case("Cluster", True)
    assert len(entries(r, "KUBE-LOOP-BACK")) == 3
    assert got["172.20.1.1"] == got["1.2.3.4"] == ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.4:80"]


def test_endpoint_slice_only_ready_and_terminating_local():
    r, got = terminating_case("Local", True, ready_b5=True)
    assert len(entries(r, "KUBE-LOOP-BACK")) == 3
    assert got["172.20.1.1"] == ["10.0.1.5:80"]
    assert got["1.2.3.4"] == ["10.0.1.1:80", "10.0.1.2:80"]


# --------------------------------------------------------------------------- chains and node-wide rules
def test_create_and_link_kube_chain():
    text = rs_of([], []).iptables_restore()
    nat, flt = text.split("*filter\n")
    assert [x for x in nat.splitlines() if x.startswith(":")] == [
        ":KUBE-SERVICES - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-NODE-PORT - [0:0]",
        ":KUBE-LOAD-BALANCER - [0:0]", ":KUBE-MARK-MASQ - [0:0]"]
    assert [x for x in flt.splitlines() if x.startswith(":")] == [
        ":KUBE-FORWARD - [0:0]", ":KUBE-NODE-PORT - [0:0]", ":KUBE-PROXY-FIREWALL - [0:0]",
        ":KUBE-SOURCE-RANGES-FIREWALL - [0:0]", ":KUBE-IPVS-FILTER - [0:0]", ":KUBE-IPVS-OUT-FILTER - [0:0]"]
    assert base_jump_rules()[0] == ("nat", "OUTPUT", '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
    assert len(base_jump_rules()) == 9


@pytest.mark.parametrize("family,src", [("IPv4", "127.0.0.0/8"), ("IPv6", "::1/128")])
def test_dismiss_localhost_rule_exist(family, src):
    r = rs_of([], [], family=family)
    assert r.chain_rules("nat", "KUBE-SERVICES")[0] == f"-A KUBE-SERVICES -s {src} -j RETURN"


def test_empty_node_rules_are_kube_proxys():
    """The whole payload of a node without services (writeIptablesRules with every set empty)."""
    assert rs_of([], []).iptables_restore() == """*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT
COMMIT
"""


def test_cluster_ip_masquerade_variants():
    services = [svc("ns1", "svc1", clusterIP="10.20.30.41", ports=[port()])]
    head = ('-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" '
            "-m set --match-set KUBE-CLUSTER-IP ")
    rule = lambda r: [x for x in r.nat_rules if x.startswith(head)]  # noqa: E731
    assert rule(rs_of(services, [])) == [head + "src,dst -j KUBE-MARK-MASQ"]            # no local detector
    assert rule(rs_of(services, [], cluster_cidr="10.0.0.0/8")) == [head + "dst,dst ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"]
    assert rule(rs_of(services, [], masquerade_all=True)) == [head + "dst,dst -j KUBE-MARK-MASQ"]


def test_ipset_restore_creates_every_set():
    text = rs_of([], []).ipset_restore()
    assert text.count("create ") == 17
    assert "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535\n" in text
    assert "create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536\n" in text


def test_sysctls():
    assert sysctls(IpvsSettings(), "6.1.0-56-amd64") == (
        ("net.ipv4.vs.conntrack", "1"), ("net.ipv4.vs.expire_nodest_conn", "1"),
        ("net.ipv4.vs.expire_quiescent_template", "1"), ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.arp_ignore", "1"), ("net.ipv4.conf.all.arp_announce", "2"))
    assert ("net.ipv4.vs.conn_reuse_mode", "0") in sysctls(IpvsSettings(), "5.4.0-100-generic")
    assert len(sysctls(IpvsSettings(strict_arp=False), "6.1.0")) == 4


# --------------------------------------------------------------------------- TestMultiPortServiceBindAddr
def test_multi_port_service_bind_addr():
    def service(*ports):
        return svc("ns1", "svc1", type="ClusterIP", clusterIP="172.16.55.4", ports=list(ports))
    p1, p2, p3 = port("port1", 1234), port("port2", 1235), port("port3", 1236, "UDP")
    syncer = IpvsSyncer()
    views = [service(p1, p2), service(p1), service(p1, p2, p3)]
    for s in views:
        plan = syncer.sync(build_view([s], [], node_name=NODE, **OPTS))
        syncer.committed()
        assert plan.state.addresses == frozenset({"172.16.55.4"})
    plan = syncer.sync(build_view([], [], node_name=NODE, **OPTS))
    assert plan.state.addresses == frozenset()
    unbind = [s for s in plan.steps if s.name == "unbind"]
    assert unbind and unbind[0].stdin == "address del 172.16.55.4/32 dev kube-ipvs0\n"


# --------------------------------------------------------------------------- the sync (diff)
def view_of(services, slices, **options):
    return build_view(services, slices, node_name=NODE, node_ips=["100.101.102.103"], **{**OPTS, **options})


def step(plan, name):
    found = [s for s in plan.steps if s.name == name]
    return found[0].stdin if found else None


def test_first_sync_of_a_fresh_node():
    v = view_of([np_svc()], [np_slice()])
    plan = IpvsSyncer(IpvsSettings(node_addresses=("100.101.102.103",))).sync(v)
    assert plan.full
    assert [s.name for s in plan.steps] == ["kube-ipvs0", "ipset", "ipvs", "sysctl", "iptables"]
    assert step(plan, "kube-ipvs0") == "link add kube-ipvs0 type dummy\naddress add 10.20.30.41/32 dev kube-ipvs0\n"
    assert step(plan, "ipvs") == plan.ruleset.ipvsadm_restore()
    assert step(plan, "ipset") == plan.ruleset.ipset_restore()
    ipt = step(plan, "iptables")
    assert ipt.count("-I ") == 9 and "-I INPUT 1 -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER" in ipt
    assert "\n".join(x for x in ipt.splitlines() if not x.startswith("-I ")) + "\n" == plan.ruleset.iptables_restore()
    assert [s.argv for s in plan.steps] == [("ip", "-batch", "-"), ("ipset", "-exist", "restore"), ("ipvsadm", "-R"),
                                            plan.steps[3].argv, ("iptables-restore", "--noflush", "-w")]


def test_nothing_changed_nothing_sent():
    v = view_of([np_svc()], [np_slice()])
    syncer = IpvsSyncer()
    syncer.sync(v)
    syncer.committed()
    assert syncer.sync(view_of([np_svc()], [np_slice()])).empty


def test_endpoint_added_and_tcp_endpoint_removed_gracefully():
    syncer = IpvsSyncer(IpvsSettings(node_addresses=("100.101.102.103",)))
    syncer.sync(view_of([np_svc()], [np_slice(endpoints=[ep("10.180.0.1"), ep("10.180.0.2")])]))
    syncer.committed()
    plan = syncer.sync(view_of([np_svc()], [np_slice(endpoints=[ep("10.180.0.2"), ep("10.180.0.3")])]))
    syncer.committed()
    assert [s.name for s in plan.steps] == ["ipvs"]
    assert step(plan, "ipvs") == (
        "-a -t 10.20.30.41:80 -r 10.180.0.3:80 -m -w 1\n-e -t 10.20.30.41:80 -r 10.180.0.1:80 -m -w 0\n"
        "-a -t 100.101.102.103:3001 -r 10.180.0.3:80 -m -w 1\n-e -t 100.101.102.103:3001 -r 10.180.0.1:80 -m -w 0\n")
    assert syncer.graceful == {(("TCP", "10.20.30.41", 80), ("10.180.0.1", 80)),
                               (("TCP", "100.101.102.103", 3001), ("10.180.0.1", 80))}
    # kube-proxy's check: still connected -> stays at weight 0; no connection left -> deleted
    conns = {(("TCP", "10.20.30.41", 80), ("10.180.0.1", 80)): 2}
    reap = syncer.reap(conns)
    assert reap.stdin == "-d -t 100.101.102.103:3001 -r 10.180.0.1:80\n"
    assert syncer.graceful == {(("TCP", "10.20.30.41", 80), ("10.180.0.1", 80))}
    assert ("10.180.0.1", 80) not in syncer.state.dests[("TCP", "100.101.102.103", 3001)]
    # the endpoint comes back while draining: weight 1 again
    plan = syncer.sync(view_of([np_svc()], [np_slice(endpoints=[ep(f"10.180.0.{i}") for i in (1, 2, 3)])]))
    assert step(plan, "ipvs") == ("-e -t 10.20.30.41:80 -r 10.180.0.1:80 -m -w 1\n"
                                  "-a -t 100.101.102.103:3001 -r 10.180.0.1:80 -m -w 1\n")
    assert plan.graceful == frozenset()


def test_udp_endpoint_removed_at_once():
    syncer = IpvsSyncer()
    syncer.sync(view_of([np_svc("UDP")], [np_slice("UDP", endpoints=[ep("10.180.0.1"), ep("10.180.0.2")])]))
    syncer.committed()
    plan = syncer.sync(view_of([np_svc("UDP")], [np_slice("UDP", endpoints=[ep("10.180.0.2")])]))
    assert "-d -u 10.20.30.41:80 -r 10.180.0.1:80\n" in step(plan, "ipvs")
    assert plan.graceful == frozenset()


def test_sync_service_updates_changed_virtual_server():
    """Test_syncService: scheduler or persistence changes edit the virtual server (-E), no re-create."""
    syncer = IpvsSyncer()
    syncer.sync(view_of([svc("ns1", "svc1", clusterIP="1.2.3.4", ports=[port(port=8080)])], []))
    syncer.committed()
    plan = syncer.sync(view_of([svc("ns1", "svc1", clusterIP="1.2.3.4", ports=[port(port=8080)],
                                    sessionAffinity="ClientIP")], []))
    assert step(plan, "ipvs") == "-E -t 1.2.3.4:8080 -s rr -p 10800\n"


def test_clean_legacy_service_and_ipset_members():
    syncer = IpvsSyncer(IpvsSettings(node_addresses=("100.101.102.103",)))
    syncer.sync(view_of([np_svc()], [np_slice()]))
    syncer.committed()
    plan = syncer.sync(view_of([], []))
    assert step(plan, "ipvs-delete") == "-D -t 10.20.30.41:80\n-D -t 100.101.102.103:3001\n"
    assert step(plan, "ipset") == ("del KUBE-CLUSTER-IP 10.20.30.41,tcp:80\ndel KUBE-NODE-PORT-TCP 3001\n"
                                   "del KUBE-IPVS-IPS 10.20.30.41\n")
    names = [s.name for s in plan.steps]
    assert names.index("iptables") < names.index("unbind") < names.index("ipvs-delete")


def test_update_weights_on_restart():
    """Test_syncEndpoint_updateWeightsOnRestart: a real server left at weight 0 goes back to 1."""
    observed = IpvsState.parse("-A -t 10.20.30.41:80 -s rr\n-a -t 10.20.30.41:80 -r 10.180.0.1:80 -m -w 0\n",
                               ["10.20.30.41"], "", "")
    plan = IpvsSyncer().sync(view_of([svc("ns1", "svc1", clusterIP="10.20.30.41", ports=[port()])],
                                     [np_slice()]), observed)
    assert step(plan, "ipvs") == "-e -t 10.20.30.41:80 -r 10.180.0.1:80 -m -w 1\n"
    assert step(plan, "kube-ipvs0") is None


def test_observed_jumps_are_not_inserted_twice():
    save = "*nat\n" + "".join(f"-A {c} {a}\n" for t, c, a in base_jump_rules() if t == "nat") + "COMMIT\n*filter\n" + \
        "".join(f"-A {c} {a}\n" for t, c, a in base_jump_rules() if t == "filter") + "COMMIT\n"
    observed = IpvsState.parse("", [], "", save)
    plan = IpvsSyncer().sync(view_of([], []), observed)
    assert "-I " not in step(plan, "iptables")


def test_failed_plan_forgets_state():
    syncer = IpvsSyncer()
    syncer.sync(view_of([np_svc()], []))
    syncer.failed()
    assert syncer.state is None
    assert syncer.sync(view_of([np_svc()], [])).full


def test_ipvsadm_save_round_trip():
    r = rs_of([svc("ns1", "svc1", type="NodePort", clusterIP="10.20.30.41", sessionAffinity="ClientIP",
                   ports=[port(nodePort=3001), port("dns", 53, "UDP"), port("s", 99, "SCTP")])],
              [slice_("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.0.2")], [port(), port("dns", 53, "UDP"),
                                                                               port("s", 99, "SCTP")])],
              node_ips=["100.101.102.103"])
    services, dests = parse_ipvsadm_save(r.ipvsadm_restore())
    assert services == r.virtual_servers()
    assert dests == {k: {rs.key: rs.weight for rs in v} for k, v in r.real_servers().items()}
    assert "-A --sctp-service 10.20.30.41:99 -s rr -p 10800\n" in r.ipvsadm_restore()


def test_parse_ipvsadm_list_connections():
    text = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.50:80 rr
  -> 172.16.1.10:8080             Masq    1      0          6
  -> 172.16.1.11:8080             Masq    0      2          4
"""
    assert parse_ipvsadm_list(text) == {(("TCP", "10.96.0.50", 80), ("172.16.1.10", 8080)): 6,
                                        (("TCP", "10.96.0.50", 80), ("172.16.1.11", 8080)): 6}


def test_renderer_reuses_unchanged_ports():
    a = svc("ns1", "a", clusterIP="10.0.0.1", ports=[port()])
    b = svc("ns1", "b", clusterIP="10.0.0.2", ports=[port()])
    v1 = view_of([a, b], [])
    renderer = IpvsRenderer()
    first = renderer.render(v1)
    v2 = v1.with_service("ns1/b", None)
    second = renderer.render(v2)
    assert [s.vs.address for s in second.services] == ["10.0.0.1"]
    assert second.services[0] is first.services[0]
    assert renderer.render(v1).ipvsadm_restore() == first.ipvsadm_restore()


def test_virtual_server_text():
    vs = VirtualServer("UDP", "10.96.0.10", 53, "rr", FLAG_PERSISTENT, 60)
    assert vs.ipvsadm_args() == "-u 10.96.0.10:53 -s rr -p 60"
    assert str(vs) == "10.96.0.10:53/UDP"
    assert str(RealServer("fd00::1", 53)) == "[fd00::1]:53"
