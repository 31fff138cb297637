"""kube-proxy's iptables mode, rendered without a kernel, against kube-proxy's own expectations.

Scenarios and expected texts come from kubernetes pkg/proxy/iptables/proxier_test.go (v1.31+):
TestOverallIPTablesRules, TestBadIPs, TestSyncProxyRulesRepeated, TestSyncProxyRulesLargeClusterMode,
TestComputeProbability, TestNodePorts, TestDropInvalidRule, TestMasqueradeRule,
TestLoadBalancerIngressRouteTypeProxy. Inputs use kube-proxy's test conventions (node
"test-node" 192.168.0.2, pod CIDR 10.0.0.0/8) and NewFakeProxier's settings
(KUBE_PROXY_TEST_OPTIONS). Expected payloads live in fixtures/kubeproxy/.
"""
from __future__ import annotations

import pathlib
import re
import time

import pytest

from netemu.dataplane.proxy.iptables.chains import endpoint_chain, probability, service_chain
from netemu.dataplane.proxy.iptables.render import base_jump_rules, canary_chains, render
from netemu.dataplane.proxy.iptables.sync import IptablesSyncer
from netemu.dataplane.proxy.view import KUBE_PROXY_TEST_OPTIONS, build_view, go_hex_mark
from kube_objects import NODE, ep, port, slice_, svc, overall_inputs

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "kubeproxy"
NODE_IPS = ["192.168.0.2", "192.168.1.2", "192.168.99.11"]


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def view_of(services, slices, **options):
    opts = {**KUBE_PROXY_TEST_OPTIONS, **options}
    return build_view(services, slices, node_name=NODE, node_ips=NODE_IPS, cluster_cidr="10.0.0.0/8", **opts)


def payload_diff(expected: str, actual: str) -> str:
    import difflib
    return "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), "expected", "actual"))


def assert_payload(expected: str, actual: str) -> None:
    assert actual == expected, payload_diff(expected, actual)


# --------------------------------------------------------------------------- TestOverallIPTablesRules
def test_overall_ruleset_is_byte_identical_to_kube_proxy():
    assert_payload(fixture("overall.rules"), render(view_of(*overall_inputs())).payload())


def test_overall_ruleset_does_not_depend_on_input_order():
    services, slices = overall_inputs()
    forward = render(view_of(services, slices)).payload()
    backward = render(view_of(services[::-1], slices[::-1])).payload()
    assert forward == backward


def test_kube_proxy_write_order_has_the_same_rules_grouped_per_service():
    rs = render(view_of(*overall_inputs()))
    raw = rs.payload(order="kube-proxy").splitlines()
    canonical = rs.payload().splitlines()
    assert sorted(raw) == sorted(canonical)
    # kube-proxy writes the top-level chains first, then each service's chains in turn
    nat_decls = [l for l in raw[raw.index("*nat"):] if l.startswith(":")]
    assert nat_decls[:4] == [":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]",
                             ":KUBE-POSTROUTING - [0:0]", ":KUBE-MARK-MASQ - [0:0]"]
    assert nat_decls[4:6] == [":KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]", ":KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]"]
    # the masquerade rule for ClusterIP traffic precedes the service's other chain rules
    nat = raw[raw.index("*nat"):]
    svc2 = [l for l in nat if "GNZBNJ2PO5MGZ6GT" in l and l.startswith("-A KUBE-SVC") or l.startswith("-A KUBE-EXT-GNZ")]
    assert "KUBE-MARK-MASQ" in svc2[0] and svc2[0].startswith("-A KUBE-SVC-GNZBNJ2PO5MGZ6GT")
    # the NodePort catch-all stays last, after any deletions
    assert nat[-2].startswith('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports')


# --------------------------------------------------------------------------- TestBadIPs
def test_bad_ips_are_normalised_in_rules_and_chain_hashes():
    services = [svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.041", ports=[port(nodePort=3001)],
                    externalIPs=["192.168.099.022"], loadBalancerSourceRanges=["203.0.113.000/025"],
                    status={"loadBalancer": {"ingress": [{"ip": "1.2.3.004"}]}})]
    slices = [slice_("ns1", "svc1", [ep("10.180.00.001")], [port()])]
    assert_payload(fixture("bad_ips.rules"), render(view_of(services, slices)).payload())


def test_unparseable_addresses_are_dropped_not_rendered():
    services = [svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.41", ports=[port(nodePort=3001)],
                    externalIPs=["not-an-ip", "", "192.168.99.22", "fd00::1"],
                    loadBalancerSourceRanges=["garbage", "203.0.113.0/25"],
                    status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "lb.example"}]}})]
    slices = [slice_("ns1", "svc1", [ep("10.180.0.1"), ep("999.1.1.1"), ep("fd00::2")], [port()])]
    out = render(view_of(services, slices)).payload()
    assert "not-an-ip" not in out and "garbage" not in out and "999." not in out and "fd00" not in out
    assert out.count("--to-destination") == 1
    assert '-d 192.168.99.22 --dport 80 -j KUBE-EXT-' in out


# --------------------------------------------------------------------------- chain names
@pytest.mark.parametrize("name,proto,endpoint,chain", [
    ("ns1/svc1:p80", "TCP", None, "KUBE-SVC-XPGD46QRK7WJZT7O"),
    ("ns2/svc2:p8080", "TCP", None, "KUBE-SVC-2VJB64SDSIJUP5T6"),
    ("ns4/svc4:p8082", "TCP", None, "KUBE-SVC-EBDQOQU5SJFXRIL3"),
    ("ns1/svc1:p80", "TCP", "10.180.0.1:80", "KUBE-SEP-SXIVWICOYRO3J4NJ"),
    ("ns1/svc1:p80", "TCP", "10.0.0.0:80", "KUBE-SEP-DKGQUZGBKLTPAR56"),
    ("ns3/svc3:p8081", "TCP", "203.0.113.4:8081", "KUBE-SEP-RUVVH7YV3PHQBDOS"),
    ("ns4/svc4:p8082", "TCP", "10.4.0.1:8082", "KUBE-SEP-SU5STNODRYEWJAUF"),
])
def test_chain_name_hashes_match_kube_proxy(name, proto, endpoint, chain):
    got = service_chain(name, proto) if endpoint is None else endpoint_chain(name, proto, endpoint)
    assert got == chain


def test_protocol_is_part_of_the_hash():
    assert service_chain("ns/s:dns", "UDP") != service_chain("ns/s:dns", "TCP")


# --------------------------------------------------------------------------- probabilities
@pytest.mark.parametrize("n,text", [(1, "1.0000000000"), (2, "0.5000000000"), (3, "0.3333333333"),
                                    (10, "0.1000000000"), (100, "0.0100000000"), (1000, "0.0010000000"),
                                    (10000, "0.0001000000"), (100000, "0.0000100000"),
                                    (100001, "0.0000099999")])
def test_probability_formatting_matches_go(n, text):
    assert probability(n) == text


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_endpoint_selection_uses_one_over_remaining(count):
    eps = [ep(f"10.180.0.{i}") for i in range(1, count + 1)]
    rs = render(view_of([svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port()])],
                        [slice_("ns1", "svc1", eps, [port()])]))
    jumps = [r for r in rs.chain("nat", "KUBE-SVC-XPGD46QRK7WJZT7O") if "-j KUBE-SEP-" in r]
    assert len(jumps) == count
    for i, rule in enumerate(jumps):
        m = re.search(r"--probability (\S+)", rule)
        if i < count - 1:
            assert m and m.group(1) == probability(count - i)
        else:
            assert m is None  # the last endpoint takes whatever is left
    assert [r.split("-> ")[1].split('"')[0] for r in jumps] == [f"10.180.0.{i}:80" for i in range(1, count + 1)]


def test_probability_rules_of_a_ten_endpoint_service():
    eps = [ep(f"10.180.0.{i}") for i in range(10)]
    rs = render(view_of([svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port()])],
                        [slice_("ns1", "svc1", eps, [port()])]))
    probs = [re.search(r"--probability (\S+)", r).group(1)
             for r in rs.chain("nat", "KUBE-SVC-XPGD46QRK7WJZT7O") if "--probability" in r]
    assert probs == ["0.1000000000", "0.1111111111", "0.1250000000", "0.1428571429", "0.1666666667",
                     "0.2000000000", "0.2500000000", "0.3333333333", "0.5000000000"]


# --------------------------------------------------------------------------- node-wide rules
def test_real_kube_proxy_mark_and_masquerade_defaults():
    # A real kube-proxy formats the mark with Go's %#08x and has --random-fully on this iptables.
    view = build_view([], [], node_name=NODE, node_ips=NODE_IPS, cluster_cidr="10.0.0.0/8")
    rs = render(view)
    assert go_hex_mark(14) == "0x00004000"
    assert rs.chain("nat", "KUBE-MARK-MASQ") == ("-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000",)
    assert rs.chain("nat", "KUBE-POSTROUTING") == (
        "-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE '
        "--random-fully",
    )
    assert rs.chain("filter", "KUBE-FORWARD")[0] == "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"


@pytest.mark.parametrize("random_fully,suffix", [(False, ""), (True, " --random-fully")])
def test_masquerade_rule(random_fully, suffix):
    rs = render(view_of([], [], random_fully=random_fully))
    assert rs.chain("nat", "KUBE-POSTROUTING")[2].endswith("-j MASQUERADE" + suffix)


@pytest.mark.parametrize("nfacct,liberal,drop", [
    (False, False, "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"),
    (True, False, "-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name "
                  "ct_state_invalid_dropped_pkts -j DROP"),
    (False, True, None),
])
def test_drop_invalid_rule(nfacct, liberal, drop):
    rs = render(view_of([], [], nfacct=nfacct, conntrack_tcp_be_liberal=liberal))
    tail = ('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 '
            "-j ACCEPT",
            '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack '
            "--ctstate RELATED,ESTABLISHED -j ACCEPT")
    assert rs.chain("filter", "KUBE-FORWARD") == ((drop,) if drop else ()) + tail


NODEPORTS_LAST = ('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
                  'the last rule in this chain"')


@pytest.mark.parametrize("localhost,addresses,last_rules,firewall", [
    (True, (), [f"{NODEPORTS_LAST} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"], True),
    (False, (), [f"{NODEPORTS_LAST} -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS"], False),
    (False, ("192.168.0.0/24", "127.0.0.1/32"), [f"{NODEPORTS_LAST} -d 192.168.0.2 -j KUBE-NODEPORTS"], False),
    (True, ("192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"),
     [f"{NODEPORTS_LAST} -d 192.168.0.2 -j KUBE-NODEPORTS", f"{NODEPORTS_LAST} -d 192.168.1.2 -j KUBE-NODEPORTS"],
     False),
    (True, ("127.0.0.0/8",), [f"{NODEPORTS_LAST} -d 127.0.0.1 -j KUBE-NODEPORTS"], True),
])
def test_node_ports_with_nodeport_addresses_and_localhost(localhost, addresses, last_rules, firewall):
    services = [svc("ns1", "svc1", type="NodePort", clusterIP="172.30.0.41", ports=[port(nodePort=3001)])]
    slices = [slice_("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.2.1", NODE)], [port()])]
    rs = render(view_of(services, slices, localhost_nodeports=localhost, node_port_addresses=addresses))
    assert [r for r in rs.chain("nat", "KUBE-SERVICES") if r.startswith(NODEPORTS_LAST)] == last_rules
    assert ("KUBE-FIREWALL" in rs.chain_names("filter")) is firewall
    localhost_rule = [r for r in rs.chain("nat", "KUBE-NODEPORTS") if "127.0.0.0/8" in r]
    assert bool(localhost_rule) is firewall  # the nfacct-counted localhost rule needs localhost NodePorts


def test_health_check_node_port_only_for_local_load_balancers():
    services = [
        svc("ns1", "lb-local", type="LoadBalancer", externalTrafficPolicy="Local", clusterIP="172.30.0.41",
            ports=[port(nodePort=3001)], healthCheckNodePort=30000),
        svc("ns2", "lb-cluster", type="LoadBalancer", clusterIP="172.30.0.42", ports=[port(nodePort=3002)],
            healthCheckNodePort=30001),
    ]
    rs = render(view_of(services, []))
    assert rs.chain("filter", "KUBE-NODEPORTS") == (
        '-A KUBE-NODEPORTS -m comment --comment "ns1/lb-local:p80 health check node port" -m tcp -p tcp '
        "--dport 30000 -j ACCEPT",)


@pytest.mark.parametrize("ip_mode,present", [("Proxy", False), ("VIP", True), (None, True)])
def test_load_balancer_ingress_ip_mode(ip_mode, present):
    ingress = {"ip": "1.2.3.4"} | ({"ipMode": ip_mode} if ip_mode else {})
    services = [svc("ns1", "svc1", type="LoadBalancer", clusterIP="10.20.30.41", ports=[port(nodePort=3001)],
                    status={"loadBalancer": {"ingress": [ingress]}})]
    rs = render(view_of(services, [slice_("ns1", "svc1", [ep("10.180.0.1")], [port()])]))
    assert any("-d 1.2.3.4 " in r for r in rs.chain("nat", "KUBE-SERVICES")) is present


def test_masquerade_all_and_no_local_detector():
    services = [svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port()])]
    slices = [slice_("ns1", "svc1", [ep("10.180.0.1")], [port()])]
    rule = '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80'
    all_ = render(view_of(services, slices, masquerade_all=True)).chain("nat", "KUBE-SVC-XPGD46QRK7WJZT7O")
    assert all_[0] == f"{rule} -j KUBE-MARK-MASQ"
    no_detector = build_view(services, slices, node_name=NODE, node_ips=NODE_IPS, cluster_cidr=None,
                             **KUBE_PROXY_TEST_OPTIONS)
    assert "KUBE-MARK-MASQ" not in render(no_detector).chain("nat", "KUBE-SVC-XPGD46QRK7WJZT7O")[0]


def test_source_range_containing_the_node_ip_allows_the_lb_vip_as_source():
    services = [svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.41", ports=[port(nodePort=3001)],
                    loadBalancerSourceRanges=["192.168.0.0/24", " 203.0.113.0/25"],
                    status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"ip": "5.6.7.8"}]}})]
    rs = render(view_of(services, [slice_("ns1", "svc1", [ep("10.180.0.1")], [port()])]))
    fw = rs.chain("nat", "KUBE-FW-XPGD46QRK7WJZT7O")
    head = '-A KUBE-FW-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 loadbalancer IP"'
    assert fw == (f"{head} -s 192.168.0.0/24 -j KUBE-EXT-XPGD46QRK7WJZT7O",
                  f"{head} -s 203.0.113.0/25 -j KUBE-EXT-XPGD46QRK7WJZT7O",
                  f"{head} -s 1.2.3.4 -j KUBE-EXT-XPGD46QRK7WJZT7O",
                  f"{head} -s 5.6.7.8 -j KUBE-EXT-XPGD46QRK7WJZT7O",
                  '-A KUBE-FW-XPGD46QRK7WJZT7O -m comment --comment "other traffic to ns1/svc1:p80 will be '
                  'dropped by KUBE-PROXY-FIREWALL"')
    assert len(rs.chain("filter", "KUBE-PROXY-FIREWALL")) == 2


# --------------------------------------------------------------------------- terminating endpoints
def _terminating_case(policy: str, endpoints: list) -> tuple:
    service = svc("ns1", "svc1", clusterIP="172.30.1.1", type="LoadBalancer", externalTrafficPolicy=policy,
                  ports=[port(name="", targetPort=80)], healthCheckNodePort=30000,
                  status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}})
    rs = render(view_of([service], [slice_("ns1", "svc1", endpoints, [port(name="")])]))
    def dnat_targets(chain_prefix):
        chains = [c for c in rs.chain_names("nat") if c.startswith(chain_prefix)]
        targets = set()
        for c in chains:
            for rule in rs.chain("nat", c):
                sep = rule.rsplit("-j ", 1)[1]
                if sep.startswith("KUBE-SEP-"):
                    targets.add(rs.chain("nat", sep)[1].rsplit(" ", 1)[1])
        return sorted(targets)
    return rs, dnat_targets("KUBE-SVC-"), dnat_targets("KUBE-SVL-")


def test_terminating_endpoints_unused_while_ready_ones_exist():
    eps = [ep("10.0.1.1", NODE, ready=True, serving=True, terminating=False),
           ep("10.0.1.2", NODE, ready=True, serving=True, terminating=False),
           ep("10.0.1.3", NODE, ready=False, serving=True, terminating=True),
           ep("10.0.1.4", NODE, ready=False, serving=False, terminating=True),
           ep("10.0.1.5", "node-1", ready=True, serving=True, terminating=False)]
    rs, cluster, local = _terminating_case("Local", eps)
    assert cluster == ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"]
    assert local == ["10.0.1.1:80", "10.0.1.2:80"]


def test_only_serving_terminating_endpoints_are_a_fallback():
    eps = [ep("10.0.1.2", NODE, ready=False, serving=True, terminating=True),
           ep("10.0.1.3", NODE, ready=False, serving=True, terminating=True),
           ep("10.0.1.4", NODE, ready=False, serving=False, terminating=True),
           ep("10.0.1.5", "node-1", ready=True, serving=True, terminating=False)]
    rs, cluster, local = _terminating_case("Local", eps)
    assert cluster == ["10.0.1.5:80"]
    assert local == ["10.0.1.2:80", "10.0.1.3:80"]
    # Cluster policy: with no ready endpoint anywhere, all serving+terminating ones are used
    eps[-1] = ep("10.0.1.5", "another-node", ready=False, serving=True, terminating=True)
    _, cluster, _ = _terminating_case("Cluster", eps)
    assert cluster == ["10.0.1.2:80", "10.0.1.3:80", "10.0.1.5:80"]


def test_remote_terminating_endpoint_prevents_reject_but_external_traffic_drops():
    rs, cluster, local = _terminating_case("Local", [ep("10.0.1.5", "node-1", ready=False, serving=True,
                                                          terminating=True)])
    assert cluster == ["10.0.1.5:80"] and local == []
    assert rs.chain("filter", "KUBE-EXTERNAL-SERVICES") == (
        '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1 has no local endpoints" -m tcp -p tcp '
        "-d 1.2.3.4 --dport 80 -j DROP",)


def test_no_usable_endpoints_reject_everything():
    eps = [ep("10.0.1.5", NODE, ready=False, serving=False, terminating=True),
           ep("10.0.1.5", "node-1", ready=False, serving=False, terminating=True)]
    rs, cluster, local = _terminating_case("Local", eps)
    assert cluster == [] and local == []
    assert rs.chain("filter", "KUBE-SERVICES") == (
        '-A KUBE-SERVICES -m comment --comment "ns1/svc1 has no endpoints" -m tcp -p tcp -d 172.30.1.1 '
        "--dport 80 -j REJECT",)
    assert all("REJECT" in r for r in rs.chain("filter", "KUBE-EXTERNAL-SERVICES"))


def test_internal_traffic_policy_local_without_local_endpoints_drops():
    service = svc("ns1", "svc1", clusterIP="172.30.1.1", internalTrafficPolicy="Local", ports=[port(name="")])
    slices = [slice_("ns1", "svc1", [ep("10.0.1.1", "node0"), ep("10.0.1.2", "node1")], [port(name="")])]
    rs = render(view_of([service], slices))
    assert rs.chain("filter", "KUBE-SERVICES") == (
        '-A KUBE-SERVICES -m comment --comment "ns1/svc1 has no local endpoints" -m tcp -p tcp -d 172.30.1.1 '
        "--dport 80 -j DROP",)
    assert not [c for c in rs.chain_names("nat") if c.startswith(("KUBE-SVC", "KUBE-SVL", "KUBE-SEP"))]


# --------------------------------------------------------------------------- large cluster mode
def test_large_cluster_mode_drops_endpoint_comments():
    services = [svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port()]),
                svc("ns2", "svc2", clusterIP="172.30.0.42", ports=[port("p8080", 8080)])]
    small = [slice_("ns1", "svc1", [ep(f"10.0.{i % 256}.{i // 256}") for i in range(499)], [port()]),
             slice_("ns2", "svc2", [ep(f"10.1.{i % 256}.{i // 256}") for i in range(499)], [port("p8080", 8080)])]
    out = render(view_of(services, small)).payload()
    assert "-A KUBE-SEP-DKGQUZGBKLTPAR56 -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT " \
           "--to-destination 10.0.0.0:80" in out.splitlines()
    big = small + [slice_("ns1", "svc1", [ep(f"10.2.0.{i}") for i in range(1, 5)], [port()], n=2)]
    out = render(view_of(services, big)).payload()
    lines = out.splitlines()
    assert "-A KUBE-SEP-DKGQUZGBKLTPAR56 -m tcp -p tcp -j DNAT --to-destination 10.0.0.0:80" in lines
    assert not [l for l in lines if l.startswith(("-A KUBE-SEP", "-A KUBE-SVC")) and "->" in l]


# --------------------------------------------------------------------------- base jumps
def test_base_jump_rules_are_kube_proxys():
    rules = base_jump_rules()
    assert len(rules) == 14
    assert str(rules[0]) == ("iptables -t filter -I INPUT -m conntrack --ctstate NEW -m comment --comment "
                             "'kubernetes externally-visible service portals' -j KUBE-EXTERNAL-SERVICES")
    assert rules[10].insert_argv() == ["-t", "nat", "-I", "PREROUTING", "-m", "comment", "--comment",
                                       "kubernetes service portals", "-j", "KUBE-SERVICES"]
    assert rules[-1].check_argv() == ["-t", "filter", "-C", "OUTPUT", "-j", "KUBE-FIREWALL"]
    assert {(r.table, r.target) for r in rules} >= {("nat", "KUBE-POSTROUTING"), ("filter", "KUBE-FORWARD"),
                                                    ("filter", "KUBE-PROXY-FIREWALL")}
    assert ("mangle", "KUBE-PROXY-CANARY") in canary_chains()
    # none of them is in the restore payload
    payload = render(view_of([], [])).payload()
    assert "-A PREROUTING" not in payload and "-A INPUT" not in payload


# --------------------------------------------------------------------------- TestSyncProxyRulesRepeated
class RepeatedScenario:
    """The object changes of kube-proxy's TestSyncProxyRulesRepeated, as successive views."""

    def __init__(self):
        self.services = {
            "ns1/svc1": svc("ns1", "svc1", type="ClusterIP", clusterIP="172.30.0.41", ports=[port()]),
            "ns2/svc2": svc("ns2", "svc2", type="ClusterIP", clusterIP="172.30.0.42", ports=[port("p8080", 8080)]),
        }
        self.slices = {
            "ns1/svc1": slice_("ns1", "svc1", [ep("10.0.1.1")], [port()]),
            "ns2/svc2": slice_("ns2", "svc2", [ep("10.0.2.1")], [port("p8080", 8080)]),
        }

    def view(self):
        return view_of(list(self.services.values()), list(self.slices.values()))

    def steps(self):
        yield "repeated_1_initial.rules", None
        self.services["ns3/svc3"] = svc("ns3", "svc3", type="ClusterIP", clusterIP="172.30.0.43", ports=[port()])
        self.slices["ns3/svc3"] = slice_("ns3", "svc3", [ep("10.0.3.1")], [port()])
        yield "repeated_2_add_svc3.rules", {"ns3/svc3"}
        del self.services["ns2/svc2"]  # its slice stays: endpoints without a Service render nothing
        yield "repeated_3_delete_svc2.rules", {"ns2/svc2"}
        self.services["ns4/svc4"] = svc("ns4", "svc4", type="ClusterIP", clusterIP="172.30.0.44", ports=[port()])
        yield "repeated_4_add_svc4_without_endpoints.rules", {"ns4/svc4"}
        self.slices["ns4/svc4"] = slice_("ns4", "svc4", [ep("10.0.4.1")], [port()])
        yield "repeated_5_svc4_endpoints.rules", {"ns4/svc4"}
        self.slices["ns3/svc3"] = slice_("ns3", "svc3", [ep("10.0.3.2")], [port()])
        yield "repeated_6_svc3_endpoint_changed.rules", {"ns3/svc3"}
        self.slices["ns3/svc3"] = slice_("ns3", "svc3", [ep("10.0.3.2"), ep("10.0.3.3")], [port()])
        yield "repeated_7_svc3_endpoint_added.rules", {"ns3/svc3"}
        yield "repeated_8_no_change.rules", set()


@pytest.mark.parametrize("hinted", [False, True], ids=["scan", "changed-hint"])
def test_repeated_syncs_in_kube_proxy_mode_match_kube_proxy(hinted):
    scenario = RepeatedScenario()
    syncer = IptablesSyncer(kube_proxy_compatible=True)
    for name, changed in scenario.steps():
        result = syncer.sync(scenario.view(), changed=changed if hinted else None)
        assert result.full is (changed is None)
        assert_payload(fixture(name), result.payload)
    # A partial restore that fails (kube-proxy's test forces one) makes the next sync full, and
    # that full sync still deletes what the failed one meant to delete.
    del scenario.services["ns4/svc4"]
    partial = syncer.sync(scenario.view(), changed={"ns4/svc4"} if hinted else None)
    assert partial.deleted["nat"] == ("KUBE-SEP-AYCN5HPXMIRJNJXU", "KUBE-SVC-4SW47YFZTEDKD3PK")
    syncer.failed()
    result = syncer.sync(scenario.view())
    assert result.full
    assert_payload(fixture("repeated_9_full_resync.rules"), result.payload)
    # in kube-proxy's own write order the deletions come just before the NodePort catch-all
    raw = result.ruleset.payload(order="kube-proxy").splitlines()
    assert raw[-4:] == ["-X KUBE-SEP-AYCN5HPXMIRJNJXU", "-X KUBE-SVC-4SW47YFZTEDKD3PK",
                        NODEPORTS_LAST + " -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS", "COMMIT"]


def test_repeated_syncs_in_minimal_mode_send_only_changed_chains():
    scenario = RepeatedScenario()
    syncer = IptablesSyncer()
    steps = scenario.steps()
    name, _ = next(steps)
    first = syncer.sync(scenario.view())
    assert_payload(fixture(name), first.payload)

    next(steps)  # add svc3 with one endpoint: its chains and the KUBE-SERVICES jump
    r = syncer.sync(scenario.view())
    assert r.written == {"filter": (), "nat": ("KUBE-SERVICES", "KUBE-SEP-BSWRHOQ77KEXZLNL",
                                               "KUBE-SVC-X27LE4BHSL4DOUIK")}
    assert r.payload.startswith("*nat\n")  # nothing in filter changed: the table is left out

    next(steps)  # delete svc2
    r = syncer.sync(scenario.view())
    assert r.written["nat"] == ("KUBE-SERVICES",)
    assert r.deleted["nat"] == ("KUBE-SEP-UHEGFW77JX3KXTOV", "KUBE-SVC-2VJB64SDSIJUP5T6")
    assert r.payload.endswith("-X KUBE-SEP-UHEGFW77JX3KXTOV\n-X KUBE-SVC-2VJB64SDSIJUP5T6\nCOMMIT\n")
    assert ":KUBE-SVC-2VJB64SDSIJUP5T6 - [0:0]" in r.payload  # declared (flushed) before -X

    next(steps)  # svc4 without endpoints: only the filter REJECT
    r = syncer.sync(scenario.view())
    assert r.written == {"filter": ("KUBE-SERVICES",), "nat": ()}
    assert "*nat" not in r.payload and "-j REJECT" in r.payload

    next(steps)  # svc4 gets an endpoint: REJECT goes, jump and chains come
    r = syncer.sync(scenario.view())
    assert set(r.written["filter"]) == {"KUBE-SERVICES"}
    assert set(r.written["nat"]) == {"KUBE-SERVICES", "KUBE-SVC-4SW47YFZTEDKD3PK", "KUBE-SEP-AYCN5HPXMIRJNJXU"}

    next(steps)  # svc3's endpoint changes IP: KUBE-SERVICES is untouched
    r = syncer.sync(scenario.view())
    assert set(r.written["nat"]) == {"KUBE-SVC-X27LE4BHSL4DOUIK", "KUBE-SEP-DKCFIS26GWF2WLWC"}
    assert r.deleted["nat"] == ("KUBE-SEP-BSWRHOQ77KEXZLNL",)
    assert r.payload == (
        "*nat\n:KUBE-SEP-BSWRHOQ77KEXZLNL - [0:0]\n:KUBE-SEP-DKCFIS26GWF2WLWC - [0:0]\n"
        ":KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]\n"
        "-A KUBE-SEP-DKCFIS26GWF2WLWC -m comment --comment ns3/svc3:p80 -s 10.0.3.2 -j KUBE-MARK-MASQ\n"
        "-A KUBE-SEP-DKCFIS26GWF2WLWC -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT "
        "--to-destination 10.0.3.2:80\n"
        '-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp '
        "-d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ\n"
        '-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.0.3.2:80" '
        "-j KUBE-SEP-DKCFIS26GWF2WLWC\n"
        "-X KUBE-SEP-BSWRHOQ77KEXZLNL\nCOMMIT\n")

    next(steps)  # an endpoint is added: the existing endpoint's chain is unchanged, not resent
    r = syncer.sync(scenario.view())
    assert set(r.written["nat"]) == {"KUBE-SVC-X27LE4BHSL4DOUIK", "KUBE-SEP-JVVZVJ7BSEPPRNBS"}

    next(steps)  # no change at all: nothing to send
    r = syncer.sync(scenario.view())
    assert r.empty and r.payload == ""


def test_minimal_mode_converges_to_the_full_render():
    """Applying every partial payload to the first full one yields the full render of the end state."""
    scenario = RepeatedScenario()
    syncer = IptablesSyncer()
    state: dict[str, dict[str, tuple]] = {}
    for _, changed in scenario.steps():
        apply_restore(state, syncer.sync(scenario.view(), changed=changed).payload)
    expected: dict[str, dict[str, tuple]] = {}
    apply_restore(expected, render(scenario.view()).payload())
    assert state == expected


def apply_restore(state: dict, payload: str) -> None:
    """A tiny `iptables-restore --noflush`: declarations flush, -A appends, -X deletes."""
    table = None
    for line in payload.splitlines():
        if line.startswith("*"):
            table = state.setdefault(line[1:], {})
        elif line.startswith(":"):
            table[line[1:].split(" ")[0]] = ()
        elif line.startswith("-A "):
            chain = line.split(" ")[1]
            assert chain in table, f"rule for undeclared chain: {line}"
            table[chain] = table[chain] + (line,)
        elif line.startswith("-X "):
            del table[line[3:]]
        else:
            assert line == "COMMIT"
    for chains in state.values():  # every jump target exists
        for rules in chains.values():
            for rule in rules:
                target = rule.split(" -j ")[-1].split(" ")[0] if " -j " in rule else None
                if target and target.startswith("KUBE-"):
                    assert target in chains, f"dangling jump: {rule}"


def test_large_cluster_threshold_crossing_in_kube_proxy_mode_rewrites_only_changed_services():
    services = [svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port()]),
                svc("ns2", "svc2", clusterIP="172.30.0.42", ports=[port("p8080", 8080)]),
                svc("ns3", "svc3", clusterIP="172.30.0.43", ports=[port("p8081", 8081)])]
    slices = [slice_("ns1", "svc1", [ep(f"10.0.{i % 256}.{i // 256}") for i in range(499)], [port()]),
              slice_("ns2", "svc2", [ep(f"10.1.{i % 256}.{i // 256}") for i in range(499)], [port("p8080", 8080)])]
    syncer = IptablesSyncer(kube_proxy_compatible=True)
    syncer.sync(view_of(services, slices))
    slices.append(slice_("ns3", "svc3", [ep("203.0.113.4"), ep("203.0.113.8"), ep("203.0.113.12")],
                         [port("p8081", 8081)]))
    r = syncer.sync(view_of(services, slices))
    dnat = [l for l in r.payload.splitlines() if l.startswith("-A KUBE-SEP-") and "-j DNAT" in l]
    assert len(dnat) == 3 and "-A KUBE-SEP-RUVVH7YV3PHQBDOS -m tcp -p tcp -j DNAT --to-destination " \
                             "203.0.113.4:8081" in dnat
    r = syncer.sync(view_of(services, slices), full=True)
    dnat = [l for l in r.payload.splitlines() if l.startswith("-A KUBE-SEP-") and "-j DNAT" in l]
    assert len(dnat) == 1001 and not [l for l in dnat if "--comment" in l]


# --------------------------------------------------------------------------- scale
def scale_view(n: int, endpoints_per_service: int = 2):
    services, slices = [], []
    for i in range(n):
        ns, name = f"ns{i % 50}", f"svc{i}"
        services.append(svc(ns, name, clusterIP=f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}",
                            ports=[port("http", 80, targetPort=8080)]))
        slices.append(slice_(ns, name, [ep(f"172.16.{(i * endpoints_per_service + k) // 256 % 256}."
                                           f"{(i * endpoints_per_service + k) % 256}", "w1-k8s")
                                        for k in range(endpoints_per_service)], [port("http", 8080)]))
    return build_view(services, slices, node_name="w1-k8s", node_ips=["192.168.1.101"],
                      cluster_cidr="172.16.0.0/16")


def test_one_endpoint_change_at_scale_is_incremental():
    view = scale_view(2000)
    syncer = IptablesSyncer()
    first = syncer.sync(view)
    assert first.full and first.payload.count("-j DNAT") == 4000
    key = "ns7/svc7"
    (old,) = view.services[key]
    new_eps = (old.endpoints[0], type(old.endpoints[0])(ip="172.16.200.200", port=8080, node_name="w1-k8s",
                                                        is_local=True))
    changed_view = view.with_service(key, [type(old)(**{**_fields(old), "endpoints": new_eps})])
    t0 = time.perf_counter()
    r = syncer.sync(changed_view, changed={key})
    elapsed = time.perf_counter() - t0
    assert set(r.written["nat"]) == {service_chain("ns7/svc7:http", "TCP"),
                                     endpoint_chain("ns7/svc7:http", "TCP", "172.16.200.200:8080")}
    assert len(r.deleted["nat"]) == 1 and r.written["filter"] == ()
    assert elapsed < 0.05, elapsed  # generous: a few ms in practice


def _fields(obj) -> dict:
    return {f: getattr(obj, f) for f in obj.__dataclass_fields__}
