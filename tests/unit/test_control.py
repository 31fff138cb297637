"""Controllers, without root: deployments, replica sets, scheduler, IPAM, node failure, endpoints."""
from __future__ import annotations

import ipaddress
import random

import pytest

from netemu.control import ipam, labels, naming, nodes
from netemu.control.cluster import AdmissionError, Cluster
from netemu.control.endpoints import endpoints_view
from netemu.control.pods import is_ready, set_condition
from netemu.spec.models import Deployment, Pod, Service
from clusters import Clock, ready_cluster  # noqa: F401 (Clock: other tests import it from here)


def make_cluster(seed: int = 1) -> tuple[Cluster, Clock]:
    return ready_cluster(3, seed)


def deployment(name="web", replicas=3, image="sysnet4admin/echo-hname", labels_=None) -> Deployment:
    lb = labels_ or {"app": name}
    return Deployment.model_validate({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": lb},
                 "template": {"metadata": {"labels": lb},
                              "spec": {"containers": [{"name": "c", "image": image,
                                                       "ports": [{"containerPort": 80, "name": "http"}]}]}}}})


def service(name="web", selector=None, **spec) -> Service:
    return Service.model_validate({"metadata": {"name": name, "namespace": "default"},
                                   "spec": {"selector": selector or {"app": name},
                                            "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}], **spec}})


def kubelet_runs_everything(c: Cluster) -> None:
    """Stand-in for the data plane: every pod with an address is running and ready."""
    for p in c.store.list("Pod"):
        if p.status.pod_ip and not p.metadata.deletion_timestamp and p.status.phase != "Running":
            p.status.phase = "Running"
            set_condition(p, "Ready", True, c.now_str())
            c.store.update(p)
    c.reconcile()


def active_pods(c: Cluster) -> list[Pod]:
    return [p for p in c.store.list("Pod", "default") if not p.metadata.deletion_timestamp]  # kube-system has its own


def test_deployment_creates_named_pods_spread_over_workers():
    c, _ = make_cluster()
    c.apply([deployment(replicas=3)])
    c.reconcile()
    pods = active_pods(c)
    assert len(pods) == 3
    rs = c.store.list("ReplicaSet")[0]
    h = rs.metadata.labels["pod-template-hash"]
    assert rs.metadata.name == f"web-{h}"
    assert set(h) <= set("456789bcdf")  # the decimal hash, safe-encoded, as Kubernetes writes it
    for p in pods:
        prefix, suffix = p.metadata.name.rsplit("-", 1)
        assert prefix == rs.metadata.name and len(suffix) == 5 and set(suffix) <= set(naming.ALPHANUMS)
    assert sorted(p.spec.node_name for p in pods) == ["w1-k8s", "w2-k8s", "w3-k8s"]
    for p in pods:
        node = c.store.get("Node", "", p.spec.node_name)
        assert ipaddress.ip_address(p.status.pod_ip) in ipaddress.ip_network(node.spec.pod_cidr)


def test_same_seed_same_names_other_seed_other_names():
    names = []
    for seed in (7, 7, 8):
        c, _ = make_cluster(seed)
        c.apply([deployment(replicas=2)])
        c.reconcile()
        names.append(sorted(p.metadata.name for p in c.store.list("Pod")))
    assert names[0] == names[1] and names[0] != names[2]


def test_scale_up_down_and_replace_deleted_pod():
    c, _ = make_cluster()
    c.apply([deployment(replicas=2)])
    c.reconcile()
    kubelet_runs_everything(c)
    c.scale("Deployment", "default", "web", 5)
    c.reconcile()
    assert len(active_pods(c)) == 5
    kubelet_runs_everything(c)
    dep = c.store.get("Deployment", "default", "web")
    assert (dep.status.replicas, dep.status.ready_replicas) == (5, 5)
    c.scale("Deployment", "default", "web", 1)
    c.reconcile()
    assert len(active_pods(c)) == 1
    victim = active_pods(c)[0]
    c.delete("Pod", "default", victim.metadata.name)
    c.reconcile()
    fresh = active_pods(c)
    assert len(fresh) == 1 and fresh[0].metadata.name != victim.metadata.name
    assert fresh[0].status.pod_ip != victim.status.pod_ip  # host-local IPAM moves on
    with pytest.raises(AdmissionError):
        c.scale("Deployment", "default", "web", -1)


def test_rolling_update_keeps_availability():
    c, _ = make_cluster()
    c.apply([deployment(replicas=4)])
    c.reconcile()
    kubelet_runs_everything(c)
    c.apply([deployment(replicas=4, image="nginx")])
    for _ in range(20):
        c.reconcile()
        ready = sum(1 for p in active_pods(c) if is_ready(p))
        assert ready >= 3  # maxUnavailable 25% of 4
        assert len(active_pods(c)) <= 5  # maxSurge 25% of 4
        kubelet_runs_everything(c)
        for p in list(c.store.list("Pod")):
            if p.metadata.deletion_timestamp:
                c.finalize_pod(p)
    images = {p.spec.containers[0].image for p in active_pods(c)}
    assert images == {"nginx"} and len(active_pods(c)) == 4
    rss = c.store.list("ReplicaSet")
    assert sorted(rs.spec.replicas for rs in rss) == [0, 4]


def test_cordon_and_taints_steer_the_scheduler():
    c, _ = make_cluster()
    for n in ("w1-k8s", "w2-k8s"):
        nodes.set_unschedulable(c, c.store.get("Node", "", n), True)
    c.apply([deployment(replicas=3)])
    c.reconcile()
    assert {p.spec.node_name for p in active_pods(c)} == {"w3-k8s"}
    nodes.set_unschedulable(c, c.store.get("Node", "", "w3-k8s"), True)
    c.apply([deployment(name="late", replicas=1)])
    c.reconcile()
    late = [p for p in active_pods(c) if p.metadata.name.startswith("late-")][0]
    assert late.spec.node_name is None
    cond = next(x for x in late.status.conditions if x.type == "PodScheduled")
    assert cond.status == "False" and "0/4 nodes are available" in cond.message
    assert "untolerated taint" in cond.message and "unschedulable" in cond.message


def test_node_failure_evicts_after_timeout():
    c, clock = make_cluster()
    c.lab.spec.pod_eviction_timeout_seconds = 5
    c.apply([deployment(replicas=3)])
    c.reconcile()
    kubelet_runs_everything(c)
    node = c.store.get("Node", "", "w2-k8s")
    nodes.set_ready(c, node, False, "NodeStatusUnknown", "gone")
    c.reconcile()
    on_w2 = [p for p in c.store.list("Pod") if p.spec.node_name == "w2-k8s"]
    assert on_w2 and all(not is_ready(p) for p in on_w2)  # endpoints drop them at once
    assert not any(p.metadata.deletion_timestamp for p in on_w2)
    clock.t += 5.1
    c.reconcile()
    assert all(p.metadata.deletion_timestamp for p in on_w2)
    moved = [p for p in active_pods(c)]
    assert len(moved) == 3 and all(p.spec.node_name != "w2-k8s" for p in moved)


def test_endpoint_slices_follow_readiness_and_named_ports():
    c, _ = make_cluster()
    c.apply([deployment(replicas=2), service()])
    c.reconcile()
    sl = c.store.list("EndpointSlice")
    assert len(sl) == 1
    assert all(ep.conditions.ready is False for ep in sl[0].endpoints)
    assert sl[0].ports[0].port == 80  # named targetPort "http" resolved from the pod
    kubelet_runs_everything(c)
    sl = c.store.list("EndpointSlice")[0]
    assert all(ep.conditions.ready for ep in sl.endpoints) and len(sl.endpoints) == 2
    assert sl.metadata.labels["kubernetes.io/service-name"] == "web"
    view = endpoints_view(c.store.get("Service", "default", "web"), [sl])
    assert len(view["subsets"][0]["addresses"]) == 2
    # deleting the Service removes its slices
    c.delete("Service", "default", "web")
    c.reconcile()
    assert c.store.list("EndpointSlice") == []


def test_service_allocation_and_conflicts():
    c, _ = make_cluster()
    s1 = service(name="a", type="NodePort")
    c.apply([s1])
    ip = s1.spec.cluster_ip
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.96.0.0/12")
    assert 30000 <= s1.spec.ports[0].node_port <= 32767
    # re-applying keeps the allocated IP and node port
    again = service(name="a", type="NodePort")
    c.apply([again])
    cur = c.store.get("Service", "default", "a")
    assert cur.spec.cluster_ip == ip and cur.spec.ports[0].node_port == s1.spec.ports[0].node_port
    clash = service(name="b", type="NodePort")
    clash.spec.ports[0].node_port = s1.spec.ports[0].node_port
    with pytest.raises(AdmissionError, match="already allocated"):
        c.apply([clash])
    outside = service(name="c", clusterIP="10.200.0.1")
    with pytest.raises(AdmissionError, match="not in the valid range"):
        c.apply([outside])
    headless = service(name="h", clusterIP="None")
    c.apply([headless])
    assert c.store.get("Service", "default", "h").spec.cluster_ip == "None"


def test_ipam_helpers():
    assert ipam.node_pod_cidrs("172.16.0.0/16", 24, 3) == ["172.16.0.0/24", "172.16.1.0/24", "172.16.2.0/24"]
    with pytest.raises(ipam.Exhausted):
        ipam.node_pod_cidrs("172.16.0.0/23", 24, 3)
    assert ipam.next_pod_ip("10.0.0.0/29", [], None) == "10.0.0.2"
    assert ipam.next_pod_ip("10.0.0.0/29", ["10.0.0.2"], "10.0.0.2") == "10.0.0.3"
    assert ipam.next_pod_ip("10.0.0.0/29", ["10.0.0.3"], "10.0.0.6") == "10.0.0.2"  # wraps around
    with pytest.raises(ipam.Exhausted):
        ipam.next_pod_ip("10.0.0.0/30", ["10.0.0.2"], None)
    rng = random.Random(0)
    used = {str(ipaddress.ip_address("10.96.0.0") + i) for i in range(1, 50)}
    assert ipam.allocate_cluster_ip("10.96.0.0/24", used, rng) not in used
    assert ipam.allocate_node_port("30000-30002", {30000, 30001}, rng) == 30002


def test_label_selectors():
    sel = labels.parse("app=web,tier!=db,env in (a,b),!legacy,gpu")
    assert labels.matches(sel, {"app": "web", "env": "a", "gpu": "1"})
    assert not labels.matches(sel, {"app": "web", "env": "c", "gpu": "1"})
    assert not labels.matches(sel, {"app": "web", "env": "a", "gpu": "1", "legacy": "y"})
    assert not labels.matches(sel, {"app": "web", "env": "a", "gpu": "1", "tier": "db"})
    assert labels.format_selector(labels.parse("a=b")) == "a=b"


def test_store_indexes_follow_owners_namespaces_and_deletions():
    c, _ = make_cluster()
    c.apply([deployment(replicas=2)])
    c.reconcile()
    dep = c.store.list("Deployment", "default")[0]
    (rs,) = c.store.owned("ReplicaSet", dep.metadata.uid)
    pods = c.store.owned("Pod", rs.metadata.uid)
    assert len(pods) == 2 and all(p.metadata.namespace == "default" for p in pods)
    assert {p.metadata.name for p in c.store.list("Pod", "default")} == {p.metadata.name for p in pods}
    assert c.store.list("Pod", "nowhere") == []
    # orphaned by an update: the index follows the object, not the first version of it
    pods[0].metadata.owner_references = None
    c.store.update(pods[0])
    assert len(c.store.owned("Pod", rs.metadata.uid)) == 1
    c.store.delete("Deployment", "default", dep.metadata.name)
    assert not c.store.has_uid(dep.metadata.uid)
    c._collect_garbage()
    assert c.store.owned("ReplicaSet", dep.metadata.uid) == []
