"""kube-proxy's packet-flow tests, replayed on our rendered rules with the same tracer model.

Each case is one from kubernetes pkg/proxy/iptables/proxier_test.go (TestNoEndpointsReject,
TestClusterIPGeneral, TestLoadBalancer, TestNodePorts, TestHealthCheckNodePort,
TestExternalTrafficPolicyLocal/Cluster, TestInternalTrafficPolicy,
TestTerminatingEndpointsTrafficPolicyLocal/Cluster, TestInternalExternalMasquerade): a packet
from a source to a destination must reach exactly these endpoints (or ACCEPT/DROP/REJECT), with
or without masquerading.
"""
from __future__ import annotations

import pytest

from netemu.dataplane.proxy.iptables.render import render
from netemu.dataplane.proxy.iptables.trace import trace_packet
from netemu.dataplane.proxy.view import KUBE_PROXY_TEST_OPTIONS, build_view
from netemu.spec.models import EndpointSlice, Service

NODE = "test-node"
NODE_IP, NODE_IP_ALT, EXTERNAL_IP = "192.168.0.2", "192.168.1.2", "192.168.99.11"
LOCAL_IPS = [NODE_IP, NODE_IP_ALT, EXTERNAL_IP, "2001:db8::1", "2001:db8:1::2"]
CLIENT, BLOCKED_CLIENT, POD = "203.0.113.2", "203.0.113.130", "10.0.0.2"


def svc(ns, name, **spec):
    status = spec.pop("status", {})
    return Service.model_validate({"metadata": {"namespace": ns, "name": name}, "spec": spec, "status": status})


def port(name="p80", port=80, protocol="TCP", **extra):
    return {"name": name, "port": port, "protocol": protocol, **extra}


def eps(ns, name, endpoints, ports, n=1):
    return EndpointSlice.model_validate({
        "metadata": {"namespace": ns, "name": f"{name}-{n}", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": ports})


def ep(ip, node=None, ready=None, serving=None, terminating=None):
    out = {"addresses": [ip]}
    if node:
        out["nodeName"] = node
    cond = {k: v for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating)) if v is not None}
    if cond:
        out["conditions"] = cond
    return out


def rules(services, slices, **options):
    opts = {**KUBE_PROXY_TEST_OPTIONS, **options}
    cidr = opts.pop("cluster_cidr", "10.0.0.0/8")
    return render(build_view(services, slices, node_name=NODE, node_ips=[NODE_IP, NODE_IP_ALT, EXTERNAL_IP],
                             cluster_cidr=cidr, **opts))


def check(rs, cases):
    failures = []
    for name, src, dst, dport, output, masq, *proto in cases:
        t = trace_packet(rs, src=src, dst=dst, dport=dport, proto=(proto[0] if proto else "tcp"),
                         local_ips=LOCAL_IPS)
        if t.output != output or t.masquerade != masq:
            failures.append(f"{name}: got {t.output!r} masq={t.masquerade}, want {output!r} masq={masq}\n  "
                            + "\n  ".join(t.matches))
    assert not failures, "\n".join(failures)


def test_no_endpoints_reject():
    s = svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.41", externalIPs=["192.168.99.11"],
            ports=[port(nodePort=3001)], status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}})
    check(rules([s], []), [
        ("pod to cluster IP", POD, "172.30.0.41", 80, "REJECT", False),
        ("external to external IP", CLIENT, "192.168.99.11", 80, "REJECT", False),
        ("pod to NodePort", POD, NODE_IP, 3001, "REJECT", False),
        ("external to NodePort", CLIENT, NODE_IP, 3001, "REJECT", False),
        ("pod to LB IP", POD, "1.2.3.4", 80, "REJECT", False),
        ("external to LB IP", CLIENT, "1.2.3.4", 80, "REJECT", False),
    ])


def test_cluster_ip_general():
    services = [
        svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("http")]),
        svc("ns2", "svc2", clusterIP="172.30.0.42", ports=[
            port("http"), port("https", 443, targetPort=8443), port("dns-udp", 53, "UDP"),
            port("dns-tcp", 53, targetPort=5353), port("dns-sctp", 53, "SCTP")]),
    ]
    slices = [
        eps("ns1", "svc1", [ep("10.180.0.1", NODE)], [port("http")]),
        eps("ns2", "svc2", [ep("10.180.0.1", NODE), ep("10.180.2.1", "node2")],
            [port("http"), port("https", 8443), port("dns-udp", 53, "UDP"), port("dns-tcp", 5353),
             port("dns-sctp", 53, "SCTP")]),
    ]
    check(rules(services, slices), [
        ("simple clusterIP", "10.180.0.2", "172.30.0.41", 80, "10.180.0.1:80", False),
        ("hairpin to cluster IP", "10.180.0.1", "172.30.0.41", 80, "10.180.0.1:80", True),
        ("multiple endpoints", "10.180.0.2", "172.30.0.42", 80, "10.180.0.1:80, 10.180.2.1:80", False),
        ("TargetPort", "10.180.0.2", "172.30.0.42", 443, "10.180.0.1:8443, 10.180.2.1:8443", False),
        ("same port, TCP", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:5353, 10.180.2.1:5353", False, "tcp"),
        ("same port, UDP", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False, "udp"),
        ("same port, SCTP", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False, "sctp"),
        ("TCP-only port and UDP", "10.180.0.2", "172.30.0.42", 80, "", False, "udp"),
        ("svc1 lacks svc2's ports", "10.180.0.2", "172.30.0.41", 443, "", False),
    ])


def test_load_balancer_with_source_ranges():
    s = svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.41", ports=[port(nodePort=3001)],
            loadBalancerSourceRanges=["192.168.0.0/24", " 203.0.113.0/25"],
            status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"ip": "5.6.7.8"}]}})
    rs = rules([s], [eps("ns1", "svc1", [ep("10.180.0.1")], [port()])])
    e = "10.180.0.1:80"
    check(rs, [
        ("pod to cluster IP", POD, "172.30.0.41", 80, e, False),
        ("external to nodePort", CLIENT, NODE_IP, 3001, e, True),
        ("nodePort bypasses source ranges", BLOCKED_CLIENT, NODE_IP, 3001, e, True),
        ("accepted external to LB1", CLIENT, "1.2.3.4", 80, e, True),
        ("accepted external to LB2", CLIENT, "5.6.7.8", 80, e, True),
        ("blocked external to LB1", BLOCKED_CLIENT, "1.2.3.4", 80, "DROP", False),
        ("blocked external to LB2", BLOCKED_CLIENT, "5.6.7.8", 80, "DROP", False),
        ("pod to LB1 blocked", POD, "1.2.3.4", 80, "DROP", False),
        ("pod to LB2 blocked", POD, "5.6.7.8", 80, "DROP", False),
        ("node to LB1 allowed", NODE_IP, "1.2.3.4", 80, e, True),
        ("node to LB2 allowed", NODE_IP, "5.6.7.8", 80, e, True),
        ("same node to LB1, SNATted to LB1", "1.2.3.4", "1.2.3.4", 80, e, True),
        ("same node to LB2, SNATted to LB2", "5.6.7.8", "5.6.7.8", 80, e, True),
    ])


@pytest.mark.parametrize("localhost,addresses,alt_allowed", [
    (True, (), True),
    (False, (), True),
    (False, ("192.168.0.0/24", "127.0.0.1/32"), False),
    (False, ("192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"), True),
])
def test_node_ports(localhost, addresses, alt_allowed):
    s = svc("ns1", "svc1", type="NodePort", clusterIP="172.30.0.41", ports=[port(nodePort=3001)])
    rs = rules([s], [eps("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.2.1", NODE)], [port()])],
               localhost_nodeports=localhost, node_port_addresses=addresses)
    both = "10.180.0.1:80, 10.180.2.1:80"
    check(rs, [
        ("pod to cluster IP", POD, "172.30.0.41", 80, both, False),
        ("external to nodePort", CLIENT, NODE_IP, 3001, both, True),
        ("node to nodePort", NODE_IP, NODE_IP, 3001, both, True),
        ("localhost to nodePort", "127.0.0.1", "127.0.0.1", 3001, both if localhost else "", localhost),
        ("external to secondary node IP", CLIENT, NODE_IP_ALT, 3001, both if alt_allowed else "", alt_allowed),
    ])


def test_health_check_node_port_accepted_then_gone():
    s = svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.42", ports=[port(nodePort=3001)],
            healthCheckNodePort=30000, externalTrafficPolicy="Local")
    check(rules([s], [], node_port_addresses=("127.0.0.0/8",)),
          [("firewall accepts HealthCheckNodePort", "1.2.3.4", NODE_IP, 30000, "ACCEPT", False)])
    check(rules([], []), [("no rule once deleted", "1.2.3.4", NODE_IP, 30000, "", False)])


def _policy_service(policy):
    return svc("ns1", "svc1", type="LoadBalancer", externalTrafficPolicy=policy, clusterIP="172.30.0.41",
               externalIPs=["192.168.99.11"], ports=[port(nodePort=3001, targetPort=80)], healthCheckNodePort=30000,
               status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}})


def test_external_traffic_policy_local():
    rs = rules([_policy_service("Local")], [eps("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.2.1", NODE)], [port()])])
    both, local = "10.180.0.1:80, 10.180.2.1:80", "10.180.2.1:80"
    check(rs, [
        ("pod to cluster IP", POD, "172.30.0.41", 80, both, False),
        ("pod to external IP", POD, "192.168.99.11", 80, both, False),
        ("external to external IP", CLIENT, "192.168.99.11", 80, local, False),
        ("pod to LB IP", POD, "1.2.3.4", 80, both, False),
        ("external to LB IP", CLIENT, "1.2.3.4", 80, local, False),
        ("pod to NodePort", POD, NODE_IP, 3001, both, False),
        ("external to NodePort", CLIENT, NODE_IP, 3001, local, False),
    ])


def test_external_traffic_policy_cluster():
    rs = rules([_policy_service("Cluster")], [eps("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.2.1", NODE)], [port()])])
    both = "10.180.0.1:80, 10.180.2.1:80"
    check(rs, [
        ("pod to cluster IP", POD, "172.30.0.41", 80, both, False),
        ("pod to external IP", POD, "192.168.99.11", 80, both, True),
        ("external to external IP", CLIENT, "192.168.99.11", 80, both, True),
        ("pod to LB IP", POD, "1.2.3.4", 80, both, True),
        ("external to LB IP", CLIENT, "1.2.3.4", 80, both, True),
        ("pod to NodePort", POD, NODE_IP, 3001, both, True),
        ("external to NodePort", CLIENT, NODE_IP, 3001, both, True),
    ])


@pytest.mark.parametrize("policy,nodes,output", [
    ("Cluster", [NODE, "node1", "node2"], "10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80"),
    ("Local", [NODE, "node1", "node2"], "10.0.1.1:80"),
    ("Local", [NODE, NODE, "node2"], "10.0.1.1:80, 10.0.1.2:80"),
    ("Local", ["node0", "node1", "node2"], "DROP"),
])
def test_internal_traffic_policy(policy, nodes, output):
    s = svc("ns1", "svc1", clusterIP="172.30.1.1", internalTrafficPolicy=policy, ports=[port(name="")])
    slices = [eps("ns1", "svc1", [ep(f"10.0.1.{i + 1}", n, ready=True) for i, n in enumerate(nodes)],
                  [port(name="")])]
    check(rules([s], slices), [("pod to ClusterIP", POD, "172.30.1.1", 80, output, False)])
    check(rules([s], []), [("endpoints deleted", POD, "172.30.1.1", 80, "REJECT", False)])


def _terminating_service(policy):
    return svc("ns1", "svc1", clusterIP="172.30.1.1", type="LoadBalancer", externalTrafficPolicy=policy,
               ports=[port(name="", targetPort=80)], healthCheckNodePort=30000,
               status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}})


READY = dict(ready=True, serving=True, terminating=False)
TERMINATING = dict(ready=False, serving=True, terminating=True)
GONE = dict(ready=False, serving=False, terminating=True)


@pytest.mark.parametrize("endpoints,to_cluster_ip,to_lb", [
    ([("10.0.1.1", NODE, READY), ("10.0.1.2", NODE, READY), ("10.0.1.3", NODE, TERMINATING),
      ("10.0.1.4", NODE, GONE), ("10.0.1.5", "node-1", READY)],
     ("10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", False), ("10.0.1.1:80, 10.0.1.2:80", False)),
    ([("10.0.1.2", NODE, TERMINATING), ("10.0.1.3", NODE, TERMINATING), ("10.0.1.4", NODE, GONE),
      ("10.0.1.5", "node-1", READY)],
     ("10.0.1.5:80", False), ("10.0.1.2:80, 10.0.1.3:80", False)),
    ([("10.0.1.5", "node-1", TERMINATING)], ("10.0.1.5:80", False), ("DROP", False)),
    ([("10.0.1.5", NODE, GONE), ("10.0.1.5", "node-1", GONE)], ("REJECT", False), ("REJECT", False)),
], ids=["ready exist", "only terminating", "terminating remote", "none usable"])
def test_terminating_endpoints_traffic_policy_local(endpoints, to_cluster_ip, to_lb):
    slices = [eps("ns1", "svc1", [ep(ip, node, **c) for ip, node, c in endpoints], [port(name="")])]
    rs = rules([_terminating_service("Local")], slices)
    check(rs, [("pod to clusterIP", POD, "172.30.1.1", 80, *to_cluster_ip),
               ("external to LB", CLIENT, "1.2.3.4", 80, *to_lb)])
    check(rules([_terminating_service("Local")], []),
          [("after delete", POD, "172.30.1.1", 80, "REJECT", False), ("after delete", CLIENT, "1.2.3.4", 80, "REJECT", False)])


@pytest.mark.parametrize("endpoints,to_cluster_ip,to_lb", [
    ([("10.0.1.1", NODE, READY), ("10.0.1.2", NODE, READY), ("10.0.1.3", "another-node", TERMINATING),
      ("10.0.1.4", "another-node", GONE), ("10.0.1.5", "another-node", READY)],
     ("10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", False), ("10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", True)),
    ([("10.0.1.2", NODE, TERMINATING), ("10.0.1.3", NODE, TERMINATING), ("10.0.1.4", "another-node", GONE),
      ("10.0.1.5", "another-node", TERMINATING)],
     ("10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80", False), ("10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80", True)),
    ([("10.0.1.5", "node-1", TERMINATING)], ("10.0.1.5:80", False), ("10.0.1.5:80", True)),
    ([("10.0.1.5", NODE, GONE), ("10.0.1.5", "node-1", GONE)], ("REJECT", False), ("REJECT", False)),
], ids=["ready exist", "only terminating", "terminating remote", "none usable"])
def test_terminating_endpoints_traffic_policy_cluster(endpoints, to_cluster_ip, to_lb):
    slices = [eps("ns1", "svc1", [ep(ip, node, **c) for ip, node, c in endpoints], [port(name="")])]
    check(rules([_terminating_service("Cluster")], slices),
          [("pod to clusterIP", POD, "172.30.1.1", 80, *to_cluster_ip),
           ("external to LB", CLIENT, "1.2.3.4", 80, *to_lb)])


# --------------------------------------------------------------------------- TestInternalExternalMasquerade
def _masquerade_setup():
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
    slices = [eps(f"ns{i}", f"svc{i}", [ep(f"10.180.0.{i}", NODE), ep(f"10.180.1.{i}", "remote")], [port()])
              for i in (1, 2, 3)]
    return services, slices


ALL1, ALL2, ALL3 = "10.180.0.1:80, 10.180.1.1:80", "10.180.0.2:80, 10.180.1.2:80", "10.180.0.3:80, 10.180.1.3:80"
MASQ_FLOWS = [
    ("pod to ClusterIP", POD, "172.30.0.41", 80, ALL1, False),
    ("pod to NodePort", POD, NODE_IP, 3001, ALL1, True),
    ("pod to LB", POD, "1.2.3.4", 80, ALL1, True),
    ("node to ClusterIP", NODE_IP, "172.30.0.41", 80, ALL1, True),
    ("node to NodePort", NODE_IP, NODE_IP, 3001, ALL1, True),
    ("localhost to NodePort", "127.0.0.1", "127.0.0.1", 3001, ALL1, True),
    ("node to LB", NODE_IP, "1.2.3.4", 80, ALL1, True),
    ("external to ClusterIP", CLIENT, "172.30.0.41", 80, ALL1, True),
    ("external to NodePort", CLIENT, NODE_IP, 3001, ALL1, True),
    ("external to LB", CLIENT, "1.2.3.4", 80, ALL1, True),
    ("pod to ClusterIP with eTP:Local", POD, "172.30.0.42", 80, ALL2, False),
    ("pod to NodePort with eTP:Local", POD, NODE_IP, 3002, ALL2, False),
    ("pod to LB with eTP:Local", POD, "5.6.7.8", 80, ALL2, False),
    ("node to ClusterIP with eTP:Local", NODE_IP, "172.30.0.42", 80, ALL2, True),
    ("node to NodePort with eTP:Local", NODE_IP, NODE_IP, 3001, ALL1, True),
    ("localhost to NodePort with eTP:Local", "127.0.0.1", "127.0.0.1", 3002, ALL2, True),
    ("node to LB with eTP:Local", NODE_IP, "5.6.7.8", 80, ALL2, True),
    ("external to ClusterIP with eTP:Local", CLIENT, "172.30.0.42", 80, ALL2, True),
    ("external to NodePort with eTP:Local", CLIENT, NODE_IP, 3002, "10.180.0.2:80", False),
    ("external to LB with eTP:Local", CLIENT, "5.6.7.8", 80, "10.180.0.2:80", False),
    ("pod to ClusterIP with iTP:Local", POD, "172.30.0.43", 80, "10.180.0.3:80", False),
    ("pod to NodePort with iTP:Local", POD, NODE_IP, 3003, ALL3, True),
    ("pod to LB with iTP:Local", POD, "9.10.11.12", 80, ALL3, True),
    ("node to ClusterIP with iTP:Local", NODE_IP, "172.30.0.43", 80, "10.180.0.3:80", True),
    ("node to NodePort with iTP:Local", NODE_IP, NODE_IP, 3003, ALL3, True),
    ("localhost to NodePort with iTP:Local", "127.0.0.1", "127.0.0.1", 3003, ALL3, True),
    ("node to LB with iTP:Local", NODE_IP, "9.10.11.12", 80, ALL3, True),
    ("external to ClusterIP with iTP:Local", CLIENT, "172.30.0.43", 80, "10.180.0.3:80", True),
    ("external to NodePort with iTP:Local", CLIENT, NODE_IP, 3003, ALL3, True),
    ("external to LB with iTP:Local", CLIENT, "9.10.11.12", 80, ALL3, True),
]
NO_DETECTOR = {
    "node to ClusterIP": (None, False), "node to ClusterIP with eTP:Local": (None, False),
    "node to ClusterIP with iTP:Local": (None, False), "external to ClusterIP": (None, False),
    "external to ClusterIP with eTP:Local": (None, False), "external to ClusterIP with iTP:Local": (None, False),
    "pod to NodePort with eTP:Local": ("10.180.0.2:80", None), "pod to LB with eTP:Local": ("10.180.0.2:80", None),
}
MASQ_ALL = {"pod to ClusterIP": (None, True), "pod to ClusterIP with eTP:Local": (None, True),
            "pod to ClusterIP with iTP:Local": (None, True)}


@pytest.mark.parametrize("masquerade_all,detector,overrides", [
    (False, True, {}),
    (False, False, NO_DETECTOR),
    (True, True, MASQ_ALL),
    (True, False, {**MASQ_ALL, **{k: v for k, v in NO_DETECTOR.items() if k.startswith("pod to")}}),
], ids=["base", "no LocalTrafficDetector", "masqueradeAll", "masqueradeAll, no LocalTrafficDetector"])
def test_internal_external_masquerade(masquerade_all, detector, overrides):
    services, slices = _masquerade_setup()
    rs = rules(services, slices, masquerade_all=masquerade_all, cluster_cidr="10.0.0.0/8" if detector else None)
    flows = []
    for name, src, dst, dport, output, masq in MASQ_FLOWS:
        out, m = overrides.get(name, (None, None))
        flows.append((name, src, dst, dport, output if out is None else out, masq if m is None else m))
    check(rs, flows)


@pytest.mark.parametrize("localhost,addresses,alt_allowed", [
    (True, (), True),
    (False, (), True),
    (False, ("192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"), False),
])
def test_node_ports_ipv6(localhost, addresses, alt_allowed):
    s = svc("ns1", "svc1", type="NodePort", clusterIP="fd00:172:30::41", ports=[port(nodePort=3001)])
    sl = EndpointSlice.model_validate({
        "metadata": {"namespace": "ns1", "name": "svc1-1", "labels": {"kubernetes.io/service-name": "svc1"}},
        "addressType": "IPv6", "ports": [port()],
        "endpoints": [ep("fd00:10:180::1"), ep("fd00:10:180::2:1", NODE)]})
    view = build_view([s], [sl], node_name=NODE, node_ips=["2001:db8::1", "2001:db8:1::2"],
                      cluster_cidr="fd00:10::/64", ip_family="IPv6",
                      **{**KUBE_PROXY_TEST_OPTIONS, "localhost_nodeports": localhost}, node_port_addresses=addresses)
    rs = render(view)
    assert "KUBE-FIREWALL" not in rs.chain_names("filter")  # no localhost NodePorts on IPv6
    both = "[fd00:10:180::1]:80, [fd00:10:180::2:1]:80"
    check(rs, [
        ("pod to cluster IP", "fd00:10::2", "fd00:172:30::41", 80, both, False),
        ("external to nodePort", "2600:5200::1", "2001:db8::1", 3001, both, True),
        ("node to nodePort", "2001:db8::1", "2001:db8::1", 3001, both, True),
        ("localhost to nodePort is ignored", "::1", "::1", 3001, "", False),
        ("external to secondary node IP", "2600:5200::1", "2001:db8:1::2", 3001, both if alt_allowed else "",
         alt_allowed),
    ])
