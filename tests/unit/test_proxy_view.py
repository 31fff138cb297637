"""The proxy's input model: which Services and endpoints kube-proxy considers, and how.

Cases follow kubernetes pkg/proxy/iptables/proxier_test.go (TestBuildServiceMapAddRemove,
TestBuildServiceMapServiceHeadless, TestBuildServiceMapServiceTypeExternalName,
TestUpdateEndpointsMap, TestHealthCheckNodePortWhenTerminating) and pkg/proxy's
serviceport.go / endpointslicecache.go rules.
"""
from __future__ import annotations

import pytest

from netemu.dataplane.proxy.view import (
    EndpointView,
    NodeProxyView,
    ProxyOptions,
    ServicePortView,
    build_view,
    endpoints_map,
    refresh_view,
    service_ports,
)
from netemu.spec.models import EndpointSlice, Service

NODE = "test-node"


def svc(ns, name, **spec):
    status = spec.pop("status", {})
    meta = {"namespace": ns, "name": name}
    if "annotations" in spec:
        meta["annotations"] = spec.pop("annotations")
    return Service.model_validate({"metadata": meta, "spec": spec, "status": status})


def port(name, port_, protocol="UDP", node_port=None, target=None):
    out = {"name": name, "port": port_, "protocol": protocol}
    if node_port:
        out["nodePort"] = node_port
    if target is not None:
        out["targetPort"] = target
    return out


def slice_(ns, name, endpoints, ports, n=1, address_type="IPv4", label=True):
    meta = {"namespace": ns, "name": f"{name}-{n}"}
    if label:
        meta["labels"] = {"kubernetes.io/service-name": name}
    return EndpointSlice.model_validate({"metadata": meta, "addressType": address_type,
                                         "endpoints": endpoints, "ports": ports})


def ep(ip, node=None, **conditions):
    out = {"addresses": [ip]}
    if node:
        out["nodeName"] = node
    if conditions:
        out["conditions"] = conditions
    return out


def eps_of(result, ns, name, port_name, protocol="UDP"):
    return [(e.endpoint, e.is_local) for e in result.get((ns, name, port_name, protocol), ())]


# --------------------------------------------------------------------------- services
def test_service_map_add_remove_counts_ports_and_health_checks():
    services = [
        svc("somewhere-else", "cluster-ip", type="ClusterIP", clusterIP="172.30.55.4",
            ports=[port("something", 1234, node_port=4321), port("somethingelse", 1235, node_port=5321),
                   port("sctpport", 1236, "SCTP", 6321)]),
        svc("somewhere-else", "node-port", type="NodePort", clusterIP="172.30.55.10",
            ports=[port("blahblah", 345, node_port=678), port("moreblahblah", 344, "TCP", 677),
                   port("muchmoreblah", 343, "SCTP", 676)]),
        svc("somewhere", "load-balancer", type="LoadBalancer", clusterIP="172.30.55.11", loadBalancerIP="1.2.3.4",
            ports=[port("foobar", 8675, node_port=30061, target=7000), port("baz", 8676, node_port=30062, target=7001)],
            status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}),
        svc("somewhere", "only-local-load-balancer", type="LoadBalancer", clusterIP="172.30.55.12",
            loadBalancerIP="5.6.7.8", externalTrafficPolicy="Local", healthCheckNodePort=345,
            ports=[port("foobar2", 8677, node_port=30063, target=7002), port("baz", 8678, node_port=30064, target=7003)],
            status={"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}]}}),
    ]
    view = build_view(services, [], node_name=NODE)
    ports = list(view.ports())
    assert len(ports) == 10
    assert {(p.service, p.health_check_node_port) for p in ports if p.health_check_node_port} == {
        ("somewhere/only-local-load-balancer", 345)}
    # removing ports and services
    one = svc("somewhere-else", "cluster-ip", type="ClusterIP", clusterIP="172.30.55.4",
              ports=[port("somethingelse", 1235, node_port=5321)])
    assert len(list(build_view([one], [], node_name=NODE).ports())) == 1


@pytest.mark.parametrize("service", [
    svc("somewhere-else", "headless", type="ClusterIP", clusterIP="None", ports=[port("rpc", 1234)]),
    svc("somewhere-else", "headless-without-port", type="ClusterIP", clusterIP="None"),
    svc("somewhere-else", "external-name", type="ExternalName", clusterIP="172.30.55.4",
        externalName="foo2.bar.com", ports=[port("blah", 1235, node_port=5321)]),
    svc("ns", "no-ip-yet", type="ClusterIP", ports=[port("p", 80)]),
    svc("ns", "no-ports", type="ClusterIP", clusterIP="172.30.0.9"),
    svc("ns", "ipv6-only", type="ClusterIP", clusterIP="fd00::9", ports=[port("p", 80)]),
])
def test_services_kube_proxy_skips(service):
    assert build_view([service], [], node_name=NODE).services == {}


def test_service_port_fields():
    s = svc("ns", "web", type="LoadBalancer", clusterIP="172.30.0.041", externalTrafficPolicy="Local",
            internalTrafficPolicy="Local", healthCheckNodePort=31000, sessionAffinity="ClientIP",
            externalIPs=["192.168.099.001", "fd00::1", "bogus"], loadBalancerSourceRanges=[" 10.0.0.7/8 ", "x"],
            annotations={"service.kubernetes.io/topology-mode": "Auto"},
            ports=[port("http", 80, "TCP", 30080), port("", 53)],
            status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"ip": "5.6.7.8", "ipMode": "Proxy"},
                                                 {"hostname": "lb.example"}]}})
    http, dns = sorted(service_ports(s, {}), key=lambda p: p.protocol)
    assert (http.service_port_name, dns.service_port_name) == ("ns/web:http", "ns/web")
    assert http.cluster_ip == "172.30.0.41" and http.node_port == 30080 and dns.node_port == 0
    assert http.external_ips == ("192.168.99.1",)
    assert http.load_balancer_source_ranges == ("10.0.0.0/8",)
    assert http.load_balancer_ips == ("1.2.3.4",)
    assert http.session_affinity_seconds == 10800  # the API server's default timeout
    assert http.external_policy_local and http.internal_policy_local and http.health_check_node_port == 31000
    assert http.hints_annotation == "Auto"
    assert http.uses_cluster_endpoints and http.uses_local_endpoints and http.externally_accessible


def test_external_traffic_policy_needs_external_access():
    # a plain ClusterIP service with ETP Local is not "external policy local"; with externalIPs it is
    plain = svc("ns", "a", type="ClusterIP", clusterIP="172.30.0.1", externalTrafficPolicy="Local",
                ports=[port("p", 80)])
    with_ips = svc("ns", "b", type="ClusterIP", clusterIP="172.30.0.2", externalTrafficPolicy="Local",
                   externalIPs=["192.168.99.1"], ports=[port("p", 80)])
    assert not service_ports(plain, {})[0].external_policy_local
    assert service_ports(with_ips, {})[0].external_policy_local
    assert service_ports(with_ips, {})[0].health_check_node_port == 0  # only LoadBalancers get one


def test_dual_stack_service_uses_the_cluster_ip_of_the_family():
    s = svc("ns", "ds", type="ClusterIP", clusterIP="fd00::5", clusterIPs=["fd00::5", "172.30.0.5"],
            ipFamilies=["IPv6", "IPv4"], ports=[port("p", 80)])
    assert service_ports(s, {})[0].cluster_ip == "172.30.0.5"


# --------------------------------------------------------------------------- endpoints
SUBSET1 = ([ep("10.1.1.1")], [port("p11", 11)])
SUBSET2 = ([ep("10.1.1.2")], [port("p12", 12)])


def test_multiple_slices_and_ports_make_one_map():
    slices = [slice_("ns1", "ep1", [ep("10.1.1.1"), ep("10.1.1.2", NODE)], [port("p11", 11), port("p12", 12)]),
              slice_("ns1", "ep1", [ep("10.1.1.3"), ep("10.1.1.4", NODE)], [port("p13", 13), port("p14", 14)], n=2),
              slice_("ns2", "ep2", [ep("10.2.2.1"), ep("10.2.2.2", NODE)], [port("p21", 21), port("p22", 22)])]
    m = endpoints_map(slices, node_name=NODE)
    assert eps_of(m, "ns1", "ep1", "p11") == [("10.1.1.1:11", False), ("10.1.1.2:11", True)]
    assert eps_of(m, "ns1", "ep1", "p14") == [("10.1.1.3:14", False), ("10.1.1.4:14", True)]
    assert eps_of(m, "ns2", "ep2", "p22") == [("10.2.2.1:22", False), ("10.2.2.2:22", True)]
    assert len(m) == 6


def test_complex_endpoints_are_sorted_as_strings():
    # TestUpdateEndpointsMap "complex add and remove", state after the change
    slices = [slice_("ns1", "ep1", [ep("10.1.1.1"), ep("10.1.1.11")], [port("p11", 11)]),
              slice_("ns1", "ep1", [ep("10.1.1.2")], [port("p12", 12), port("p122", 122)], n=2),
              slice_("ns3", "ep3", [ep("10.3.3.3")], [port("p33", 33)]),
              slice_("ns4", "ep4", [ep("10.4.4.4", NODE)], [port("p44", 44)])]
    m = endpoints_map(slices, node_name=NODE)
    assert eps_of(m, "ns1", "ep1", "p11") == [("10.1.1.11:11", False), ("10.1.1.1:11", False)]
    assert eps_of(m, "ns1", "ep1", "p122") == [("10.1.1.2:122", False)]
    assert eps_of(m, "ns4", "ep4", "p44") == [("10.4.4.4:44", True)]
    assert len(m) == 5


def test_renamed_and_renumbered_ports():
    renamed = endpoints_map([slice_("ns1", "ep1", [ep("10.1.1.1")], [port("p11-2", 11)])], node_name=NODE)
    assert list(renamed) == [("ns1", "ep1", "p11-2", "UDP")]
    renumbered = endpoints_map([slice_("ns1", "ep1", [ep("10.1.1.1")], [port("p11", 22)])], node_name=NODE)
    assert eps_of(renumbered, "ns1", "ep1", "p11") == [("10.1.1.1:22", False)]


def test_slice_ports_match_service_ports_by_name_and_protocol():
    s = svc("ns", "dns", type="ClusterIP", clusterIP="172.30.0.10",
            ports=[port("dns", 53, "UDP"), port("dns-tcp", 53, "TCP", target="dns-tcp")])
    slices = [slice_("ns", "dns", [ep("10.0.0.5")], [port("dns", 5353, "UDP"), port("dns-tcp", 5354, "TCP"),
                                                      port("dns", 9999, "TCP")])]
    view = build_view([s], slices, node_name=NODE)
    got = {(p.port_name, p.protocol): [e.endpoint for e in p.endpoints] for p in view.ports()}
    # the TCP "dns" slice port has no service port; targetPorts come from the slice
    assert got == {("dns", "UDP"): ["10.0.0.5:5353"], ("dns-tcp", "TCP"): ["10.0.0.5:5354"]}


@pytest.mark.parametrize("bad_slice", [
    slice_("ns", "s", [ep("10.0.0.1")], [port("p", 80)], label=False),                  # no service label
    slice_("ns", "s", [ep("fd00::1")], [port("p", 80)], address_type="IPv6"),          # other family
    slice_("ns", "s", [{"addresses": ["x.example"]}], [port("p", 80)], address_type="FQDN"),
    slice_("ns", "s", [ep("10.0.0.1")], [{"port": 80, "protocol": "UDP"}]),            # nil port name
    slice_("ns", "s", [ep("10.0.0.1")], [{"name": "p", "protocol": "UDP"}]),           # no port number
    slice_("ns", "s", [{"addresses": []}, ep("not-an-ip")], [port("p", 80)]),          # no usable address
])
def test_slices_and_endpoints_kube_proxy_ignores(bad_slice):
    assert endpoints_map([bad_slice], node_name=NODE) == {}


def test_endpoint_conditions_default_to_ready_and_serving():
    m = endpoints_map([slice_("ns", "s", [ep("10.0.0.1"), ep("10.0.0.2", ready=False),
                                          ep("10.0.0.3", ready=False, serving=True, terminating=True)],
                              [port("p", 80)])], node_name=NODE)
    a, b, c = m[("ns", "s", "p", "UDP")]
    assert (a.ready, a.serving, a.terminating) == (True, True, False)
    assert (b.ready, b.serving, b.terminating) == (False, True, False)
    assert (c.ready, c.serving, c.terminating) == (False, True, True)


def test_duplicate_endpoints_across_slices_prefer_the_non_terminating_one():
    slices = [slice_("ns", "s", [ep("10.0.0.1", NODE, ready=False, serving=False, terminating=True)],
                     [port("p", 80)], n=1),
              slice_("ns", "s", [ep("10.0.0.1", "other", ready=True)], [port("p", 80)], n=2),
              slice_("ns", "s", [ep("10.0.0.1", NODE, ready=False, serving=True, terminating=True)],
                     [port("p", 80)], n=3)]
    (only,) = endpoints_map(slices, node_name=NODE)[("ns", "s", "p", "UDP")]
    assert only.ready and not only.terminating and only.node_name == "other"


def test_local_ready_endpoints_vanish_when_all_terminate():
    # TestHealthCheckNodePortWhenTerminating: what the health check server would count
    ready = [ep(f"10.0.1.{i}", NODE, ready=True) for i in (1, 2, 3)] + [ep("10.0.1.4", NODE, ready=False)]
    m = endpoints_map([slice_("ns1", "svc1", ready, [port("", 80, "TCP")])], node_name=NODE)
    assert sum(e.is_local and e.ready for e in m[("ns1", "svc1", "", "TCP")]) == 3
    terminating = [ep("10.0.1.1", NODE, ready=False, serving=True, terminating=False)] + \
        [ep(f"10.0.1.{i}", NODE, ready=False, serving=True, terminating=True) for i in (2, 3)] + \
        [ep("10.0.1.4", NODE, ready=False, serving=False, terminating=True)]
    m = endpoints_map([slice_("ns1", "svc1", terminating, [port("", 80, "TCP")])], node_name=NODE)
    assert sum(e.is_local and e.ready for e in m[("ns1", "svc1", "", "TCP")]) == 0


def test_zone_and_node_hints_are_read_from_the_slice():
    m = endpoints_map([slice_("ns", "s", [{"addresses": ["10.0.0.1"], "zone": "a",
                                           "hints": {"forZones": [{"name": "a"}], "forNodes": [{"name": "n1"}]}}],
                              [port("p", 80)])], node_name=NODE)
    (e,) = m[("ns", "s", "p", "UDP")]
    assert e.zone == "a" and e.zone_hints == {"a"} and e.node_hints == {"n1"}


# --------------------------------------------------------------------------- the view
def test_view_with_service_keeps_unchanged_entries_and_counts_endpoints():
    services = [svc("ns", f"s{i}", type="ClusterIP", clusterIP=f"172.30.0.{i}", ports=[port("p", 80)])
                for i in range(1, 4)]
    slices = [slice_("ns", f"s{i}", [ep(f"10.0.{i}.1"), ep(f"10.0.{i}.2")], [port("p", 80)]) for i in range(1, 4)]
    view = build_view(services, slices, node_name=NODE, node_ips=["192.168.1.101"], cluster_cidr="10.0.0.0/16")
    assert view.total_endpoints == 6 and view.options.primary_ip == "192.168.1.101"
    (p,) = view.services["ns/s2"]
    smaller = view.with_service("ns/s2", [ServicePortView(**{**{f: getattr(p, f) for f in p.__dataclass_fields__},
                                                             "endpoints": p.endpoints[:1]})])
    assert smaller.total_endpoints == 5
    assert smaller.services["ns/s1"] is view.services["ns/s1"]
    assert smaller.with_service("ns/s3", None).total_endpoints == 3
    assert NodeProxyView(view.options, dict(smaller.services)).total_endpoints == 5


def test_options_defaults_are_a_real_kube_proxys():
    o = ProxyOptions(node_name="n")
    assert o.masquerade_mark == "0x00004000" and o.random_fully and o.localhost_nodeports and not o.nfacct
    assert EndpointView(ip="fd00::1", port=80).endpoint == "[fd00::1]:80"


def test_refresh_view_rebuilds_only_the_changed_services():
    services = [svc("ns", f"s{i}", type="ClusterIP", clusterIP=f"172.30.0.{i}", ports=[port("p", 80)])
                for i in range(1, 4)]
    slices = [slice_("ns", f"s{i}", [ep(f"10.0.{i}.1")], [port("p", 80)]) for i in range(1, 4)]
    view = build_view(services, slices, node_name=NODE)
    slices[1] = slice_("ns", "s2", [ep("10.0.2.1"), ep("10.0.2.2")], [port("p", 80)])
    services = services[:2]  # s3 deleted
    fresh = refresh_view(view, {"ns/s2", "ns/s3"}, services, slices)
    assert fresh.services["ns/s1"] is view.services["ns/s1"]
    assert [e.ip for e in fresh.services["ns/s2"][0].endpoints] == ["10.0.2.1", "10.0.2.2"]
    assert "ns/s3" not in fresh.services and fresh.total_endpoints == 3
    full = build_view(services, slices, node_name=NODE)
    assert dict(fresh.services) == dict(full.services)
