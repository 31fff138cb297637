"""A dual-stack lab in the CLI's lab views: `netemu labs`' NETWORK column, `up`'s host gateway, and `netemu graph`
(the lab segment, nodes, pods and Services with their IPv6 addresses beside the IPv4 ones, as kubeadm writes
"v4,v6"); an IPv4-only lab's output is unchanged."""
from __future__ import annotations

from types import SimpleNamespace

from netemu.cli import graph, lab_cmds
from test_graph import EVENTS, LAB, eslice, node, pod, service

NET6 = "fd00:192:168:1::/64"
LAB6 = {"metadata": {"name": "ds"}, "spec": {"network": "192.168.1.0/24", "gateway": "192.168.1.1",
                                              "network6": NET6, "gateway6": "fd00:192:168:1::1",
                                              "podCIDR6": "fd00:10:244::/56"}}


def test_labs_network_column():
    assert lab_cmds.lab_network({"network": "192.168.1.0/24"}) == "192.168.1.0/24"
    assert lab_cmds.lab_network({}) == "?"
    assert lab_cmds.lab_network({"network": "192.168.1.0/24", "network6": NET6, "podCIDR6": "fd00:10:244::/56"}) \
        == "192.168.1.0/24,fd00:192:168:1::/64"


def test_labs_row_of_a_dual_stack_lab(monkeypatch):
    claim = {"network": "192.168.23.0/24", "network6": "fd00:192:168:23::/64", "proxyMode": "nftables",
             "nodes": [{"name": "m-k8s"}, {"name": "w1-k8s"}]}
    monkeypatch.setattr(lab_cmds.lifecycle, "claimed_spec", lambda name: claim)
    monkeypatch.setattr(lab_cmds, "daemon_pid", lambda name: None)
    monkeypatch.setattr(lab_cmds, "_status_without_process", lambda name: "Crashed")
    assert lab_cmds._lab_row("ds") == ["ds", "Crashed", "192.168.23.0/24,fd00:192:168:23::/64", "2", "?",
                                       "nftables", "-"]
    del claim["network6"]
    assert lab_cmds._lab_row("ds")[2] == "192.168.23.0/24"


def test_up_names_both_host_gateways():
    v4 = SimpleNamespace(gateway="192.168.1.1", network6=None, gateway6=None)
    assert lab_cmds.host_gateway(v4) == "192.168.1.1"
    assert lab_cmds.host_gateway(SimpleNamespace(gateway="192.168.1.1")) == "192.168.1.1"  # a spec before IPv6
    ds = SimpleNamespace(gateway="192.168.1.1", network6=NET6, gateway6="fd00:192:168:1::1")
    assert lab_cmds.host_gateway(ds) == "192.168.1.1,fd00:192:168:1::1"


def test_graph_lab_networks():
    assert graph.lab_networks(LAB["spec"]) == ("192.168.1.0/24", "192.168.1.1")
    assert graph.lab_networks(LAB6["spec"]) == ("192.168.1.0/24,fd00:192:168:1::/64", "192.168.1.1,fd00:192:168:1::1")
    # gateway6 unset: network6's first address, as the lab takes it
    assert graph.lab_networks({"network": "192.168.1.0/24", "gateway": "192.168.1.1", "network6": NET6})[1] \
        == "192.168.1.1,fd00:192:168:1::1"
    assert graph.lab_networks({}) == ("", "")


def _dual_objects():
    n = node("w1-k8s", "192.168.1.101", "172.16.1.0/24")
    n["spec"]["podCIDRs"] = ["172.16.1.0/24", "fd00:10:244:1::/64"]
    n["status"]["addresses"] = [{"type": "InternalIP", "address": "192.168.1.101"},
                                {"type": "InternalIP", "address": "fd00:192:168:1::101"},
                                {"type": "Hostname", "address": "w1-k8s"}]
    p = pod("web", "172.16.1.2", "w1-k8s")
    p["status"]["podIPs"] = [{"ip": "172.16.1.2"}, {"ip": "fd00:10:244:1::2"}]
    svc = service("web6", "NodePort", "10.96.0.20", ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="PreferDualStack",
                  clusterIPs=["10.96.0.20", "fd00:10:96::14"])
    host = eslice("api6", [("fd00:192:168:1::101", None, "", True)])  # a host-network endpoint over IPv6
    return {"Node": [n], "Pod": [p], "Service": [svc, service("api6", ip="fd00:10:96::1")],
            "EndpointSlice": [eslice("web6", [("172.16.1.2", "web", "w1-k8s", True),
                                              ("fd00:10:244:1::2", "web", "w1-k8s", True)]), host]}


def test_graph_of_a_dual_stack_lab():
    pic = graph.build(_dual_objects(), lab=LAB6)
    assert pic.network == "192.168.1.0/24,fd00:192:168:1::/64"
    assert pic.gateway == "192.168.1.1,fd00:192:168:1::1"
    (n,) = pic.nodes
    assert (n.ip, n.ip6, n.pod_cidr) == ("192.168.1.101", "fd00:192:168:1::101", "172.16.1.0/24,fd00:10:244:1::/64")
    assert pic.pods[0].ip6 == "fd00:10:244:1::2"
    svc = next(s for s in pic.services if s.name == "web6")
    assert svc.cluster_ip == "10.96.0.20,fd00:10:96::14"
    dot = graph.to_dot(pic)
    assert "lab ds  192.168.1.0/24,fd00:192:168:1::/64  host 192.168.1.1,fd00:192:168:1::1" in dot
    assert "node w1-k8s\\n192.168.1.101\\nfd00:192:168:1::101\\npods 172.16.1.0/24,fd00:10:244:1::/64" in dot
    assert "web\\n172.16.1.2 on w1-k8s\\nfd00:10:244:1::2" in dot
    assert "clusterIP 10.96.0.20,fd00:10:96::14" in dot
    # the IPv6 host-network endpoint is drawn to its node
    assert '"svc:default:api6" -> "node:w1-k8s" [label="[fd00:192:168:1::101]:80"' in dot
    assert 'label="[fd00:10:244:1::2]:80"' in dot and 'label="172.16.1.2:80"' in dot
    mermaid = graph.to_mermaid(pic)
    assert "%% lab ds 192.168.1.0/24,fd00:192:168:1::/64" in mermaid
    assert "fd00:192:168:1::101" in mermaid and "fd00:10:244:1::2" in mermaid


def test_graph_of_an_ipv4_lab_is_unchanged():
    """Single-stack objects give the same labels as before (no second address, no podCIDRs join)."""
    objects = {"Node": [node("w1-k8s", "192.168.1.101", "172.16.1.0/24")],
               "Pod": [pod("web", "172.16.1.2", "w1-k8s")],
               "Service": [service("web", clusterIPs=["10.96.0.20"])]}
    objects["Node"][0]["spec"]["podCIDRs"] = ["172.16.1.0/24"]
    objects["Pod"][0]["status"]["podIPs"] = [{"ip": "172.16.1.2"}]
    pic = graph.build(objects, events=EVENTS, lab=LAB)
    dot = graph.to_dot(pic)
    assert "lab lab  192.168.1.0/24  host 192.168.1.1" in dot
    assert "node w1-k8s\\n192.168.1.101\\npods 172.16.1.0/24\\n" in dot or \
        "node w1-k8s\\n192.168.1.101\\npods 172.16.1.0/24\"" in dot
    assert "web\\n172.16.1.2 on w1-k8s\"" in dot
    assert "clusterIP 10.96.0.20\\n" in dot
    assert pic.nodes[0].ip6 == "" and pic.pods[0].ip6 == ""


def test_describe_endpoints_join_host_and_port_as_kubectl(monkeypatch):
    """kubectl's formatEndpoints uses net.JoinHostPort: an IPv6 endpoint is [addr]:port."""
    from netemu.cli import ingress_cmds, tables

    assert tables.host_port("172.16.1.2", 80) == "172.16.1.2:80"
    assert tables.host_port("fd00:10:244:1::2", 80) == "[fd00:10:244:1::2]:80"
    eps = [{"metadata": {"name": "hname6"}, "subsets": [{"addresses": [{"ip": "fd00:10:244:1::2"}],
                                                         "ports": [{"port": 80}]}]},
           {"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "172.16.1.3"}], "ports": [{"port": 8080}]}]}]
    monkeypatch.setattr(ingress_cmds, "list_objects", lambda client, kind, ns: eps)
    assert ingress_cmds._endpoints_by_service(None, "default") == {"hname6": ["[fd00:10:244:1::2]:80"],
                                                                  "web": ["172.16.1.3:8080"]}
