"""Stale UDP conntrack entries (kubernetes pkg/proxy/conntrack cleanup.go and its tests' rule:
clear UDP flows to a service frontend whose reply source is not a serving endpoint)."""
from __future__ import annotations

from netemu.dataplane.proxy.conntrack import ConntrackDeletion, UdpFlow, stale_udp_conntrack, udp_flows_to_clear
from netemu.dataplane.proxy.view import build_view
from netemu.spec.models import EndpointSlice, Service

NODE = "n1"


def view(endpoints: list, *, protocol="UDP", node_port=None, extra_services=()):
    spec = {"type": "LoadBalancer" if node_port else "ClusterIP", "clusterIP": "10.96.0.10",
            "externalIPs": ["192.168.99.1"],
            "ports": [{"name": "dns", "port": 53, "protocol": protocol, **({"nodePort": node_port} if node_port else {})}]}
    status = {"loadBalancer": {"ingress": [{"ip": "192.168.1.240"}]}} if node_port else {}
    svc = Service.model_validate({"metadata": {"namespace": "kube-system", "name": "dns"}, "spec": spec,
                                  "status": status})
    slices = [EndpointSlice.model_validate({
        "metadata": {"namespace": "kube-system", "name": "dns-1", "labels": {"kubernetes.io/service-name": "dns"}},
        "endpoints": [{"addresses": [ip], "conditions": cond} for ip, cond in endpoints],
        "ports": [{"name": "dns", "port": 5353, "protocol": protocol}]})]
    return build_view([svc, *extra_services], slices, node_name=NODE)


UP = {"ready": True}


def test_endpoint_gone_clears_its_flows_on_every_frontend_and_the_node_port():
    before = view([("10.0.0.1", UP), ("10.0.0.2", UP)], node_port=30053)
    after = view([("10.0.0.1", UP)], node_port=30053)
    got = stale_udp_conntrack(before, after)
    assert [(d.kind, d.service_ip, d.port, d.endpoint_ip) for d in got] == [
        ("endpoint", "10.96.0.10", 53, "10.0.0.2"),
        ("endpoint", "192.168.1.240", 53, "10.0.0.2"),
        ("endpoint", "192.168.99.1", 53, "10.0.0.2"),
        ("nodeport-endpoint", None, 30053, "10.0.0.2"),
    ]
    assert got[0].argv() == ["-D", "-p", "udp", "--orig-dst", "10.96.0.10", "--orig-port-dst", "53",
                             "--reply-src", "10.0.0.2"]
    assert got[3].argv() == ["-D", "-p", "udp", "--orig-port-dst", "30053", "--reply-src", "10.0.0.2"]


def test_not_serving_counts_as_gone_but_terminating_serving_does_not():
    before = view([("10.0.0.1", UP), ("10.0.0.2", UP), ("10.0.0.3", UP)])
    after = view([("10.0.0.1", UP), ("10.0.0.2", {"ready": False, "serving": True, "terminating": True}),
                  ("10.0.0.3", {"ready": False, "serving": False})])
    assert {d.endpoint_ip for d in stale_udp_conntrack(before, after)} == {"10.0.0.3"}


def test_service_becoming_active_clears_its_unnatted_flows():
    before = view([])
    after = view([("10.0.0.1", UP)], node_port=30053)
    got = stale_udp_conntrack(before, after)
    assert ConntrackDeletion("service", "kube-system/dns:dns", 53, "10.96.0.10", "10.96.0.10") in got
    assert ConntrackDeletion("nodeport", "kube-system/dns:dns", 30053, None, None) in got
    assert stale_udp_conntrack(None, after)  # a brand-new service too


def test_nothing_for_tcp_unchanged_or_emptied_services():
    assert stale_udp_conntrack(view([("10.0.0.1", UP)], protocol="TCP"), view([], protocol="TCP")) == []
    same = view([("10.0.0.1", UP)])
    assert stale_udp_conntrack(same, view([("10.0.0.1", UP)])) == []
    # kube-proxy 1.31+ leaves a service that lost every endpoint alone; the old behaviour is opt-in
    assert stale_udp_conntrack(same, view([])) == []
    assert [d.endpoint_ip for d in stale_udp_conntrack(same, view([]), include_emptied=True)] == ["10.0.0.1",
                                                                                                   "10.0.0.1"]


def test_reconciler_over_listed_flows():
    v = view([("10.0.0.1", UP)], node_port=30053)
    flows = [UdpFlow("10.96.0.10", 53, "10.0.0.1"),      # to a serving endpoint: kept
             UdpFlow("10.96.0.10", 53, "10.0.0.9"),      # to a gone endpoint: cleared
             UdpFlow("10.96.0.10", 53, "10.96.0.10"),    # never DNATed: cleared
             UdpFlow("192.168.1.10", 30053, "10.0.0.7"),  # NodePort on some address: cleared
             UdpFlow("10.96.0.99", 53, "10.0.0.9")]      # not a service frontend: kept
    assert udp_flows_to_clear(v, flows) == [flows[1], flows[2], flows[3]]
    assert udp_flows_to_clear(view([]), flows) == []  # no serving endpoints: nothing cleared
