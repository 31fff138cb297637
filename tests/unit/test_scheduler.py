"""The scheduler, without root: each filter and score of kube-scheduler's default profile, with cases
taken from the behaviour kube-scheduler documents (and its own plugin tests), the FailedScheduling
message as kube-scheduler words it, preemption, and determinism for a seed."""
from __future__ import annotations

import pytest

from netemu.control import nodes, scheduler
from netemu.control.cluster import Cluster
from netemu.control.pods import condition
from netemu.control.scheduler import (
    NodeInfo, PodInfo, Sel, Status, fit_error, fits_resources, node_term_matches, score_balanced,
    score_least_allocated, toleration_matches,
)
from netemu.spec.models import Namespace, Node, NodeSelectorTerm, Pod, Taint, Toleration
from netemu.spec.podresources import pod_requests, qos_class
from clusters import Clock, ready_cluster


def cluster(workers: int = 3, seed: int = 1, capacity: dict | None = None, **node_kw) -> tuple[Cluster, Clock]:
    return ready_cluster(workers, seed, {"capacity": capacity, **node_kw})


def pod(name: str, requests: dict | None = None, ns: str = "default", labels: dict | None = None, **spec) -> Pod:
    container = {"name": "c", "image": "nginx"}
    if requests is not None:
        container["resources"] = {"requests": requests}
    return Pod.model_validate({"metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
                               "spec": {"containers": [container], **spec}})


def run(c: Cluster, *pods: Pod) -> list[Pod]:
    c.apply(list(pods))
    c.reconcile()
    return [c.store.get("Pod", p.metadata.namespace, p.metadata.name) for p in pods]


def failed_scheduling(p: Pod) -> str:
    cond = condition(p, "PodScheduled")
    assert cond is not None and cond.status == "False", p.status.conditions
    return cond.message


def label(c: Cluster, node: str, **labels) -> None:
    n = c.store.get("Node", "", node)
    n.metadata.labels = {**n.metadata.labels, **labels}
    c.store.update(n)


def taint(c: Cluster, node: str, key: str, effect: str, value: str | None = None) -> None:
    n = c.store.get("Node", "", node)
    n.spec.taints = [*(n.spec.taints or []), Taint(key=key, value=value, effect=effect)]
    c.store.update(n)


def test_an_unschedulable_pod_is_told_again_after_five_minutes_though_nothing_changed():
    """podMaxInUnschedulablePodsDuration: the scheduler's own timer runs it, with no input changed."""
    c, clock = cluster()
    run(c, pod("big", {"cpu": "64"}))
    ev = [e for e in c.events_for("Pod", "default", "big") if e.reason == "FailedScheduling"]
    assert len(ev) == 1 and ev[0].count == 1
    clock.t += scheduler.RESCHEDULE_EVENT_EVERY + 1
    c.reconcile()
    assert ev[0].count == 2


def test_a_namespace_label_change_reschedules_a_pod_waiting_on_a_namespace_selector():
    """Namespaces are among the scheduler's inputs (an affinity term's namespaceSelector reads them)."""
    c, _ = cluster()
    label(c, "w1-k8s", zone="a")
    c.apply([Namespace.model_validate({"metadata": {"name": "other", "labels": {"team": "x"}}})])
    run(c, pod("anchor", ns="other", labels={"app": "anchor"}, nodeSelector={"zone": "a"}))
    follower, = run(c, pod("follower", affinity={"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "anchor"}}, "namespaceSelector": {"matchLabels": {"team": "y"}},
         "topologyKey": "kubernetes.io/hostname"}]}}))
    assert follower.spec.node_name is None
    ns = c.store.get("Namespace", "", "other")
    ns.metadata.labels = {**ns.metadata.labels, "team": "y"}
    c.store.update(ns)
    c.reconcile()
    assert c.store.get("Pod", "default", "follower").spec.node_name == "w1-k8s"


# ---------------------------------------------------------------------------- tolerations (ToleratesTaint)
@pytest.mark.parametrize("tol, taint_, ok", [
    ({"key": "foo", "operator": "Equal", "value": "bar", "effect": "NoSchedule"},
     {"key": "foo", "value": "bar", "effect": "NoSchedule"}, True),
    ({"key": "foo", "value": "bar", "effect": "NoSchedule"}, {"key": "foo", "value": "bar", "effect": "NoSchedule"},
     True),  # an empty operator is Equal
    ({"key": "foo", "operator": "Exists", "effect": "NoSchedule"}, {"key": "foo", "value": "bar",
                                                                     "effect": "NoSchedule"}, True),
    ({"key": "foo", "operator": "Equal", "value": "baz", "effect": "NoSchedule"},
     {"key": "foo", "value": "bar", "effect": "NoSchedule"}, False),
    ({"key": "foo", "operator": "Exists", "effect": "NoExecute"}, {"key": "foo", "effect": "NoSchedule"}, False),
    ({"key": "foo", "operator": "Exists"}, {"key": "foo", "effect": "PreferNoSchedule"}, True),  # any effect
    ({"operator": "Exists"}, {"key": "anything", "value": "x", "effect": "NoExecute"}, True),  # tolerates all
    ({"key": "other", "operator": "Exists"}, {"key": "foo", "effect": "NoSchedule"}, False),
])
def test_toleration_matches_taint(tol, taint_, ok):
    assert toleration_matches(Toleration.model_validate(tol), Taint.model_validate(taint_)) is ok


# ---------------------------------------------------------------------------- the seeds' cases and messages
def test_a_pod_that_does_not_fit_is_not_deployed_in_kube_schedulers_words():
    """Seed 003: 64 CPUs fit nowhere; the control plane is tainted, the workers lack the CPU."""
    c, _ = cluster()
    big, = run(c, pod("big", {"cpu": "64"}))
    assert big.spec.node_name is None and big.status.phase == "Pending"
    assert failed_scheduling(big) == (
        "0/4 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "3 Insufficient cpu. preemption: 0/4 nodes are available: 1 Preemption is not helpful for scheduling, "
        "3 No preemption victims found for incoming pod.")
    ev = [e for e in c.events_for("Pod", "default", "big") if e.reason == "FailedScheduling"]
    assert len(ev) == 1 and ev[0].type == "Warning" and ev[0].source == "default-scheduler"
    # retried when something changes: a bigger node would take it
    for n in c.store.list("Node"):
        if n.metadata.name == "w2-k8s":
            n.status.allocatable = {**n.status.allocatable, "cpu": "64"}
            c.store.update(n)
    c.reconcile()
    assert c.store.get("Pod", "default", "big").spec.node_name == "w2-k8s"


def test_fit_error_sorts_its_reasons_as_strings():
    st = {f"n{i}": Status(scheduler.UNSCHEDULABLE, ("Insufficient cpu",), "NodeResourcesFit") for i in range(10)}
    st.update({f"m{i}": Status(scheduler.UNRESOLVABLE, ("node(s) were unschedulable",), "NodeUnschedulable")
               for i in range(2)})
    st["x"] = Status(scheduler.UNSCHEDULABLE, ("Insufficient cpu", "Insufficient memory"), "NodeResourcesFit")
    # "10 ..." sorts before "2 ...", as sort.Strings does; one node can give several reasons
    assert fit_error(13, st) == ("0/13 nodes are available: 1 Insufficient memory, 11 Insufficient cpu, "
                                 "2 node(s) were unschedulable.")
    assert fit_error(4, {}, "Preemption is not helpful for scheduling") == \
        "0/4 nodes are available: 4 Preemption is not helpful for scheduling."


def test_cordoned_nodes_and_taints_in_the_message():
    c, _ = cluster()
    for n in ("w1-k8s", "w2-k8s"):
        nodes.set_unschedulable(c, c.store.get("Node", "", n), True)
    taint(c, "w3-k8s", "dedicated", "NoSchedule", "db")
    p, = run(c, pod("p"))
    assert failed_scheduling(p).startswith(
        "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 1 node(s) had untolerated taint "
        "{node-role.kubernetes.io/control-plane: }, 2 node(s) were unschedulable. preemption: 0/4 nodes are "
        "available: 4 Preemption is not helpful for scheduling.")
    # the toleration of the taint steers it there
    q, = run(c, pod("q", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "db",
                                        "effect": "NoSchedule"}]))
    assert q.spec.node_name == "w3-k8s"
    # tolerating node.kubernetes.io/unschedulable passes a cordon (as DaemonSet pods do)
    r, = run(c, pod("r", tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                                        "effect": "NoSchedule"}, {"key": "dedicated", "operator": "Exists"}]))
    assert r.spec.node_name in ("w1-k8s", "w2-k8s", "w3-k8s")


def test_a_down_node_is_tainted_unreachable():
    c, _ = cluster(workers=1)
    nodes.set_ready(c, c.store.get("Node", "", "w1-k8s"), False, "NodeStatusUnknown", "gone")
    p, = run(c, pod("p"))
    assert "1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }" in failed_scheduling(p)


# ---------------------------------------------------------------------------- node selection
def _node(labels: dict, name: str = "n1") -> Node:
    return Node.model_validate({"metadata": {"name": name, "labels": labels}})


@pytest.mark.parametrize("term, labels, ok", [
    ({"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd", "nvme"]}]}, {"disk": "ssd"}, True),
    ({"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}, {"disk": "hdd"}, False),
    ({"matchExpressions": [{"key": "disk", "operator": "NotIn", "values": ["hdd"]}]}, {}, True),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {"gpu": ""}, True),
    ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {"gpu": "1"}, False),
    ({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}, {"cores": "8"}, True),
    ({"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["4"]}]}, {"cores": "8"}, False),
    ({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}, {"cores": "many"}, False),
    ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}, {}, True),
    ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}, {}, False),
    ({}, {"anything": "x"}, False),  # an empty term matches nothing
])
def test_node_selector_terms(term, labels, ok):
    assert node_term_matches(NodeSelectorTerm.model_validate(term), _node(labels)) is ok


def test_node_selector_and_required_affinity_steer_pods():
    c, _ = cluster()
    label(c, "w3-k8s", disk="ssd")
    p, = run(c, pod("p", nodeSelector={"disk": "ssd"}))
    assert p.spec.node_name == "w3-k8s"
    q, = run(c, pod("q", nodeSelector={"disk": "nvme"}))
    assert failed_scheduling(q).startswith("0/4 nodes are available: 1 node(s) had untolerated taint "
                                           "{node-role.kubernetes.io/control-plane: }, 3 node(s) didn't match "
                                           "Pod's node affinity/selector.")
    # the terms are ORed
    aff = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["nvme"]}]},
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["w1-k8s"]}]}]}}}
    r, = run(c, pod("r", affinity=aff))
    assert r.spec.node_name == "w1-k8s"
    # a label added later lets the pending pod go (it is tried again when a node changes)
    label(c, "w2-k8s", disk="nvme")
    c.reconcile()
    assert c.store.get("Pod", "default", "q").spec.node_name == "w2-k8s"


def test_preferred_node_affinity_wins_among_feasible_nodes():
    c, _ = cluster()
    label(c, "w2-k8s", zone="b")
    aff = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 80, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}]}}
    placed = run(c, *[pod(f"p{i}", affinity=aff) for i in range(3)])
    assert all(p.spec.node_name == "w2-k8s" for p in placed)


def test_prefer_no_schedule_is_avoided_not_refused():
    c, _ = cluster(workers=2)
    taint(c, "w1-k8s", "flaky", "PreferNoSchedule")
    placed = run(c, *[pod(f"p{i}") for i in range(2)])
    assert [p.spec.node_name for p in placed] == ["w2-k8s", "w2-k8s"]
    nodes.set_unschedulable(c, c.store.get("Node", "", "w2-k8s"), True)
    q, = run(c, pod("q"))
    assert q.spec.node_name == "w1-k8s"


# ---------------------------------------------------------------------------- resources
def _pod_spec(containers, init=None, overhead=None) -> Pod:
    return Pod.model_validate({"metadata": {"name": "p"}, "spec": {
        "containers": [{"name": f"c{i}", "image": "x", "resources": r} for i, r in enumerate(containers)],
        "initContainers": [{"name": f"i{i}", "image": "x", **r} for i, r in enumerate(init or [])],
        "overhead": overhead}})


def test_effective_requests_as_kube_scheduler_computes_them():
    # the example of computePodResourceRequest's comment: max(sum of containers, any init container)
    p = _pod_spec([{"requests": {"cpu": "2", "memory": "1G"}}, {"requests": {"cpu": "1", "memory": "1G"}}],
                  init=[{"resources": {"requests": {"cpu": "2", "memory": "1G"}}},
                        {"resources": {"requests": {"cpu": "2", "memory": "3G"}}}])
    assert pod_requests(p.spec) == {"cpu": 3000, "memory": 3_000_000_000}
    # overhead is added; limits stand for missing requests
    p = _pod_spec([{"limits": {"cpu": "500m"}}], overhead={"cpu": "250m", "memory": "120Mi"})
    assert pod_requests(p.spec) == {"cpu": 750, "memory": 120 << 20}
    # a sidecar (restartPolicy Always) runs alongside: it adds to the containers and to later init containers
    p = _pod_spec([{"requests": {"cpu": "1"}}],
                  init=[{"restartPolicy": "Always", "resources": {"requests": {"cpu": "1"}}},
                        {"resources": {"requests": {"cpu": "3"}}}])
    assert pod_requests(p.spec)["cpu"] == 4000
    # scoring counts a container without requests as 100m and 200Mi
    assert pod_requests(_pod_spec([{}]).spec, non_zero=True) == {"cpu": 100, "memory": 200 << 20}


@pytest.mark.parametrize("resources, qos", [
    ([{}], "BestEffort"),
    ([{"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}], "Guaranteed"),
    ([{"limits": {"cpu": "1", "memory": "1Gi"}}], "Guaranteed"),  # requests default to limits
    ([{"requests": {"cpu": "1"}}], "Burstable"),
    ([{"limits": {"cpu": "1", "memory": "1Gi"}}, {}], "Burstable"),
])
def test_qos_class(resources, qos):
    assert qos_class(_pod_spec(resources).spec) == qos


def test_node_resources_fit_reasons():
    c, _ = cluster(workers=1, capacity={"cpu": "2", "memory": "1Gi", "pods": "3", "example.com/gpu": "1"})
    node = NodeInfo(c.store.get("Node", "", "w1-k8s"))
    fits = lambda requests: fits_resources(PodInfo(pod("x", requests)), node)  # noqa: E731
    assert fits({"cpu": "2"}) == []
    assert fits({"cpu": "2100m", "memory": "2Gi"}) == ["Insufficient cpu", "Insufficient memory"]
    assert fits({"example.com/gpu": "2"}) == ["Insufficient example.com/gpu"]
    for i in range(3):
        node.add(PodInfo(pod(f"y{i}")))
    assert fits({}) == ["Too many pods"]


def test_resources_fill_nodes_and_the_rest_waits():
    c, _ = cluster(capacity={"cpu": "1", "memory": "2Gi"})
    placed = run(c, *[pod(f"p{i}", {"cpu": "600m"}) for i in range(4)])
    assert sorted(p.spec.node_name for p in placed[:3]) == ["w1-k8s", "w2-k8s", "w3-k8s"]
    assert "3 Insufficient cpu" in failed_scheduling(placed[3])
    # deleting one makes room: the waiting pod is bound on the next pass
    c.delete_pod(c.store.get("Pod", "default", "p0"))
    c.finalize_pod(c.store.get("Pod", "default", "p0"))
    c.reconcile()
    assert c.store.get("Pod", "default", "p3").spec.node_name == placed[0].spec.node_name


def test_least_allocated_and_balanced_allocation_scores():
    # kube-scheduler's LeastAllocated example: cpu (4000-3000)*100/4000 = 25, memory (10000-5000)*100/10000 = 50
    n = Node.model_validate({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "4", "memory": "10000",
                                                                                  "pods": "110"}}})
    info = NodeInfo(n)
    info.add(PodInfo(pod("a", {"cpu": "2", "memory": "3000"})))
    incoming = PodInfo(pod("b", {"cpu": "1", "memory": "2000"}))
    assert score_least_allocated(incoming, [info]) == {"n": (25 + 50) // 2}
    # BalancedAllocation: fractions 0.75 and 0.5 -> std 0.125 -> 87
    assert score_balanced(incoming, [info]) == {"n": 87}


def test_host_ports_conflict():
    c, _ = cluster(workers=2)
    hp = {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}
    a = Pod.model_validate({"metadata": {"name": "a"}, "spec": hp})
    b = Pod.model_validate({"metadata": {"name": "b"}, "spec": hp})
    d = Pod.model_validate({"metadata": {"name": "d"}, "spec": hp})
    a, b, d = run(c, a, b, d)
    assert {a.spec.node_name, b.spec.node_name} == {"w1-k8s", "w2-k8s"}
    assert "2 node(s) didn't have free ports for the requested pod ports" in failed_scheduling(d)


# ---------------------------------------------------------------------------- spreading and affinity
def test_topology_spread_counts_the_tainted_control_plane_unless_taints_are_honored():
    """kube-scheduler's well-known surprise: nodeTaintsPolicy defaults to Ignore, so the control plane is a
    domain with 0 pods and, with maxSkew 1, a second pod per worker would make the skew 2."""
    c, _ = cluster()
    tsc = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}}}]
    placed = run(c, *[pod(f"web{i}", labels={"app": "web"}, topologySpreadConstraints=tsc) for i in range(4)])
    assert sorted(p.spec.node_name for p in placed[:3]) == ["w1-k8s", "w2-k8s", "w3-k8s"]
    assert failed_scheduling(placed[3]).startswith(
        "0/4 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "3 node(s) didn't match pod topology spread constraints. preemption: 0/4 nodes are available: "
        "1 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod.")


def test_topology_spread_max_skew_one_over_hostnames():
    c, _ = cluster()
    tsc = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}}, "nodeTaintsPolicy": "Honor"}]
    placed = run(c, *[pod(f"web{i}", labels={"app": "web"}, topologySpreadConstraints=tsc) for i in range(6)])
    counts = {}
    for p in placed:
        counts[p.spec.node_name] = counts.get(p.spec.node_name, 0) + 1
    assert counts == {"w1-k8s": 2, "w2-k8s": 2, "w3-k8s": 2}
    # a node taken away makes the skew too large on one side: the pod waits with the plugin's reason
    nodes.set_unschedulable(c, c.store.get("Node", "", "w3-k8s"), True)
    nodes.set_unschedulable(c, c.store.get("Node", "", "w2-k8s"), True)
    # the cordoned nodes still count as domains (nodeTaintsPolicy Ignore), the control plane not (it does not
    # match the pod's node affinity, and nodeAffinityPolicy Honor leaves it out)
    tsc2 = [{**tsc[0], "nodeTaintsPolicy": "Ignore"}]
    workers = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}]}]}}}
    extra, late = run(c, *[pod(f"more{i}", labels={"app": "web"}, topologySpreadConstraints=tsc2, affinity=workers)
                           for i in range(2)])
    assert extra.spec.node_name == "w1-k8s"  # 3 against 2 and 2: skew 1
    assert failed_scheduling(late).startswith(  # 4 against 2: skew 2
        "0/4 nodes are available: 1 node(s) didn't match pod topology spread constraints, 1 node(s) had untolerated "
        "taint {node-role.kubernetes.io/control-plane: }, 2 node(s) were unschedulable. preemption: 0/4 nodes are "
        "available: 1 No preemption victims found for incoming pod, 3 Preemption is not helpful for scheduling.")


def test_topology_spread_on_a_missing_label():
    c, _ = cluster()
    label(c, "w1-k8s", **{"topology.kubernetes.io/zone": "a"})
    tsc = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "z"}}}]
    p, q = run(c, pod("p", labels={"app": "z"}, topologySpreadConstraints=tsc),
               pod("q", labels={"app": "z"}, topologySpreadConstraints=tsc, nodeSelector={"kubernetes.io/hostname":
                                                                                          "w2-k8s"}))
    assert p.spec.node_name == "w1-k8s"
    assert ("1 node(s) didn't match pod topology spread constraints (missing required label)"
            in failed_scheduling(q))


def test_required_pod_anti_affinity_one_per_node():
    c, _ = cluster()
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    placed = run(c, *[pod(f"db{i}", labels={"app": "db"}, affinity=anti) for i in range(4)])
    assert sorted(p.spec.node_name for p in placed[:3]) == ["w1-k8s", "w2-k8s", "w3-k8s"]
    assert failed_scheduling(placed[3]).startswith(
        "0/4 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "3 node(s) didn't match pod anti-affinity rules.")
    # a pod without the rule but matching it is kept off by the existing pods' anti-affinity
    other, = run(c, pod("other", labels={"app": "db"}))
    assert "3 node(s) didn't satisfy existing pods anti-affinity rules" in failed_scheduling(other)


def test_required_pod_affinity_follows_its_peer():
    c, _ = cluster()
    aff = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    lonely, = run(c, pod("web", labels={"app": "web"}, affinity=aff))
    assert "3 node(s) didn't match pod affinity rules" in failed_scheduling(lonely)
    cache, = run(c, pod("cache", labels={"app": "cache"}, nodeSelector={"kubernetes.io/hostname": "w2-k8s"}))
    c.reconcile()
    assert c.store.get("Pod", "default", "web").spec.node_name == "w2-k8s"
    # the first of a group with affinity to itself may go anywhere
    self_aff = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "grp"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    first, second = run(c, pod("g1", labels={"app": "grp"}, affinity=self_aff),
                        pod("g2", labels={"app": "grp"}, affinity=self_aff))
    assert first.spec.node_name and second.spec.node_name == first.spec.node_name


def test_preferred_anti_affinity_spreads_and_default_spreading_follows_replicasets():
    c, _ = cluster()
    anti = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "s"}},
                                            "topologyKey": "kubernetes.io/hostname"}}]}}
    placed = run(c, *[pod(f"s{i}", labels={"app": "s"}, affinity=anti) for i in range(3)])
    assert sorted(p.spec.node_name for p in placed) == ["w1-k8s", "w2-k8s", "w3-k8s"]
    # a Deployment's pods spread by the system default constraints (over their ReplicaSet's selector)
    from test_control import deployment

    c2, _ = cluster()
    c2.apply([deployment(replicas=6)])
    c2.reconcile()
    where = [p.spec.node_name for p in c2.store.list("Pod", "default")]
    assert sorted(where.count(n) for n in ("w1-k8s", "w2-k8s", "w3-k8s")) == [2, 2, 2]


def test_namespaces_of_affinity_terms():
    c, _ = cluster()
    c.apply([Pod.model_validate({"metadata": {"name": "x", "namespace": "other", "labels": {"app": "db"}},
                                 "spec": {"containers": [{"name": "c", "image": "nginx"}],
                                          "nodeSelector": {"kubernetes.io/hostname": "w1-k8s"}}})])
    c.reconcile()
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname",
         "namespaces": ["other"]}]}}
    only_w1 = {"kubernetes.io/hostname": "w1-k8s"}
    p, = run(c, pod("p", affinity=anti, nodeSelector=only_w1))
    assert "didn't match pod anti-affinity rules" in failed_scheduling(p)
    same_ns = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    q, = run(c, pod("q", affinity=same_ns, nodeSelector=only_w1))  # its own namespace only: no conflict
    assert q.spec.node_name == "w1-k8s"


def test_selectors_compile_as_the_api_server_reads_them():
    from netemu.spec.models import LabelSelector

    assert Sel.of(None).matches({"a": "b"}) is False  # a nil selector selects nothing
    assert Sel.of(LabelSelector()).matches({"a": "b"}) is True  # an empty one everything
    sel = Sel.of(LabelSelector.model_validate({"matchExpressions": [{"key": "v", "operator": "NotIn",
                                                                     "values": ["1"]}]}), {"team": "x"}, ["team"])
    assert sel.matches({"team": "x"}) and not sel.matches({"team": "y"}) and not sel.matches({"team": "x", "v": "1"})


# ---------------------------------------------------------------------------- priority and preemption
def test_a_higher_priority_pod_preempts_lower_priority_victims():
    c, _ = cluster(workers=1, capacity={"cpu": "1", "memory": "2Gi"})
    from netemu.spec.models import StoredObject

    c.apply([StoredObject.model_validate({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                          "metadata": {"name": "high"}, "value": 1000})])
    low1, low2 = run(c, pod("low1", {"cpu": "400m"}), pod("low2", {"cpu": "400m"}))
    for p in (low1, low2):
        p.status.pod_ip = p.status.pod_ip or "172.16.1.9"
    high, = run(c, pod("high", {"cpu": "600m"}, priorityClassName="high"))
    assert high.spec.priority == 1000
    assert high.status.nominated_node_name == "w1-k8s"
    victims = [p for p in (c.store.find("Pod", "default", "low1"), c.store.find("Pod", "default", "low2"))
               if p is None or p.metadata.deletion_timestamp]
    assert len(victims) == 1  # one is enough; the other is reprieved
    assert any(e.reason == "Preempted" for n in ("low1", "low2") for e in c.events_for("Pod", "default", n))
    for p in list(c.store.list("Pod", "default")):
        if p.metadata.deletion_timestamp:
            c.finalize_pod(p)
    c.reconcile()
    assert c.store.get("Pod", "default", "high").spec.node_name == "w1-k8s"
    # preemptionPolicy Never: not eligible
    never, = run(c, pod("never", {"cpu": "900m"}, priorityClassName="high", preemptionPolicy="Never"))
    assert failed_scheduling(never).endswith("preemption: not eligible due to preemptionPolicy=Never.")


def test_unknown_priority_class_is_refused():
    from netemu.control.cluster import AdmissionError

    c, _ = cluster()
    with pytest.raises(AdmissionError, match='pods "p" is forbidden: no PriorityClass with name gold was found'):
        c.apply([pod("p", priorityClassName="gold")])


# ---------------------------------------------------------------------------- gates, determinism
def test_scheduling_gates_hold_a_pod():
    c, _ = cluster()
    p, = run(c, pod("p", schedulingGates=[{"name": "example.com/wait"}]))
    cond = condition(p, "PodScheduled")
    assert p.spec.node_name is None and cond.reason == "SchedulingGated"
    p.spec.scheduling_gates = None
    c.store.update(p)
    c.reconcile()
    assert c.store.get("Pod", "default", "p").spec.node_name


def test_same_seed_same_placement():
    def placement(seed):
        c, _ = cluster(seed=seed, workers=5)
        return [p.spec.node_name for p in run(c, *[pod(f"p{i}") for i in range(12)])]

    assert placement(3) == placement(3)
    assert any(placement(s) != placement(3) for s in (4, 5, 6))


def test_one_pass_costs_what_it_schedules():
    """1,000 pods of a Deployment with preferred anti-affinity and a spread constraint on 20 nodes: one
    reconcile binds them all, with incremental counts (not pods x pods)."""
    import time

    from test_control import deployment

    c, _ = cluster(workers=20, capacity={"cpu": "64", "memory": "256Gi", "pods": "250"})
    d = deployment(replicas=1000)
    spec = d.spec.template.spec
    spec.topology_spread_constraints = [scheduler_tsc()]  # nodeTaintsPolicy Honor: the workers only
    from netemu.spec.models import Affinity

    spec.affinity = Affinity.model_validate({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}},
                                           "topologyKey": "kubernetes.io/hostname"}}]}})
    c.apply([d])
    t0 = time.perf_counter()
    c.reconcile()
    took = time.perf_counter() - t0
    where = [p.spec.node_name for p in c.store.list("Pod", "default")]
    assert None not in where and len(where) == 1000
    per = sorted(where.count(f"w{i}-k8s") for i in range(1, 21))
    assert per[-1] - per[0] <= 1  # maxSkew 1
    assert took < 10, took


def scheduler_tsc():
    from netemu.spec.models import TopologySpreadConstraint

    return TopologySpreadConstraint.model_validate({"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                    "whenUnsatisfiable": "DoNotSchedule", "nodeTaintsPolicy": "Honor",
                                                    "labelSelector": {"matchLabels": {"app": "web"}}})
