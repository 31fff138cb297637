"""kube-proxy's nftables mode, rendered without a kernel, against kube-proxy's own expectations.

Scenarios and expected rulesets come from kubernetes pkg/proxy/nftables/proxier_test.go (v1.33+
base chains): TestOverallNFTablesRules, TestBadIPs, TestSyncProxyRulesRepeated (rulesets and
transaction operation counts), Test_servicePortChainNameBase,
Test_servicePortEndpointChainNameBase, TestLoadBalancerIngressRouteTypeProxy, and the packet flow
tests TestNoEndpointsReject, TestClusterIPGeneral, TestLoadBalancer, TestNodePorts,
TestExternalTrafficPolicyLocal/Cluster, TestInternalTrafficPolicy,
TestTerminatingEndpointsTrafficPolicyCluster/Local, TestInternalExternalMasquerade.

kube-proxy's tests compare the table a sync leaves behind (knftables' Fake.Dump()) after
sortNFTablesTransaction: comments and blank lines dropped, lines ordered by object type and
name, the rules of a chain kept in order. These tests do the same: the transaction render()
writes is applied to NftModel (a model of the kernel's tables that refuses what nft refuses),
dumped, and normalised the same way (nftables.model.normalize). Expected texts live in
fixtures/kubeproxy_nft/. Inputs follow kube-proxy's test conventions: node "test-node",
192.168.0.2, pod CIDR 10.0.0.0/8, Service CIDR 172.30.0.0/16, mark 0x4000,
--nodeport-addresses 192.168.0.2/32 and 2001:db8::1/128.
"""
from __future__ import annotations

import copy
import difflib
import pathlib
import random
from fractions import Fraction

import pytest

from netemu.dataplane.proxy.addresses import IPV6
from netemu.dataplane.proxy.nftables.render import (
    FAST,
    KUBE_PROXY,
    NftSettings,
    endpoint_chain_base,
    hash_and_truncate,
    render,
    service_chain_base,
)
from netemu.dataplane.proxy.nftables.model import NftModel, NftModelError, normalize
from netemu.dataplane.proxy.nftables.sync import NftSyncer
from netemu.dataplane.proxy.nftables.trace import endpoint_probabilities, trace_packet
from netemu.dataplane.proxy.view import KUBE_PROXY_TEST_OPTIONS, build_view, refresh_view
from kube_objects import NODE, ep, port, slice_, svc, overall_inputs

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "kubeproxy_nft"
NODE_IP = "192.168.0.2"
NODE_IP_ALT = "192.168.1.2"
EXTERNAL_IP = "192.168.99.11"
NODE_IP6 = "2001:db8::1"
NODE_IP6_ALT = "2001:db8:1::2"
NODE_IPS = [NODE_IP, NODE_IP_ALT, EXTERNAL_IP, NODE_IP6, NODE_IP6_ALT]
EXTERNAL_CLIENT = "203.0.113.2"
EXTERNAL_CLIENT_BLOCKED = "203.0.113.130"
SETTINGS = NftSettings(service_cidrs=("172.30.0.0/16",))
SETTINGS6 = NftSettings(service_cidrs=("fd00:10:96::/112",))


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def expected(name: str) -> str:
    return normalize(fixture("base.nft") + fixture(name))


# --------------------------------------------------------------------------- inputs
def view_of(services, slices, *, ipv6=False, **options):
    opts = {**KUBE_PROXY_TEST_OPTIONS, "node_port_addresses": (f"{NODE_IP}/32", f"{NODE_IP6}/128"), **options}
    if ipv6:
        opts.setdefault("ip_family", IPV6)
        node_ips = [NODE_IP6, NODE_IP6_ALT, NODE_IP, NODE_IP_ALT, EXTERNAL_IP]
        cidr = options.pop("cluster_cidr", "fd00:10::/64")
    else:
        node_ips = NODE_IPS
        cidr = "10.0.0.0/8"
    cidr = opts.pop("cluster_cidr", cidr)
    return build_view(services, slices, node_name=NODE, node_ips=node_ips, cluster_cidr=cidr, **opts)


def settings_for(view) -> NftSettings:
    return SETTINGS6 if view.options.ip_family == IPV6 else SETTINGS


def diff(expected_text: str, actual: str) -> str:
    return "".join(difflib.unified_diff(expected_text.splitlines(True), actual.splitlines(True), "expected", "actual"))


def assert_same(expected_text: str, actual: str) -> None:
    assert actual == expected_text, diff(expected_text, actual)


def without_stale(model: NftModel, stale) -> str:
    """The model's table, normalised, without the stale chains (which must be empty)."""
    m = copy.deepcopy(model)
    t = m.only_table()
    for name in stale:
        assert t.chains[name].rules == [], name
        del t.chains[name]
    return normalize(m.dump())


def state_of(text: str, model: NftModel | None = None) -> NftModel:
    m = model or NftModel()
    m.apply(text)
    return m


# --------------------------------------------------------------------------- names
@pytest.mark.parametrize("ns,name,port_name,proto,expected_name", [
    ("testing", "service", "http", "tcp", "P4ZYZVCF-testing/service/tcp/http"),
    ("testing", "service", "https", "tcp", "LZBRENCP-testing/service/tcp/https"),
    ("very-long-namespace-name-abcdefghijklmnopqrstuvwxyz0123456789xx",
     "very-long-service-name-why-would-you-even-do-this-i-mean-really",
     "port-443-providing-the-hypertext-transmission-protocol-with-tls", "sctp",
     "KR6NACJP-very-long-namespace-name-abcdefghijklmnopqrstuvwxyz0123456789xx/very-long-service-name-why-would-"
     "you-even-do-this-i-mean-really/sctp/port-443-providing-the-hypertext-transmission-protocol-with-tls"),
])
def test_service_chain_names_match_kube_proxy(ns, name, port_name, proto, expected_name):
    assert service_chain_base(ns, name, proto, port_name) == expected_name


_LONG = ("very-long-namespace-name-abcdefghijklmnopqrstuvwxyz0123456789xx",
         "very-long-service-name-why-would-you-even-do-this-i-mean-really",
         "port-443-providing-the-hypertext-transmission-protocol-with-tls")
_LONG_TEXT = "/".join(_LONG[:2]) + "/sctp/" + _LONG[2]


@pytest.mark.parametrize("spn,proto,ip,epport,expected_name", [
    (("testing", "service", "http"), "tcp", "10.180.0.1", 80, "JO2XBXZR-testing/service/tcp/http__10.180.0.1/80"),
    (("testing", "service", "http"), "tcp", "10.180.0.2", 80, "5S6H3H22-testing/service/tcp/http__10.180.0.2/80"),
    (("testing", "service", "http"), "tcp", "fd80:abcd:12::a1b2:c3d4:e5f6:9999", 80,
     "U7E2ET36-testing/service/tcp/http__fd80.abcd.12..a1b2.c3d4.e5f6.9999/80"),
    (_LONG, "sctp", "1234:5678:9abc:def0::abc:1234", 443,
     f"5YS7AFEA-{_LONG_TEXT}__1234.5678.9abc.def0..abc.1234/443"),
    (_LONG, "sctp", "1234:5678:9abc:def0::abcd:1234:5678", 443, f"CI6C53Q3-{_LONG_TEXT}__1234.5678.9abc.def0..abcd.1234..."),
    (_LONG, "sctp", "1234:5678:9abc:def0::abcd:1234:8765", 443, f"2FLXFK6X-{_LONG_TEXT}__1234.5678.9abc.def0..abcd.1234..."),
])
def test_endpoint_chain_names_match_kube_proxy(spn, proto, ip, epport, expected_name):
    assert endpoint_chain_base(spn[0], spn[1], proto, spn[2], ip, epport) == expected_name


def test_truncated_names_fit_nftables():
    assert len("endpoint-" + hash_and_truncate("x" * 400)) <= 256


# --------------------------------------------------------------------------- TestOverallNFTablesRules
def test_overall_ruleset_matches_kube_proxy():
    rs = render(view_of(*overall_inputs()), SETTINGS)
    assert_same(expected("overall.nft"), rs.normalized())


def test_overall_ruleset_does_not_depend_on_input_order():
    services, slices = overall_inputs()
    assert render(view_of(services, slices), SETTINGS).text() == \
        render(view_of(services[::-1], slices[::-1]), SETTINGS).text()


def test_full_sync_transaction_is_kube_proxys():
    """The text is a kube-proxy full sync: each base chain re-created once, every object added
    and flushed before use, every element container flushed before the elements are added."""
    text = render(view_of(*overall_inputs()), SETTINGS).text()
    lines = text.splitlines()
    assert lines[0] == 'add table ip kube-proxy { comment "rules for kube-proxy" ; }'
    assert lines[1:3] == ["add chain ip kube-proxy filter-prerouting-pre-dnat",
                          "delete chain ip kube-proxy filter-prerouting-pre-dnat"]
    assert "add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }" in lines
    for name in ("cluster-ips", "service-ips", "firewall-ips", "no-endpoint-services", "no-endpoint-nodeports",
                 "service-nodeports"):
        kind = "set" if name == "cluster-ips" else "map"
        flush = lines.index(f"flush {kind} ip kube-proxy {name}")
        first = next(i for i, line in enumerate(lines) if line.startswith(f"add element ip kube-proxy {name} "))
        assert flush < first
    # a chain is created (and emptied) before anything refers to it
    created = set()
    for line in lines:
        if line.startswith("add chain "):
            created.add(line.split()[4])
        for word in line.replace("}", " ").split():
            if word.startswith(("service-", "endpoint-", "external-", "firewall-")) and "/" in word:
                assert word in created, line
    # and the second full sync of a process leaves the base chains alone
    again = render(view_of(*overall_inputs()), SETTINGS).text(first_sync=False)
    assert "delete chain ip kube-proxy filter-input" not in again


def test_full_sync_applies_over_an_existing_table():
    rs = render(view_of(*overall_inputs()), SETTINGS)
    m = state_of(rs.text())
    m.apply(rs.text(first_sync=False))
    assert_same(expected("overall.nft"), normalize(m.dump()))


# --------------------------------------------------------------------------- TestBadIPs
def test_bad_ips_are_normalised_in_rules_elements_and_names():
    services = [svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.041", ports=[port(nodePort=3001)],
                    externalIPs=["192.168.099.022"], loadBalancerSourceRanges=["203.0.113.000/025"],
                    status={"loadBalancer": {"ingress": [{"ip": "1.2.3.004"}]}})]
    slices = [slice_("ns1", "svc1", [ep("10.180.00.001")], [port()])]
    assert_same(expected("bad_ips.nft"), render(view_of(services, slices), SETTINGS).normalized())


# --------------------------------------------------------------------------- TestLoadBalancerIngressRouteTypeProxy
@pytest.mark.parametrize("ip_mode,present", [("Proxy", False), ("VIP", True), (None, True)])
def test_load_balancer_ip_mode_proxy_is_not_captured(ip_mode, present):
    ingress = {"ip": "1.2.3.4"} | ({"ipMode": ip_mode} if ip_mode else {})
    services = [svc("ns1", "svc1", type="LoadBalancer", clusterIP="10.20.30.41", ports=[port(nodePort=3001)],
                    status={"loadBalancer": {"ingress": [ingress]}})]
    slices = [slice_("ns1", "svc1", [ep("10.180.0.1")], [port()])]
    rs = render(view_of(services, slices), SETTINGS)
    keys = {e.key for e in rs.elements("service-ips")}
    assert ("1.2.3.4 . tcp . 80" in keys) is present


# --------------------------------------------------------------------------- IPv6, NodePort addresses
def test_ipv6_table_and_names():
    services = [svc("ns1", "svc1", type="NodePort", clusterIP="fd00:172:30::41", ipFamilies=["IPv6"],
                    clusterIPs=["fd00:172:30::41"], ports=[port(nodePort=3001)])]
    slices = [slice_("ns1", "svc1", [ep("fd00:10:180::1"), ep("fd00:10:180::2:1", NODE)], [port()],
                     address_type="IPv6")]
    rs = render(view_of(services, slices, ipv6=True), SETTINGS6)
    dump = rs.dump()
    assert dump.startswith('add table ip6 kube-proxy { comment "rules for kube-proxy" ; }')
    assert 'add set ip6 kube-proxy cluster-ips { type ipv6_addr ; comment "Active ClusterIPs" ; }' in dump
    assert "add element ip6 kube-proxy nodeport-ips { 2001:db8::1 }" in dump
    assert "add rule ip6 kube-proxy cluster-ips-check ip6 daddr { fd00:10:96::/112 } drop" in dump
    base = endpoint_chain_base("ns1", "svc1", "tcp", "p80", "fd00:10:180::1", 80)
    assert "__fd00.10.180..1/80" in base
    assert f"add rule ip6 kube-proxy endpoint-{base} meta l4proto tcp dnat to [fd00:10:180::1]:80" in dump
    assert "ip6 daddr fd00:172:30::41 ip6 saddr != fd00:10::/64 jump mark-for-masquerade" in dump


def test_nodeports_on_every_address_when_the_flag_covers_everything():
    services = [svc("ns1", "svc1", type="NodePort", clusterIP="172.30.0.41", ports=[port(nodePort=3001)])]
    view = view_of(services, [], node_port_addresses=("0.0.0.0/0",))
    dump = render(view, SETTINGS).dump()
    assert "nodeport-ips" not in dump
    assert ("add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport "
            "vmap @service-nodeports") in dump
    assert ("add rule ip kube-proxy nodeport-endpoints-check ip daddr != 127.0.0.0/8 meta l4proto . th dport "
            "vmap @no-endpoint-nodeports") in dump


def test_nodeports_default_to_the_primary_node_ip():
    services = [svc("ns1", "svc1", type="NodePort", clusterIP="172.30.0.41", ports=[port(nodePort=3001)])]
    view = view_of(services, [], node_port_addresses=())
    assert "add element ip kube-proxy nodeport-ips { 192.168.0.2 }" in render(view, SETTINGS).dump()
    everywhere = render(view, NftSettings(service_cidrs=("172.30.0.0/16",), nodeport_primary_default=False)).dump()
    assert "nodeport-ips" not in everywhere


def test_no_service_cidrs_no_unallocated_drop():
    assert "Drop traffic to unallocated ClusterIPs" not in render(view_of([], [])).dump()


# --------------------------------------------------------------------------- the fast form
def _fast_state(view, settings):
    return state_of(render(view, settings).fast_text())


def test_fast_form_is_the_same_table_but_for_endpoint_choice_and_source_ranges():
    view = view_of(*overall_inputs())
    kp = render(view, SETTINGS).state().only_table()
    fast = _fast_state(view, SETTINGS).only_table()
    assert kp.chains.keys() == fast.chains.keys()
    assert {n: (s.type, s.flags, s.timeout, s.elements) for n, s in kp.sets.items()} == \
        {n: (s.type, s.flags, s.timeout, s.elements) for n, s in fast.sets.items()}
    for name, chain in kp.chains.items():
        other = fast.chains[name].rules
        if any(r.startswith("numgen") for r in chain.rules):
            same = [r for r in chain.rules if not r.startswith("numgen")]
            assert other[:len(same)] == same
            assert not any("vmap {" in r for r in other)
        elif name.startswith("firewall-") and "/" in name:
            assert other == ["ip saddr != 203.0.113.0/25 drop"]
        else:
            assert other == chain.rules, name
    assert sum("vmap {" in r for c in fast.chains.values() for r in c.rules) == 0


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16])
def test_fast_form_picks_endpoints_with_kube_proxys_probabilities(n):
    services = [svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port()])]
    slices = [slice_("ns1", "svc1", [ep(f"10.180.0.{i + 1}") for i in range(n)], [port()])]
    view = view_of(services, slices)
    chain = "service-" + service_chain_base("ns1", "svc1", "tcp", "p80")
    kp = endpoint_probabilities(render(view, SETTINGS), chain)
    fast = endpoint_probabilities(_fast_state(view, SETTINGS), chain)
    assert kp == fast == {f"10.180.0.{i + 1}:80": Fraction(1, n) for i in range(n)}


def test_fast_form_source_ranges_with_several_sources():
    services = [svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.41", ports=[port(nodePort=3001)],
                    loadBalancerSourceRanges=["192.168.0.0/24", "203.0.113.0/25"],
                    status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"ip": "5.6.7.8"}]}})]
    slices = [slice_("ns1", "svc1", [ep("10.180.0.1")], [port()])]
    view = view_of(services, slices)
    chain = "firewall-" + service_chain_base("ns1", "svc1", "tcp", "p80")
    kp = render(view, SETTINGS).state().only_table().chains[chain].rules
    assert kp == ["ip saddr != { 192.168.0.0/24 , 203.0.113.0/25 , 1.2.3.4 , 5.6.7.8 } drop"]
    fast = _fast_state(view, SETTINGS).only_table().chains[chain].rules
    assert fast == ["ip saddr 192.168.0.0/24 return", "ip saddr 203.0.113.0/25 return", "ip saddr 1.2.3.4 return",
                    "ip saddr 5.6.7.8 return", "drop"]


# --------------------------------------------------------------------------- packet flows
FORMS = [KUBE_PROXY, FAST]


def flows(view, cases, form):
    rs = render(view, settings_for(view))
    state = rs.state() if form == KUBE_PROXY else state_of(rs.fast_text())
    for name, src, dst, dport, output, *rest in cases:
        masq = rest[0] if rest else False
        proto = rest[1] if len(rest) > 1 else "tcp"
        t = trace_packet(state, src, dst, dport, proto, NODE_IPS)
        assert (t.output, t.masq) == (output, masq), \
            f"{name}: {src} -> {dst}:{dport}/{proto}: got {t.output!r} masq={t.masq}\n" + "\n".join(t.matches)


@pytest.mark.parametrize("form", FORMS)
def test_no_endpoints_reject(form):
    services = [svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.41", externalIPs=[EXTERNAL_IP],
                    ports=[port(nodePort=3001)], status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}})]
    flows(view_of(services, []), [
        ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, "REJECT"),
        ("external to external IP", EXTERNAL_CLIENT, EXTERNAL_IP, 80, "REJECT"),
        ("pod to NodePort", "10.0.0.2", NODE_IP, 3001, "REJECT"),
        ("external to NodePort", EXTERNAL_CLIENT, NODE_IP, 3001, "REJECT"),
        ("pod to LB IP", "10.0.0.2", "1.2.3.4", 80, "REJECT"),
        ("external to LB IP", EXTERNAL_CLIENT, "1.2.3.4", 80, "REJECT"),
    ], form)


@pytest.mark.parametrize("form", FORMS)
def test_cluster_ip_general(form):
    services = [
        svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("http")]),
        svc("ns2", "svc2", clusterIP="172.30.0.42", ports=[
            port("http"), port("https", 443, targetPort=8443), port("dns-udp", 53, "UDP"),
            port("dns-tcp", 53, targetPort=5353), port("dns-sctp", 53, "SCTP")]),
    ]
    slices = [
        slice_("ns1", "svc1", [ep("10.180.0.1", NODE)], [port("http")]),
        slice_("ns2", "svc2", [ep("10.180.0.1", NODE), ep("10.180.2.1", "node2")], [
            port("http"), port("https", 8443), port("dns-udp", 53, "UDP"), port("dns-tcp", 5353),
            port("dns-sctp", 53, "SCTP")]),
    ]
    flows(view_of(services, slices), [
        ("simple clusterIP", "10.180.0.2", "172.30.0.41", 80, "10.180.0.1:80"),
        ("hairpin to cluster IP", "10.180.0.1", "172.30.0.41", 80, "10.180.0.1:80", True),
        ("multiple endpoints", "10.180.0.2", "172.30.0.42", 80, "10.180.0.1:80, 10.180.2.1:80"),
        ("TargetPort", "10.180.0.2", "172.30.0.42", 443, "10.180.0.1:8443, 10.180.2.1:8443"),
        ("TCP on a shared port", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:5353, 10.180.2.1:5353"),
        ("UDP on a shared port", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False, "udp"),
        ("SCTP on a shared port", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False, "sctp"),
        ("TCP-only port does not match UDP", "10.180.0.2", "172.30.0.42", 80, "REJECT", False, "udp"),
        ("svc1 does not accept svc2's ports", "10.180.0.2", "172.30.0.41", 443, "REJECT"),
        ("unallocated cluster IP", "10.180.0.2", "172.30.0.50", 80, "DROP"),
    ], form)


@pytest.mark.parametrize("form", FORMS)
def test_load_balancer_source_ranges(form):
    services = [svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.41", ports=[port(nodePort=3001)],
                    loadBalancerSourceRanges=["192.168.0.0/24", " 203.0.113.0/25"],
                    status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"ip": "5.6.7.8"}]}})]
    slices = [slice_("ns1", "svc1", [ep("10.180.0.1")], [port()])]
    out = "10.180.0.1:80"
    flows(view_of(services, slices), [
        ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, out),
        ("external to nodePort", EXTERNAL_CLIENT, NODE_IP, 3001, out, True),
        ("nodePort bypasses LoadBalancerSourceRanges", EXTERNAL_CLIENT_BLOCKED, NODE_IP, 3001, out, True),
        ("accepted external to LB1", EXTERNAL_CLIENT, "1.2.3.4", 80, out, True),
        ("accepted external to LB2", EXTERNAL_CLIENT, "5.6.7.8", 80, out, True),
        ("blocked external to LB1", EXTERNAL_CLIENT_BLOCKED, "1.2.3.4", 80, "DROP"),
        ("blocked external to LB2", EXTERNAL_CLIENT_BLOCKED, "5.6.7.8", 80, "DROP"),
        ("pod to LB1 (blocked)", "10.0.0.2", "1.2.3.4", 80, "DROP"),
        ("pod to LB2 (blocked)", "10.0.0.2", "5.6.7.8", 80, "DROP"),
        ("node to LB1 (allowed)", NODE_IP, "1.2.3.4", 80, out, True),
        ("node to LB2 (allowed)", NODE_IP, "5.6.7.8", 80, out, True),
        ("same node to LB1, SNATted to LB1", "1.2.3.4", "1.2.3.4", 80, out, True),
        ("same node to LB2, SNATted to LB2", "5.6.7.8", "5.6.7.8", 80, out, True),
    ], form)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("ipv6,addresses,alt_allowed", [
    (False, None, False),
    (False, ("192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"), True),
    (True, None, False),
    (True, ("192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64", "2001:db8:1::2/128"), True),
])
def test_nodeports(form, ipv6, addresses, alt_allowed):
    if ipv6:
        svc_ip, ep1, ep2, node_ip, pod, client, alt = ("fd00:172:30::41", "fd00:10:180::1", "fd00:10:180::2:1",
                                                       NODE_IP6, "fd00:10::2", "2600:5200::1", NODE_IP6_ALT)
        extra = {"ipFamilies": ["IPv6"], "clusterIPs": [svc_ip]}
    else:
        svc_ip, ep1, ep2, node_ip, pod, client, alt = ("172.30.0.41", "10.180.0.1", "10.180.2.1", NODE_IP,
                                                       "10.0.0.2", EXTERNAL_CLIENT, NODE_IP_ALT)
        extra = {}
    services = [svc("ns1", "svc1", type="NodePort", clusterIP=svc_ip, ports=[port(nodePort=3001)], **extra)]
    slices = [slice_("ns1", "svc1", [ep(ep1), ep(ep2, NODE)], [port()], address_type="IPv6" if ipv6 else "IPv4")]
    options = {} if addresses is None else {"node_port_addresses": addresses}
    view = view_of(services, slices, ipv6=ipv6, **options)
    join = (lambda ip: f"[{ip}]:80") if ipv6 else (lambda ip: f"{ip}:80")
    out = f"{join(ep1)}, {join(ep2)}"
    cases = [
        ("pod to cluster IP", pod, svc_ip, 80, out),
        ("external to nodePort", client, node_ip, 3001, out, True),
        ("node to nodePort", node_ip, node_ip, 3001, out, True),
        ("nodePort on the secondary IP", client, alt, 3001, out if alt_allowed else "", alt_allowed),
    ]
    flows(view, cases, form)


def _etp_service(policy: str):
    services = [svc("ns1", "svc1", type="LoadBalancer", externalTrafficPolicy=policy, clusterIP="172.30.0.41",
                    externalIPs=[EXTERNAL_IP], ports=[port(nodePort=3001, targetPort=80)], healthCheckNodePort=30000,
                    status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}})]
    slices = [slice_("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.2.1", NODE)], [port()])]
    return view_of(services, slices)


@pytest.mark.parametrize("form", FORMS)
def test_external_traffic_policy_local(form):
    both, local = "10.180.0.1:80, 10.180.2.1:80", "10.180.2.1:80"
    flows(_etp_service("Local"), [
        ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, both),
        ("pod to external IP", "10.0.0.2", EXTERNAL_IP, 80, both),
        ("external to external IP", EXTERNAL_CLIENT, EXTERNAL_IP, 80, local),
        ("pod to LB IP", "10.0.0.2", "1.2.3.4", 80, both),
        ("external to LB IP", EXTERNAL_CLIENT, "1.2.3.4", 80, local),
        ("pod to NodePort", "10.0.0.2", NODE_IP, 3001, both),
        ("external to NodePort", EXTERNAL_CLIENT, NODE_IP, 3001, local),
    ], form)


@pytest.mark.parametrize("form", FORMS)
def test_external_traffic_policy_cluster(form):
    both = "10.180.0.1:80, 10.180.2.1:80"
    flows(_etp_service("Cluster"), [
        ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, both),
        ("pod to external IP", "10.0.0.2", EXTERNAL_IP, 80, both, True),
        ("external to external IP", EXTERNAL_CLIENT, EXTERNAL_IP, 80, both, True),
        ("pod to LB IP", "10.0.0.2", "1.2.3.4", 80, both, True),
        ("external to LB IP", EXTERNAL_CLIENT, "1.2.3.4", 80, both, True),
        ("pod to NodePort", "10.0.0.2", NODE_IP, 3001, both, True),
        ("external to NodePort", EXTERNAL_CLIENT, NODE_IP, 3001, both, True),
    ], form)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("policy,nodes,output", [
    ("Cluster", [NODE, "node1", "node2"], "10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80"),
    ("Local", [NODE, "node1", "node2"], "10.0.1.1:80"),
    ("Local", [NODE, NODE, "node2"], "10.0.1.1:80, 10.0.1.2:80"),
    ("Local", ["node0", "node1", "node2"], "DROP"),
])
def test_internal_traffic_policy(form, policy, nodes, output):
    services = [svc("ns1", "svc1", clusterIP="172.30.1.1", internalTrafficPolicy=policy, ports=[port("")])]
    slices = [slice_("ns1", "svc1", [ep(f"10.0.1.{i + 1}", n, ready=True) for i, n in enumerate(nodes)], [port("")])]
    flows(view_of(services, slices), [("pod to ClusterIP", "10.0.0.2", "172.30.1.1", 80, output)], form)
    flows(view_of(services, []), [("endpoints deleted", "10.0.0.2", "172.30.1.1", 80, "REJECT")], form)


def _terminating(policy: str, endpoints):
    services = [svc("ns1", "svc1", type="LoadBalancer", externalTrafficPolicy=policy, clusterIP="172.30.1.1",
                    ports=[port("", targetPort=80)], healthCheckNodePort=30000,
                    status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}})]
    eps = [ep(ip, node, ready=r, serving=s, terminating=t) for ip, node, r, s, t in endpoints]
    return services, [slice_("ns1", "svc1", eps, [port("")])]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("endpoints,pod_out,ext_out", [
    ([("10.0.1.1", NODE, True, True, False), ("10.0.1.2", NODE, True, True, False),
      ("10.0.1.3", "another-node", False, True, True), ("10.0.1.4", "another-node", False, False, True),
      ("10.0.1.5", "another-node", True, True, False)],
     "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80"),
    ([("10.0.1.2", NODE, False, True, True), ("10.0.1.3", NODE, False, True, True),
      ("10.0.1.4", "another-node", False, False, True), ("10.0.1.5", "another-node", False, True, True)],
     "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80", "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80"),
    ([("10.0.1.5", "node-1", False, True, True)], "10.0.1.5:80", "10.0.1.5:80"),
    ([("10.0.1.5", NODE, False, False, True), ("10.0.1.5", "node-1", False, False, True)], "REJECT", "REJECT"),
])
def test_terminating_endpoints_traffic_policy_cluster(form, endpoints, pod_out, ext_out):
    services, slices = _terminating("Cluster", endpoints)
    masq = ext_out != "REJECT"
    flows(view_of(services, slices), [
        ("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, pod_out),
        ("external to LB", EXTERNAL_CLIENT, "1.2.3.4", 80, ext_out, masq),
    ], form)
    flows(view_of(services, []), [
        ("pod to clusterIP after endpoints deleted", "10.0.0.2", "172.30.1.1", 80, "REJECT"),
        ("external to LB after endpoints deleted", EXTERNAL_CLIENT, "1.2.3.4", 80, "REJECT"),
    ], form)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("endpoints,pod_out,ext_out", [
    # terminating endpoints on a remote node: not used from outside, but no REJECT either
    ([("10.0.1.5", "node-1", False, True, True)], "10.0.1.5:80", "DROP"),
    ([("10.0.1.5", NODE, False, False, True), ("10.0.1.5", "node-1", False, False, True)], "REJECT", "REJECT"),
])
def test_terminating_endpoints_traffic_policy_local(form, endpoints, pod_out, ext_out):
    services, slices = _terminating("Local", endpoints)
    flows(view_of(services, slices), [
        ("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, pod_out),
        ("external to LB", EXTERNAL_CLIENT, "1.2.3.4", 80, ext_out),
    ], form)


def _masquerade_inputs():
    services = [
        svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.41", ports=[port(nodePort=3001)],
            healthCheckNodePort=30001, status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}),
        svc("ns2", "svc2", type="LoadBalancer", clusterIP="172.30.0.42", ports=[port(nodePort=3002)],
            healthCheckNodePort=30002, externalTrafficPolicy="Local",
            status={"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}]}}),
        svc("ns3", "svc3", type="LoadBalancer", clusterIP="172.30.0.43", ports=[port(nodePort=3003)],
            healthCheckNodePort=30003, internalTrafficPolicy="Local",
            status={"loadBalancer": {"ingress": [{"ip": "9.10.11.12"}]}}),
    ]
    slices = [slice_(f"ns{i}", f"svc{i}", [ep(f"10.180.0.{i}", NODE), ep(f"10.180.1.{i}", "remote")], [port()])
              for i in (1, 2, 3)]
    return services, slices


_ALL1, _ALL2, _ALL3 = ("10.180.0.1:80, 10.180.1.1:80", "10.180.0.2:80, 10.180.1.2:80",
                       "10.180.0.3:80, 10.180.1.3:80")
MASQUERADE_FLOWS = {
    "pod to ClusterIP": ("10.0.0.2", "172.30.0.41", 80, _ALL1, False),
    "pod to NodePort": ("10.0.0.2", NODE_IP, 3001, _ALL1, True),
    "pod to LB": ("10.0.0.2", "1.2.3.4", 80, _ALL1, True),
    "node to ClusterIP": (NODE_IP, "172.30.0.41", 80, _ALL1, True),
    "node to NodePort": (NODE_IP, NODE_IP, 3001, _ALL1, True),
    "node to LB": (NODE_IP, "1.2.3.4", 80, _ALL1, True),
    "external to ClusterIP": (EXTERNAL_CLIENT, "172.30.0.41", 80, _ALL1, True),
    "external to NodePort": (EXTERNAL_CLIENT, NODE_IP, 3001, _ALL1, True),
    "external to LB": (EXTERNAL_CLIENT, "1.2.3.4", 80, _ALL1, True),
    "pod to ClusterIP with eTP:Local": ("10.0.0.2", "172.30.0.42", 80, _ALL2, False),
    "pod to NodePort with eTP:Local": ("10.0.0.2", NODE_IP, 3002, _ALL2, False),
    "pod to LB with eTP:Local": ("10.0.0.2", "5.6.7.8", 80, _ALL2, False),
    "node to ClusterIP with eTP:Local": (NODE_IP, "172.30.0.42", 80, _ALL2, True),
    "node to NodePort with eTP:Local": (NODE_IP, NODE_IP, 3001, _ALL1, True),
    "node to LB with eTP:Local": (NODE_IP, "5.6.7.8", 80, _ALL2, True),
    "external to ClusterIP with eTP:Local": (EXTERNAL_CLIENT, "172.30.0.42", 80, _ALL2, True),
    "external to NodePort with eTP:Local": (EXTERNAL_CLIENT, NODE_IP, 3002, "10.180.0.2:80", False),
    "external to LB with eTP:Local": (EXTERNAL_CLIENT, "5.6.7.8", 80, "10.180.0.2:80", False),
    "pod to ClusterIP with iTP:Local": ("10.0.0.2", "172.30.0.43", 80, "10.180.0.3:80", False),
    "pod to NodePort with iTP:Local": ("10.0.0.2", NODE_IP, 3003, _ALL3, True),
    "pod to LB with iTP:Local": ("10.0.0.2", "9.10.11.12", 80, _ALL3, True),
    "node to ClusterIP with iTP:Local": (NODE_IP, "172.30.0.43", 80, "10.180.0.3:80", True),
    "node to NodePort with iTP:Local": (NODE_IP, NODE_IP, 3003, _ALL3, True),
    "node to LB with iTP:Local": (NODE_IP, "9.10.11.12", 80, _ALL3, True),
    "external to ClusterIP with iTP:Local": (EXTERNAL_CLIENT, "172.30.0.43", 80, "10.180.0.3:80", True),
    "external to NodePort with iTP:Local": (EXTERNAL_CLIENT, NODE_IP, 3003, _ALL3, True),
    "external to LB with iTP:Local": (EXTERNAL_CLIENT, "9.10.11.12", 80, _ALL3, True),
}
_NO_DETECTOR = {
    # all traffic to a ClusterIP is taken for pod traffic: no masquerade
    **{k: (None, False) for k in ("node to ClusterIP", "node to ClusterIP with eTP:Local",
                                   "node to ClusterIP with iTP:Local", "external to ClusterIP",
                                   "external to ClusterIP with eTP:Local", "external to ClusterIP with iTP:Local")},
    # and pods get no eTP:Local short-circuit: only local endpoints
    "pod to NodePort with eTP:Local": ("10.180.0.2:80", None),
    "pod to LB with eTP:Local": ("10.180.0.2:80", None),
}
_MASQ_ALL = {k: (None, True) for k in ("pod to ClusterIP", "pod to ClusterIP with eTP:Local",
                                        "pod to ClusterIP with iTP:Local")}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("masquerade_all,detector,overrides", [
    (False, True, {}),
    (False, False, _NO_DETECTOR),
    (True, True, _MASQ_ALL),
    (True, False, {**_MASQ_ALL, **{k: v for k, v in _NO_DETECTOR.items() if "eTP:Local" in k and "pod" in k}}),
])
def test_internal_external_masquerade(form, masquerade_all, detector, overrides):
    services, slices = _masquerade_inputs()
    view = view_of(services, slices, masquerade_all=masquerade_all,
                   **({} if detector else {"cluster_cidr": None}))
    cases = []
    for name, (src, dst, dport, output, masq) in MASQUERADE_FLOWS.items():
        o, m = overrides.get(name, (None, None))
        cases.append((name, src, dst, dport, output if o is None else o, masq if m is None else m))
    flows(view, cases, form)


# --------------------------------------------------------------------------- TestSyncProxyRulesRepeated
class Repeated:
    """kube-proxy's TestSyncProxyRulesRepeated, step by step, through NftSyncer and NftModel."""

    def __init__(self, form: str):
        self.syncer = NftSyncer(form, SETTINGS)
        self.model = NftModel()
        self.now = 1000.0
        self.services = {
            "ns1/svc1": svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port()]),
            "ns2/svc2": svc("ns2", "svc2", clusterIP="172.30.0.42", ports=[port("p8080", 8080)]),
        }
        self.slices = {
            "ns1/svc1": slice_("ns1", "svc1", [ep("10.0.1.1")], [port()]),
            "ns2/svc2": slice_("ns2", "svc2", [ep("10.0.2.1")], [port("p8080", 8080)]),
        }
        self.view = None
        self.last = None

    def sync(self, changed=None):
        if self.view is None or changed is None:
            self.view = view_of(list(self.services.values()), list(self.slices.values()))
        else:
            self.view = refresh_view(self.view, changed, self.services.values(), self.slices.values())
        res = self.syncer.sync(self.view, changed, now=self.now)
        if res.cleanup:
            self.model.apply(res.cleanup)
        self.model.apply(res.payload)
        self.last = res
        return res

    def age(self):
        self.now += 2.0

    def state(self) -> str:
        return normalize(self.model.dump())


def test_sync_proxy_rules_repeated_matches_kube_proxy():
    r = Repeated(KUBE_PROXY)
    r.sync()
    assert_same(expected("repeated_1_initial.nft"), r.state())
    assert r.last.full

    r.services["ns3/svc3"] = svc("ns3", "svc3", clusterIP="172.30.0.43", ports=[port()])
    r.slices["ns3/svc3"] = slice_("ns3", "svc3", [ep("10.0.3.1")], [port()])
    res = r.sync(["ns3/svc3"])
    assert_same(expected("repeated_2_add_svc3.nft"), r.state())
    assert (res.full, res.operations) == (False, 10)

    del r.services["ns2/svc2"]
    res = r.sync(["ns2/svc2"])
    assert_same(expected("repeated_3_delete_svc2.nft"), r.state())
    assert res.operations == 4
    assert set(res.stale_chains) == {"service-MHHHYRWA-ns2/svc2/tcp/p8080",
                                     "endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080"}

    r.age()
    res = r.sync([])
    assert_same(expected("repeated_4_stale_deleted.nft"), r.state())
    assert (res.operations, res.cleanup_operations) == (0, 2)

    r.services["ns4/svc4"] = svc("ns4", "svc4", clusterIP="172.30.0.44", ports=[port()])
    res = r.sync(["ns4/svc4"])
    assert_same(expected("repeated_5_add_svc4_without_endpoints.nft"), r.state())
    assert res.operations == 2

    r.slices["ns4/svc4"] = slice_("ns4", "svc4", [ep("10.0.4.1")], [port()])
    res = r.sync(["ns4/svc4"])
    assert_same(expected("repeated_6_svc4_endpoints.nft"), r.state())
    assert res.operations == 10

    r.slices["ns3/svc3"] = slice_("ns3", "svc3", [ep("10.0.3.2")], [port()])
    res = r.sync(["ns3/svc3"])
    assert_same(expected("repeated_7_svc3_endpoint_changed.nft"), r.state())
    assert res.operations == 9

    r.age()
    r.slices["ns3/svc3"] = slice_("ns3", "svc3", [ep("10.0.3.2"), ep("10.0.3.3")], [port()])
    res = r.sync(["ns3/svc3"])
    assert_same(expected("repeated_8_svc3_endpoint_added.nft"), r.state())
    assert (res.operations, res.cleanup_operations) == (12, 1)

    full_slice = r.slices["ns3/svc3"]
    r.slices["ns3/svc3"] = slice_("ns3", "svc3", [], [port()])
    res = r.sync(["ns3/svc3"])
    assert_same(expected("repeated_9_svc3_emptied.nft"), r.state())
    assert res.operations == 5
    assert set(r.syncer.stale_chains()) == {"service-4AT6LBPK-ns3/svc3/tcp/p80",
                                            "endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80",
                                            "endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80"}

    r.slices["ns3/svc3"] = full_slice
    res = r.sync(["ns3/svc3"])
    assert_same(expected("repeated_10_svc3_restored.nft"), r.state())
    assert res.operations == 14
    assert r.syncer.stale_chains() == {}

    # emptied, then restored after the stale chains aged: deleted first, then re-created
    r.slices["ns3/svc3"] = slice_("ns3", "svc3", [], [port()])
    r.sync(["ns3/svc3"])
    r.age()
    r.slices["ns3/svc3"] = full_slice
    res = r.sync(["ns3/svc3"])
    assert res.cleanup_operations == 3
    assert_same(expected("repeated_10_svc3_restored.nft"), r.state())

    res = r.sync([])
    assert_same(expected("repeated_10_svc3_restored.nft"), r.state())
    assert res.operations == 0 and res.empty


def test_kube_proxy_reflushes_stale_chains_until_a_quiet_second():
    r = Repeated(KUBE_PROXY)
    r.sync()
    del r.services["ns2/svc2"]
    r.sync(["ns2/svc2"])
    r.now += 0.5
    res = r.sync([])
    assert res.operations == 2 and res.cleanup == ""   # flushed again, the clock restarts
    r.now += 0.9
    assert r.sync([]).cleanup == ""
    r.now += 1.1
    assert r.sync([]).cleanup_operations == 2


def test_fast_syncer_gives_the_same_tables_as_a_fresh_fast_render():
    """The fast form through the same steps: after every sync, the node's table is what a full
    fast load of the same view gives (stale, flushed chains aside)."""
    r = Repeated(FAST)
    r.sync()
    steps = [
        ("ns3/svc3", lambda: (r.services.__setitem__("ns3/svc3", svc("ns3", "svc3", clusterIP="172.30.0.43",
                                                                     ports=[port()])),
                              r.slices.__setitem__("ns3/svc3", slice_("ns3", "svc3", [ep("10.0.3.1")], [port()])))),
        ("ns2/svc2", lambda: r.services.pop("ns2/svc2")),
        ("ns3/svc3", lambda: r.slices.__setitem__("ns3/svc3", slice_("ns3", "svc3", [ep("10.0.3.2"), ep("10.0.3.3")],
                                                                     [port()]))),
        ("ns3/svc3", lambda: r.slices.__setitem__("ns3/svc3", slice_("ns3", "svc3", [], [port()]))),
    ]
    for key, change in steps:
        change()
        r.age()
        res = r.sync([key])
        assert not res.full
        fresh = state_of(render(r.view, SETTINGS).fast_text())
        assert without_stale(r.model, r.syncer.stale_chains()) == normalize(fresh.dump())


# --------------------------------------------------------------------------- partial syncs, randomised
def _random_world(rng: random.Random, n: int):
    services, slices = {}, {}
    for i in range(n):
        key = f"ns{i % 3}/svc{i}"
        ns, name = key.split("/")
        kind = rng.choice(["ClusterIP", "NodePort", "LoadBalancer"])
        spec = {"type": kind, "clusterIP": f"172.30.1.{i + 1}", "ports": [port(nodePort=30000 + i)
                                                                            if kind != "ClusterIP" else port()]}
        if kind == "LoadBalancer":
            spec["status"] = {"loadBalancer": {"ingress": [{"ip": f"5.6.7.{i + 1}"}]}}
            if rng.random() < 0.5:
                spec["loadBalancerSourceRanges"] = ["203.0.113.0/25"]
            if rng.random() < 0.5:
                spec["externalTrafficPolicy"] = "Local"
        if rng.random() < 0.3:
            spec["sessionAffinity"] = "ClientIP"
        if rng.random() < 0.3:
            spec["externalIPs"] = [f"192.168.99.{100 + i}"]
        services[key] = svc(ns, name, **spec)
        slices[key] = _random_slice(rng, ns, name)
    return services, slices


def _random_slice(rng, ns, name):
    eps = [ep(f"10.1.{rng.randrange(4)}.{rng.randrange(1, 30)}", rng.choice([NODE, "other"]),
              ready=rng.random() < 0.8, serving=True, terminating=rng.random() < 0.2)
           for _ in range(rng.randrange(0, 4))]
    return slice_(ns, name, eps, [port()])


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_partial_syncs_converge_to_a_full_render(form, seed):
    rng = random.Random(seed)
    services, slices = _random_world(rng, 12)
    syncer = NftSyncer(form, SETTINGS)
    model = NftModel()
    now = 0.0
    view = view_of(list(services.values()), list(slices.values()))
    model.apply(syncer.sync(view, now=now).payload)
    for _ in range(25):
        now += rng.choice([0.3, 2.0])
        keys = rng.sample(sorted(services), rng.randrange(1, 4))
        for key in keys:
            ns, name = key.split("/")
            what = rng.random()
            if what < 0.6:
                slices[key] = _random_slice(rng, ns, name)
            elif what < 0.8:
                services[key] = svc(ns, name, clusterIP=services[key].spec.cluster_ip, ports=[port()],
                                    sessionAffinity=rng.choice(["None", "ClientIP"]))
            else:
                services.pop(key, None)
                if rng.random() < 0.5:
                    idx = int(name[3:])
                    services[key] = svc(ns, name, clusterIP=f"172.30.1.{idx + 1}", ports=[port("p81", 81)])
        view = refresh_view(view, keys, services.values(), slices.values())
        res = syncer.sync(view, keys, now=now)
        if res.cleanup:
            model.apply(res.cleanup)
        model.apply(res.payload)
        rs = render(view, SETTINGS)
        want = state_of(rs.text() if form == KUBE_PROXY else rs.fast_text())
        assert without_stale(model, syncer.stale_chains()) == normalize(want.dump())


def test_failed_payload_rolls_back_and_resyncs():
    rng = random.Random(7)
    services, slices = _random_world(rng, 6)
    syncer = NftSyncer(FAST, SETTINGS)
    model = NftModel()
    view = view_of(list(services.values()), list(slices.values()))
    model.apply(syncer.sync(view, now=0).payload)
    key = sorted(services)[0]
    services.pop(key)
    view = refresh_view(view, [key], services.values(), slices.values())
    res = syncer.sync(view, [key], now=1)
    assert not res.full
    syncer.failed()                       # nft refused it: the kernel still has the old table
    res = syncer.sync(view, [], now=2)
    assert res.full
    model.apply(res.payload)
    assert normalize(model.dump()) == normalize(state_of(render(view, SETTINGS).fast_text()).dump())


def test_model_refuses_what_the_kernel_refuses():
    m = NftModel()
    m.apply('add table ip kube-proxy\nadd chain ip kube-proxy a\nadd chain ip kube-proxy b\n'
            'add rule ip kube-proxy a goto b\n')
    with pytest.raises(NftModelError, match="in use"):
        m.apply("delete chain ip kube-proxy b\n")
    with pytest.raises(NftModelError, match="No such file"):
        m.apply("add rule ip kube-proxy a goto c\n")
    with pytest.raises(NftModelError):
        m.apply("add chain ip kube-proxy a { type filter hook input priority 0 ; }\n")
    # a failed transaction changes nothing
    with pytest.raises(NftModelError):
        m.apply("add chain ip kube-proxy c\nflush chain ip kube-proxy nope\n")
    assert "c" not in m.only_table().chains


def test_fresh_node_full_load_has_no_flushes():
    services, slices = overall_inputs()
    syncer = NftSyncer(FAST, SETTINGS)
    syncer.reset(fresh=True)
    res = syncer.sync(view_of(services, slices), now=0)
    assert "flush " not in res.payload and "delete chain" not in res.payload
    assert normalize(state_of(res.payload).dump()) == \
        normalize(state_of(render(view_of(services, slices), SETTINGS).fast_text()).dump())


def test_reset_with_existing_chains_flushes_and_later_deletes_them():
    syncer = NftSyncer(FAST, SETTINGS)
    model = NftModel()
    services, slices = overall_inputs()
    view = view_of(services, slices)
    model.apply(syncer.sync(view, now=0).payload)
    model.apply("add chain ip kube-proxy endpoint-XXXXXXXX-gone/svc/tcp/p__1.2.3.4/80\n"
                "add rule ip kube-proxy endpoint-XXXXXXXX-gone/svc/tcp/p__1.2.3.4/80 meta l4proto tcp dnat to 1.2.3.4:80\n")
    syncer.reset(existing_chains=model.only_table().chains)
    res = syncer.sync(view, now=10)
    assert res.full and res.stale_chains == ("endpoint-XXXXXXXX-gone/svc/tcp/p__1.2.3.4/80",)
    model.apply(res.payload)
    res = syncer.sync(view, now=12)
    model.apply(res.cleanup)
    assert "endpoint-XXXXXXXX-gone/svc/tcp/p__1.2.3.4/80" not in model.only_table().chains


def test_syncers_first_sync_is_render_text():
    view = view_of(*overall_inputs())
    assert NftSyncer(KUBE_PROXY, SETTINGS).sync(view, now=0).payload == render(view, SETTINGS).text()
    fast = NftSyncer(FAST, SETTINGS)
    fast.reset(fresh=True)
    assert fast.sync(view, now=0).payload == render(view, SETTINGS).fast_text()


def test_kube_proxy_operation_count_of_a_full_sync():
    """tx.NumOperations(): one per line, elements included."""
    rs = render(view_of(*overall_inputs()), SETTINGS)
    assert rs.operations() == len(rs.text().splitlines())
    assert NftModel().apply(rs.text()) == rs.operations()


def test_benchmark_alternatives_build_the_same_table():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench_nftables.py"
    spec = importlib.util.spec_from_file_location("bench_nftables", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    view = view_of(*overall_inputs())
    text = render(view, bench.SETTINGS).text()
    want = state_of(text).only_table()
    named = state_of(bench.named_vmaps(text)).only_table()
    assert named.chains.keys() == want.chains.keys()
    assert not any("vmap {" in r for c in named.chains.values() for r in c.rules)
    batched = NftModel()
    for tx in bench.batched(view, 2):
        batched.apply(tx)
    assert normalize(batched.dump()) == normalize(state_of(text).dump())


def test_primary_ip_is_the_first_address_of_the_family():
    services = [svc("ns1", "svc1", type="NodePort", clusterIP="fd00:172:30::41", ipFamilies=["IPv6"],
                    clusterIPs=["fd00:172:30::41"], ports=[port(nodePort=3001)])]
    view = build_view(services, [], node_name=NODE, node_ips=[NODE_IP, NODE_IP6], cluster_cidr="fd00:10::/64",
                      ip_family=IPV6)
    assert "add element ip6 kube-proxy nodeport-ips { 2001:db8::1 }" in render(view, SETTINGS6).dump()
