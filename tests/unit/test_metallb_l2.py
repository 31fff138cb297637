"""MetalLB's layer2 election: which node's speaker answers ARP for a LoadBalancer IP."""
from __future__ import annotations

import hashlib
import os

from netemu.control import metallb, metallb_l2, nodes
from netemu.control.cluster import Cluster
from netemu.control.pods import set_condition
from netemu.spec.load import load_text
from netemu.spec.metallb import IPAddressPool, L2Advertisement
from netemu.spec.models import Deployment, Lab, LabNode, Service

SEED = os.path.join(os.path.dirname(__file__), "..", "..", "topologies", "seeds", "metallb-config.yaml")
NODES = ["m-k8s", "w1-k8s", "w2-k8s", "w3-k8s"]


EXCLUDE = "node.kubernetes.io/exclude-from-external-load-balancers"


def make_cluster(exclude_control_plane: bool = False) -> Cluster:
    """The seeds' four nodes. The control plane carries kubeadm's exclude label in a lab; most
    tests here drop it so that MetalLB's ordering is checked over all four nodes."""
    lab = Lab()
    lab.metadata.name = "unit"
    lab.spec.nodes = [LabNode(name="m-k8s", ip="192.168.1.10", role="control-plane")] + [
        LabNode(name=f"w{i}-k8s", ip=f"192.168.1.10{i}") for i in (1, 2, 3)]
    c = Cluster(lab, clock=lambda: 1_700_000_000.0)
    c.bootstrap()
    for n in c.store.list("Node"):
        if not exclude_control_plane and n.metadata.labels:
            n.metadata.labels.pop(EXCLUDE, None)
        nodes.set_ready(c, n, True, "KubeletReady", "ok")
    return c


def deployment(name="nginx", replicas=3, node_selector=None) -> Deployment:
    lb = {"app": name}
    pod_spec = {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    return Deployment.model_validate({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": lb},
                 "template": {"metadata": {"labels": lb}, "spec": pod_spec}}})


def lb(name: str, app: str = "nginx", **spec) -> Service:
    return Service.model_validate({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer", "selector": {"app": app},
                 "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}], **spec}})


def pods_ready(c: Cluster) -> None:
    for p in c.store.list("Pod"):
        if p.status.pod_ip and not p.metadata.deletion_timestamp and p.status.phase != "Running":
            p.status.phase = "Running"
            set_condition(p, "Ready", True, c.now_str())
            c.store.update(p)


def run(c: Cluster) -> metallb_l2.Announcements:
    for _ in range(3):
        c.reconcile()
        pods_ready(c)
        metallb.reconcile(c)
    c.reconcile()
    return metallb_l2.reconcile(c)


def seed_cluster(*objs, exclude_control_plane: bool = False) -> Cluster:
    c = make_cluster(exclude_control_plane)
    with open(SEED, encoding="utf-8") as f:
        c.apply(load_text(f.read(), "metallb-config.yaml").objects)
    c.apply([deployment(), *objs])
    return c


def expected_order(ip: str, candidates) -> list[str]:
    return sorted(candidates, key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).digest())


def set_node(c: Cluster, name: str, ready: bool) -> None:
    node = c.store.get("Node", "", name)
    if ready:
        nodes.set_ready(c, node, True, "KubeletReady", "ok")
    else:
        nodes.set_ready(c, node, False, "NodeStatusUnknown", "Kubelet stopped posting node status.")


def test_the_winner_is_metallbs_hash_order_and_stable():
    c = seed_cluster(lb("web"))
    ann = run(c)
    winner = expected_order("192.168.1.11", NODES)[0]
    assert ann.by_ip == {"192.168.1.11": winner}
    assert ann.by_node == {winner: {"192.168.1.11"}}
    assert metallb_l2.announcing_node(c, "default", "web") == winner
    for _ in range(3):
        assert run(c).by_ip == {"192.168.1.11": winner}
    assert [(e.reason, e.message, e.source) for e in c.events_for("Service", "default", "web")
            if e.reason == "nodeAssigned"] == [
        ("nodeAssigned", f'announcing from node "{winner}" with protocol "layer2"', "metallb-speaker")]


def test_order_candidates_matches_metallb_sort():
    # sha256("<node>#<ip>") compared as bytes, lowest first
    ip = "192.168.1.12"
    assert metallb_l2.order_candidates(NODES, ip) == expected_order(ip, NODES)
    assert metallb_l2.order_candidates(NODES, ip, {"w3-k8s": 10})[0] == "w3-k8s"


def test_the_ip_moves_down_the_order_when_nodes_go_and_back_when_they_return():
    c = seed_cluster(lb("web"))
    run(c)
    order = expected_order("192.168.1.11", NODES)
    set_node(c, order[0], False)
    assert run(c).by_ip == {"192.168.1.11": order[1]}
    metallb_l2.set_speaker_alive(c, order[1], False)  # its speaker killed, the node still Ready
    assert run(c).by_ip == {"192.168.1.11": order[2]}
    metallb_l2.set_speaker_alive(c, order[1], True)
    set_node(c, order[0], True)
    assert run(c).by_ip == {"192.168.1.11": order[0]}
    assigned = [e.message for e in c.events_for("Service", "default", "web") if e.reason == "nodeAssigned"]
    assert [m.split('"')[1] for m in assigned] == [order[0], order[1], order[2]]  # order[0] again: counted
    assert [e.count for e in c.events_for("Service", "default", "web") if e.reason == "nodeAssigned"][0] == 2


def test_nobody_announces_without_ready_endpoints():
    c = seed_cluster(lb("empty", app="nothing"))
    ann = run(c)
    assert c.store.get("Service", "default", "empty").status.load_balancer.ingress[0].ip == "192.168.1.11"
    assert ann.by_ip == {} and ann.services[("default", "empty")].reason == "notOwner"


def test_external_traffic_policy_local_announces_from_a_node_with_a_pod():
    c = make_cluster()
    with open(SEED, encoding="utf-8") as f:
        c.apply(load_text(f.read(), "metallb-config.yaml").objects)
    c.apply([deployment(replicas=1), lb("local", externalTrafficPolicy="Local")])
    ann = run(c)
    (pod,) = [p for p in c.store.list("Pod", "default")]
    assert ann.by_ip == {"192.168.1.11": pod.spec.node_name}
    # the pod goes elsewhere: so does the announcement
    c.delete("Pod", "default", pod.metadata.name)
    c.finalize_pod(pod)
    nodes.set_unschedulable(c, c.store.get("Node", "", pod.spec.node_name), True)
    ann = run(c)
    (new,) = [p for p in c.store.list("Pod", "default")]
    assert new.spec.node_name != pod.spec.node_name
    assert ann.by_ip == {"192.168.1.11": new.spec.node_name}


def test_cluster_policy_may_announce_from_a_node_without_pods():
    c = make_cluster()
    with open(SEED, encoding="utf-8") as f:
        c.apply(load_text(f.read(), "metallb-config.yaml").objects)
    c.apply([deployment(replicas=1), lb("web")])
    ann = run(c)
    assert ann.by_ip == {"192.168.1.11": expected_order("192.168.1.11", NODES)[0]}


def test_l2advertisement_node_selectors_and_excluded_nodes():
    c = make_cluster()
    c.store.create(IPAddressPool.model_validate({"metadata": {"name": "p", "namespace": "metallb-system"},
                                                 "spec": {"addresses": ["192.168.1.11-192.168.1.13"]}}))
    c.store.create(L2Advertisement.model_validate({
        "metadata": {"name": "workers", "namespace": "metallb-system"},
        "spec": {"ipAddressPools": ["p"], "nodeSelectors": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                   "values": ["w2-k8s", "w3-k8s"]}]}]}}))
    c.apply([deployment(), lb("web")])
    ann = run(c)
    order = expected_order("192.168.1.11", ["w2-k8s", "w3-k8s"])
    assert ann.by_ip == {"192.168.1.11": order[0]}
    node = c.store.get("Node", "", order[0])
    node.metadata.labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
    c.store.update(node)
    assert run(c).by_ip == {"192.168.1.11": order[1]}


def test_a_pool_without_l2advertisement_is_not_announced():
    c = make_cluster()
    c.store.create(IPAddressPool.model_validate({"metadata": {"name": "p", "namespace": "metallb-system"},
                                                 "spec": {"addresses": ["192.168.1.11-192.168.1.13"]}}))
    c.apply([deployment(), lb("web")])
    ann = run(c)
    assert c.store.get("Service", "default", "web").status.load_balancer.ingress[0].ip == "192.168.1.11"
    assert ann.by_ip == {} and ann.services[("default", "web")].reason == "noMatchingAdvertisement"


def test_interfaces_the_node_does_not_have():
    c = make_cluster()
    c.store.create(IPAddressPool.model_validate({"metadata": {"name": "p", "namespace": "metallb-system"},
                                                 "spec": {"addresses": ["192.168.1.11-192.168.1.13"]}}))
    c.store.create(L2Advertisement.model_validate({"metadata": {"name": "a", "namespace": "metallb-system"},
                                                   "spec": {"interfaces": ["ens192"]}}))
    c.apply([deployment(), lb("web")])
    ann = run(c)
    assert ann.by_ip == {}
    winner = expected_order("192.168.1.11", NODES)[0]
    assert [(e.type, e.message) for e in c.events_for("Service", "default", "web") if e.reason == "announceFailed"] == [
        ("Warning", f'the interfaces specified by LB IP "192.168.1.11" doesn\'t exist in assigned node "{winner}" '
                    'with protocol "layer2"')]


def test_preferred_node_selectors_win_over_the_hash():
    c = make_cluster()
    c.store.create(IPAddressPool.model_validate({"metadata": {"name": "p", "namespace": "metallb-system"},
                                                 "spec": {"addresses": ["192.168.1.11-192.168.1.13"]}}))
    last = expected_order("192.168.1.11", NODES)[-1]
    c.store.create(L2Advertisement.model_validate({
        "metadata": {"name": "a", "namespace": "metallb-system"},
        "spec": {"preferredNodeSelectors": [{"weight": 50, "preference": {
            "matchLabels": {"kubernetes.io/hostname": last}}}]}}))
    c.apply([deployment(), lb("web")])
    assert run(c).by_ip == {"192.168.1.11": last}


def test_shared_ip_is_announced_by_one_node():
    share = {"metallb.io/allow-shared-ip": "k"}
    a, b = lb("a"), lb("b")
    a.metadata.annotations, b.metadata.annotations = dict(share), dict(share)
    b.spec.ports[0].port = 443
    c = seed_cluster(a, b)
    ann = run(c)
    assert ann.by_ip == {"192.168.1.11": expected_order("192.168.1.11", NODES)[0]}
    assert ann.node_of("default", "a") == ann.node_of("default", "b")


def test_elect_is_pure():
    c = seed_cluster(lb("web"))
    run(c)
    args = (c.store.list("Service"), c.store.list("EndpointSlice"), c.store.list("Node"), metallb.load_config(c))
    alive = {n: n != "w1-k8s" for n in NODES}
    first = metallb_l2.elect(*args, alive)
    assert metallb_l2.elect(*args, alive).by_ip == first.by_ip
    assert "w1-k8s" not in first.by_node
    assert metallb_l2.elect(*args[:3], None).by_ip == {}  # no configuration: nothing to announce


def test_the_control_plane_is_excluded_as_kubeadm_labels_it():
    c = seed_cluster(lb("web"), exclude_control_plane=True)
    assert EXCLUDE in c.store.get("Node", "", "m-k8s").metadata.labels
    winner = expected_order("192.168.1.11", [n for n in NODES if n != "m-k8s"])[0]
    assert run(c).by_ip == {"192.168.1.11": winner}
