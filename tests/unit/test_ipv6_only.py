"""IPv6-only labs: the primary fields hold IPv6 (network, gateway, podCIDR, serviceCIDR, clusterDNS, the
nodes' ip) and every decision that follows the primary family follows IPv6: defaults and validation, nodes,
pod addresses, Services and EndpointSlices, kube-proxy's families, the lab's wires. IPv4-only and dual-stack
labs are what they were (their own tests say so)."""
from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest
import yaml

from netemu.control import endpoints, nodes
from netemu.control.cluster import AdmissionError, Cluster
from netemu.dataplane.labnet import LabNet, NodeNet, PodNet, host_link_sysctls, pod_sysctls
from netemu.spec import families
from netemu.spec.defaults import apply_defaults, default_max_pods, node_pod_limit, pod_addresses
from netemu.spec.errors import SpecError
from netemu.spec.load import load_text
from netemu.spec.models import Condition, Lab, Pod, PodIP, Service
from netemu.spec.validate_pods import pod_capacity

LAB = "t.yaml: document 1 (Lab/t)"
V6 = {"network": "fd00:192:168:1::/64"}


def lab_text(**spec) -> str:
    body = {k: v for k, v in {**V6, **spec}.items() if v is not None}
    return yaml.safe_dump({"apiVersion": "netemu.dev/v1alpha1", "kind": "Lab", "metadata": {"name": "t"},
                           "spec": body}, sort_keys=False)


def load_lab(**spec) -> Lab:
    return load_text(lab_text(**spec), "t.yaml").lab


def errors(**spec) -> list[str]:
    with pytest.raises(SpecError) as e:
        load_text(lab_text(**spec), "t.yaml")
    return e.value.errors


def assert_error(errs: list[str], field: str, *words: str) -> None:
    hits = [e for e in errs if e.startswith(f"{LAB}: {field}: ")]
    assert hits, f"no error at {field} in:\n" + "\n".join(errs)
    assert any(all(w in h for w in words) for h in hits), f"{words} not in {hits}"


# --------------------------------------------------------------------------- the family decisions
def test_the_networks_family_is_the_labs_primary_family():
    v4 = load_text(lab_text(network="192.168.1.0/24"), "t.yaml").lab.spec
    dual = load_text(lab_text(network="192.168.1.0/24,fd00:192:168:1::/64", podCIDR="172.16.0.0/16,fd00:10:244::/56",
                              serviceCIDR="10.96.0.0/12,fd00:10:96::/112"), "t.yaml").lab.spec
    six = load_lab().spec
    assert [families.primary_family(s) for s in (v4, dual, six)] == ["IPv4", "IPv4", "IPv6"]
    assert [families.lab_families(s) for s in (v4, dual, six)] == [["IPv4"], ["IPv4", "IPv6"], ["IPv6"]]
    assert (families.ipv6_only(six), families.ipv6_only(dual), families.dual_stack(six)) == (True, False, False)
    # the primary fields answer for the primary family, whatever it is; the twins for a dual-stack lab's IPv6
    assert families.family_value(six, "service_cidr", "IPv6") == "fd00:10:96::/112"
    assert families.family_value(six, "service_cidr", "IPv4") is None
    assert families.family_value(dual, "service_cidr", "IPv6") == "fd00:10:96::/112"
    assert families.family_value(dual, "pod_cidr", "IPv4") == "172.16.0.0/16"
    assert families.family_value(v4, "pod_cidr", "IPv6") is None
    w1 = six.nodes[1]
    assert families.member_ip(w1, six, "IPv6") == "fd00:192:168:1::101"
    assert families.member_ip(w1, six, "IPv4") is None
    assert families.member_ip(dual.nodes[1], dual, "IPv6") == "fd00:192:168:1::101"
    # a stand-in spec without the IPv6 fields is IPv4-only
    assert families.lab_families(SimpleNamespace(network="10.0.0.0/24")) == ["IPv4"]


# --------------------------------------------------------------------------- defaults
def test_an_ipv6_network_alone_gets_the_seeds_layout_in_ipv6():
    s = load_lab().spec
    assert s.gateway == "fd00:192:168:1::1"
    assert [(n.name, n.ip, n.role) for n in s.nodes] == [
        ("m-k8s", "fd00:192:168:1::10", "control-plane"), ("w1-k8s", "fd00:192:168:1::101", "worker"),
        ("w2-k8s", "fd00:192:168:1::102", "worker"), ("w3-k8s", "fd00:192:168:1::103", "worker")]
    assert (s.pod_cidr, s.node_pod_prefix, s.service_cidr) == ("fd00:10:244::/56", 64, "fd00:10:96::/112")
    assert s.cluster_dns == "fd00:10:96::a"  # kubeadm's pick: the service range's 10th address
    assert (s.network6, s.gateway6, s.pod_cidr6, s.service_cidr6) == (None, None, None, None)
    assert all(n.ip6 is None for n in s.nodes)


def test_written_ipv6_values_are_kept():
    s = load_lab(gateway="fd00:192:168:1::fe", podCIDR="fd00:20::/48", nodePodPrefix=60,
                 serviceCIDR="fd00:30::/108", clusterDNS="fd00:30::53",
                 nodes=[{"name": "cp", "ip": "fd00:192:168:1::2", "role": "control-plane"},
                        {"name": "w", "ip": "fd00:192:168:1::3"}]).spec
    assert (s.gateway, s.pod_cidr, s.node_pod_prefix, s.service_cidr, s.cluster_dns) == (
        "fd00:192:168:1::fe", "fd00:20::/48", 60, "fd00:30::/108", "fd00:30::53")
    assert [n.ip for n in s.nodes] == ["fd00:192:168:1::2", "fd00:192:168:1::3"]


def test_pod_room_of_ipv6_node_subnets():
    assert pod_addresses(64, 128) == 2 ** 64 - 2 and pod_addresses(120, 128) == 254
    assert node_pod_limit(64, 128)[0] == 1023 and node_pod_limit(120, 128)[0] == 254
    assert default_max_pods(64, 128) == 110  # kubelet's maxPods: no raise for kubeadm's /64
    assert default_max_pods(122, 128) == 62
    # IPv4 as before
    assert (pod_addresses(24), default_max_pods(24), default_max_pods(22)) == (253, 110, 1021)
    lab = load_lab(nodePodPrefix=120, podCIDR="fd00:10:244::/112")
    assert pod_capacity(lab)[0] == 4 * 254


# --------------------------------------------------------------------------- validation
def test_a_valid_ipv6_only_lab_loads_without_warnings():
    loaded = load_text(lab_text(), "t.yaml")
    assert loaded.warnings == [] and loaded.lab.spec.network == "fd00:192:168:1::/64"


@pytest.mark.parametrize("spec,field,words", [
    # every range of the lab's family
    ({"podCIDR": "172.16.0.0/16"}, "spec.podCIDR", ("must be IPv6 like spec.network", "fd00:10:244::/56")),
    ({"serviceCIDR": "10.96.0.0/12"}, "spec.serviceCIDR", ("must be IPv6 like spec.network",)),
    ({"podCIDR": "fd00:10:244::/56,172.16.0.0/16"}, "spec.podCIDR", ("more than one entry", "IPv4 first")),
    ({"podCIDR": "fd00:10:244::1/56"}, "spec.podCIDR", ("host bits", "fd00:10:244::/56")),
    ({"network": "fe80::/64"}, "spec.network", ("link-local",)),
    ({"podCIDR": "fd00:192:168::/48"}, "spec.podCIDR", ("overlaps spec.network", "disjoint")),
    # the dual-stack twins have no place here
    ({"podCIDR6": "fd00:10:245::/56"}, "spec.podCIDR6", ("the lab is IPv6-only", "podCIDR itself")),
    ({"nodePodPrefix6": 64}, "spec.nodePodPrefix6", ("the lab is IPv6-only",)),
    ({"nodes": [{"name": "w", "ip": "fd00:192:168:1::5", "ip6": "fd00:192:168:1::6"}]}, "spec.nodes[0].ip6",
     ("the lab is IPv6-only",)),
    # addresses on the segment
    ({"gateway": "192.168.1.1"}, "spec.gateway", ("must be an IPv6 address",)),
    ({"gateway": "fd00:192:168:2::1"}, "spec.gateway", ("inside spec.network fd00:192:168:1::/64",)),
    ({"nodes": [{"name": "w", "ip": "192.168.1.5"}]}, "spec.nodes[0].ip", ("must be an IPv6 address",)),
    ({"nodes": [{"name": "w", "ip": "fd00:192:168:9::5"}]}, "spec.nodes[0].ip", ("inside spec.network",)),
    ({"nodes": [{"name": "w", "ip": "fd00:192:168:1::1"}]}, "spec.nodes[0].ip", ("is the gateway",)),
    ({"nodes": [{"name": "w", "ip": "fd00:192:168:1::5"}, {"name": "v", "ip": "fd00:192:168:1::5"}]},
     "spec.nodes[1].ip", ("duplicate node address",)),
    ({"network": "fd00:192:168:1::/120", "nodes": None}, "spec.nodes", ("::10, ::101-::103", "do not fit")),
    # node subnets as kube-controller-manager cuts them, a service range kube-apiserver takes
    ({"nodePodPrefix": 48}, "spec.nodePodPrefix", ("between the podCIDR's prefix /56 and /120, got /48",)),
    ({"podCIDR": "fd00:10::/40"}, "spec.nodePodPrefix", ("more than 16 bits", "the node CIDR size is too big")),
    ({"podCIDR": "fd00:10:244::/63"}, "spec.podCIDR", ("room for 2 node subnets of /64", "4 nodes")),
    ({"serviceCIDR": "fd00:10:96::/64"}, "spec.serviceCIDR",
     ("--service-cluster-ip-range[0] is too large", "the mask must be >= 108")),
    ({"nodes": [{"name": "w", "ip": "fd00:192:168:1::5", "capacity": {"pods": 300}}], "nodePodPrefix": 120,
      "podCIDR": "fd00:10:244::/112"},
     "spec.nodes[0].capacity.pods", ("must be <= 254",)),
    # kube-dns in the primary family
    ({"clusterDNS": "10.96.0.10"}, "spec.clusterDNS", ("must be an IPv6 address", "fd00:10:96::a")),
    ({"clusterDNS": "fd00:10:97::a"}, "spec.clusterDNS", ("inside spec.serviceCIDR fd00:10:96::/112",)),
    # what is not built for IPv6
    ({"proxyMode": "ipvs"}, "spec.proxyMode", ("not built yet", "iptables or nftables")),
    ({"routers": [{"name": "r1", "ip": "fd00:192:168:1::2", "asn": 64512}]}, "spec.routers", ("not built yet",)),
    ({"uplink": "eth9"}, "spec.uplink", ("not built yet",)),
])
def test_ipv6_only_errors_name_the_field(spec, field, words):
    assert_error(errors(**spec), field, *words)


def test_ipv6_primary_stays_refused_and_a_lone_ipv6_value_in_an_ipv4_lab_says_what_to_write():
    assert_error(errors(network="fd00:192:168:1::/64,192.168.1.0/24"), "spec.network",
                 "IPv6-primary labs are not built yet", "network: 192.168.1.0/24,fd00:192:168:1::/64")
    assert_error(errors(network="192.168.1.0/24", podCIDR="fd00:10:244::/56"), "spec.podCIDR",
                 "spec.network is IPv4", "podCIDR: 172.16.0.0/16,fd00:10:244::/56")


# --------------------------------------------------------------------------- the cluster
def cluster(**spec) -> Cluster:
    from netemu.control import addons

    lab = load_lab(**spec)
    lab.spec.seed = 1
    c = Cluster(lab, clock=lambda: 1_700_000_000.0)
    c.bootstrap()
    # the control process's add-ons: default/kubernetes (its endpoint the control plane's ip) and kube-dns
    c.apply(addons.kubernetes_service(lab, lab.spec.nodes[0].ip) + addons.coredns(lab, "/nonexistent"))
    for n in c.store.list("Node"):
        nodes.set_ready(c, n, True, "KubeletReady", "ok")
    return c


def test_nodes_have_an_ipv6_internal_ip_and_pod_subnet():
    lab = load_lab()
    w1 = next(n for n in nodes.nodes_from_lab(lab, "2024-01-01T00:00:00Z") if n.metadata.name == "w1-k8s")
    assert (w1.spec.pod_cidr, w1.spec.pod_cidrs) == ("fd00:10:244:1::/64", ["fd00:10:244:1::/64"])
    assert [(a.type, a.address) for a in w1.status.addresses] == [
        ("InternalIP", "fd00:192:168:1::101"), ("Hostname", "w1-k8s")]
    assert nodes.internal_ip(w1) == "fd00:192:168:1::101"
    # the secondary family's helpers: nothing beside the primary
    assert nodes.internal_ip6(w1) is None and nodes.node_pod_cidr6(w1) is None
    assert w1.status.capacity["pods"] == "110"


def deployment(replicas: int = 4):
    from netemu.spec.models import Deployment

    lb = {"app": "web"}
    return Deployment.model_validate({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": lb},
                 "template": {"metadata": {"labels": lb},
                              "spec": {"containers": [{"name": "c", "image": "nginx",
                                                       "ports": [{"containerPort": 80}]}]}}}})


def test_pods_get_one_ipv6_address_of_their_nodes_subnet():
    c = cluster()
    c.apply([deployment()])
    c.reconcile()
    pods = [p for p in c.store.list("Pod", "default") if not p.metadata.deletion_timestamp]
    assert len(pods) == 4
    for p in pods:
        node = c.store.get("Node", "", p.spec.node_name)
        assert [x.ip for x in p.status.pod_ips] == [p.status.pod_ip]
        ip = ipaddress.ip_address(p.status.pod_ip)
        assert ip.version == 6 and ip in ipaddress.ip_network(node.spec.pod_cidr)
        assert int(ip) - int(ipaddress.ip_network(node.spec.pod_cidr).network_address) >= 2  # not ::0 nor cni0's ::1
        assert p.status.host_ip == nodes.internal_ip(node)
    assert len({p.status.pod_ip for p in pods}) == 4


def svc(name: str, **spec) -> Service:
    s = Service.model_validate({"metadata": {"name": name, "namespace": "default"},
                                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], **spec}})
    apply_defaults(s)
    return s


def test_services_are_single_stack_ipv6_from_the_service_cidr():
    c = cluster()
    c.apply([svc("web")])
    got = c.store.get("Service", "default", "web").spec
    assert (got.ip_family_policy, got.ip_families) == ("SingleStack", ["IPv6"])
    assert got.cluster_ips == [got.cluster_ip] and ipaddress.ip_address(got.cluster_ip) in \
        ipaddress.ip_network("fd00:10:96::/112")
    assert got.cluster_ip != "fd00:10:96::a"
    dns = c.store.get("Service", "kube-system", "kube-dns").spec
    assert (dns.cluster_ip, dns.ip_families) == ("fd00:10:96::a", ["IPv6"])
    kube = c.store.get("Service", "default", "kubernetes").spec
    assert kube.cluster_ip == "fd00:10:96::1"
    # PreferDualStack gets the one family the lab has; RequireDualStack and IPv4 are refused
    c.apply([svc("pref", ipFamilyPolicy="PreferDualStack")])
    assert c.store.get("Service", "default", "pref").spec.ip_families == ["IPv6"]
    with pytest.raises((AdmissionError, SpecError)):
        c.apply([svc("req", ipFamilyPolicy="RequireDualStack")])
    with pytest.raises((AdmissionError, SpecError)):
        c.apply([svc("v4", ipFamilies=["IPv4"])])
    with pytest.raises((AdmissionError, SpecError)):
        c.apply([svc("asked", clusterIP="fd00:10:97::5")])
    c.apply([svc("mine", clusterIP="fd00:10:96::5")])
    assert c.store.get("Service", "default", "mine").spec.cluster_ip == "fd00:10:96::5"


def test_endpointslices_are_ipv6():
    c = cluster()
    p = Pod.model_validate({"metadata": {"name": "a", "namespace": "default", "labels": {"app": "web"}},
                            "spec": {"nodeName": "w1-k8s", "containers": [{"name": "c", "image": "nginx"}]}})
    p.status.phase, p.status.pod_ip = "Running", "fd00:10:244:1::2"
    p.status.pod_ips = [PodIP(ip="fd00:10:244:1::2")]
    p.status.conditions = [Condition(type="Ready", status="True")]
    c.store.create(p)
    c.apply([svc("web")])
    endpoints.reconcile(c)
    slices = c.store.select("EndpointSlice", "default", {"kubernetes.io/service-name": "web"})
    assert [s.address_type for s in slices] == ["IPv6"]
    assert [a for s in slices for ep in s.endpoints for a in ep.addresses] == ["fd00:10:244:1::2"]
    kube = c.store.select("EndpointSlice", "default", {"kubernetes.io/service-name": "kubernetes"})
    assert [(s.address_type, s.endpoints[0].addresses) for s in kube] == [("IPv6", ["fd00:192:168:1::10"])]


# --------------------------------------------------------------------------- kube-proxy
class NullRunner:
    def run(self, netns, argv, stdin=None):
        return ""


@pytest.mark.parametrize("mode,tool", [("iptables", "ip6tables"), ("nftables", "ip6")])
def test_kube_proxy_runs_the_ipv6_proxier_alone(mode, tool):
    from netemu.dataplane.proxy.kubeproxy import KubeProxy, proxy_families

    lab = load_lab(proxyMode=mode)
    assert proxy_families(lab) == ["IPv6"]
    net = LabNet("t", lab.spec.network, lab.spec.gateway, lab.spec.service_cidr,
                 [NodeNet("w1-k8s", "fd00:192:168:1::101", "fd00:10:244:1::/64")])
    kp = KubeProxy(lab, net, runner=NullRunner())
    node = kp.nodes["w1-k8s"]
    assert list(node.proxiers) == ["IPv6"]
    assert (node.ip, node.pod_cidr) == ("fd00:192:168:1::101", "fd00:10:244::/56")
    backend = node.backend
    assert backend.ip_family == "IPv6"
    if mode == "nftables":
        assert backend.family == "ip6" and backend.syncer.renderer.settings.service_cidrs == ("fd00:10:96::/112",)
    # IPv4 and dual-stack labs keep theirs
    v4 = load_text(lab_text(network="192.168.1.0/24"), "t.yaml").lab
    assert proxy_families(v4) == ["IPv4"]


# --------------------------------------------------------------------------- the wires
def test_the_lab_network_carries_ipv6_in_the_primary_places():
    lab = load_lab()
    n = NodeNet("w1-k8s", "fd00:192:168:1::101", "fd00:10:244:1::/64")
    net = LabNet("t", lab.spec.network, lab.spec.gateway, lab.spec.service_cidr,
                 [NodeNet("m-k8s", "fd00:192:168:1::10", "fd00:10:244::/64"), n])
    assert (net.ipv6_only, net.ipv6, net.dual_stack) == (True, True, False)
    assert net.host_link_commands() == [f"addr add fd00:192:168:1::1/64 dev {net.host_link} nodad",
                                        f"link set {net.host_link} up"]
    cmds = net.node_commands(n, 64)
    assert "addr add fd00:192:168:1::101/64 dev eth0 nodad" in cmds
    assert "addr add fd00:10:244:1::1/64 dev cni0 nodad" in cmds
    assert "route add fd00:10:96::/112 dev eth0 src fd00:192:168:1::101" in cmds
    assert "route add fd00:10:244::/64 via fd00:192:168:1::10 dev eth0" in cmds
    assert not any("default" in c for c in cmds)
    sysctls = net.node_sysctls()
    assert sysctls["net.ipv6.conf.all.forwarding"] == "1" and sysctls["net.ipv6.conf.all.disable_ipv6"] == "0"
    assert sysctls["net.ipv6.conf.all.accept_ra"] == "0" and sysctls["net.ipv6.conf.eth0.autoconf"] == "0"
    assert sysctls["net.bridge.bridge-nf-call-ip6tables"] == "1"
    assert any("addrgenmode none" in c for c in net.pod_port_commands(
        PodNet("default", "p", "w1-k8s", "fd00:10:244:1::2", 64, "fd00:10:244:1::1")))
    pod = PodNet("default", "p", "w1-k8s", "fd00:10:244:1::2", 64, "fd00:10:244:1::1")
    assert pod_sysctls(pod)["net.ipv6.conf.all.disable_ipv6"] == "0"
    assert pod_sysctls(pod)["net.ipv6.conf.eth0.accept_ra"] == "0"
    assert host_link_sysctls(True)["accept_ra"] == "0"
    # an IPv4 lab's wires are as they were: no nodad, IPv6 off
    v4 = LabNet("t", "192.168.1.0/24", "192.168.1.1", "10.96.0.0/12",
                [NodeNet("w1-k8s", "192.168.1.101", "172.16.1.0/24")])
    assert v4.ipv6 is False and "addr add 192.168.1.101/24 dev eth0" in v4.node_commands(
        v4.nodes["w1-k8s"], 24)
    assert v4.node_sysctls()["net.ipv6.conf.all.disable_ipv6"] == "1"


def test_pods_resolv_conf_names_the_ipv6_cluster_dns():
    from netemu.dataplane import podfiles

    pod = Pod.model_validate({"metadata": {"name": "a", "namespace": "default"},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
    apply_defaults(pod)
    assert "nameserver fd00:10:96::a\n" in podfiles.resolv_conf(pod, load_lab())


def test_the_ipv6_only_topology_is_the_defaults_written_out():
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "..", "topologies", "ipv6only.yaml")
    loaded = load_text(open(path).read(), "ipv6only.yaml")
    assert loaded.warnings == []
    written, default = loaded.lab.spec, load_lab().spec
    for field in ("network", "gateway", "pod_cidr", "node_pod_prefix", "service_cidr", "cluster_dns"):
        assert getattr(written, field) == getattr(default, field), field
    assert [(n.name, n.ip, n.role) for n in written.nodes] == [(n.name, n.ip, n.role) for n in default.nodes]
    assert families.lab_families(written) == ["IPv6"]
