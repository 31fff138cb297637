"""A change costs what it touches: the controllers' store work for one Deployment scaled among 1,000.

The store's reads are counted (objects handed out by list, select, owned, indexes...) while one
Deployment of 1,000 (each with its Service, in 10 namespaces) is scaled by +3 and its new pods become
ready; and, to show what is counted means something, the same work for a full pass, as a cluster
loaded after a restart takes it.
"""
from __future__ import annotations

import collections

import pytest

from netemu.control import endpoints, workloads
from netemu.control.pods import set_condition
from netemu.control.store import Store
from netemu.spec.models import Deployment, Service
from clusters import ready_cluster

READS = ("list", "select", "owned", "owned_by", "on_node", "services_selecting", "in_namespace",
         "indexed", "slices_holding")


def big_cluster(deployments: int = 1000):
    c, clock = ready_cluster(3, 1, node_kw={"capacity": {"pods": "500"}}, node_pod_prefix=22)
    objs = []
    for i in range(deployments):
        ns, name, lb = f"ns{i % 10}", f"d{i}", {"app": f"d{i}"}
        objs.append(Deployment.model_validate({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": lb}, "template": {
                "metadata": {"labels": lb},
                "spec": {"containers": [{"name": "c", "image": "sysnet4admin/echo-hname",
                                         "ports": [{"containerPort": 80}]}]}}}}))
        objs.append(Service.model_validate({"metadata": {"name": name, "namespace": ns},
                                            "spec": {"selector": lb, "ports": [{"port": 80, "targetPort": 80}]}}))
    c.apply(objs)
    c.reconcile()
    kubelet_readies(c)
    return c, clock


def kubelet_readies(c, pods=None) -> None:
    """The data plane's part: pods with an address run and are ready."""
    for p in pods if pods is not None else c.store.list("Pod"):
        if p.status.pod_ip and not p.metadata.deletion_timestamp and p.status.phase != "Running":
            p.status.phase = "Running"
            set_condition(p, "Ready", True, c.now_str())
            c.store.update(p)
    c.reconcile()


class Counted:
    """Objects the store hands out, per caller (module:function), while in the block; and the objects
    each queued controller is given to sync."""

    def __init__(self, monkeypatch):
        self.reads: collections.Counter = collections.Counter()
        self.synced: collections.Counter = collections.Counter()
        for name in READS:
            orig = getattr(Store, name)

            def counted(store, *a, _orig=orig, **kw):
                out = _orig(store, *a, **kw)
                import sys

                caller = sys._getframe(1)
                self.reads[f"{caller.f_globals['__name__']}:{caller.f_code.co_name}"] += len(out)
                return out
            monkeypatch.setattr(Store, name, counted)
        for mod, fn in ((workloads, "_sync_deployment"), (workloads, "_sync_replicaset")):
            orig = getattr(mod, fn)

            def sync(c, obj, *a, _orig=orig, _fn=fn, **kw):
                self.synced[_fn] += 1
                return _orig(c, obj, *a, **kw)
            monkeypatch.setattr(mod, fn, sync)
        orig_desired = endpoints.desired_slices

        def desired(svc, pods):
            self.synced["service"] += 1
            return orig_desired(svc, pods)
        monkeypatch.setattr(endpoints, "desired_slices", desired)

    def total(self, but: tuple = ()) -> int:
        return sum(n for k, n in self.reads.items() if not k.startswith(but))


@pytest.fixture(scope="module")
def cluster():
    return big_cluster()


def test_scaling_one_deployment_among_1000_touches_a_bounded_number_of_objects(cluster, monkeypatch):
    c, clock = cluster
    n_objects = len(c.store)
    counted = Counted(monkeypatch)
    dep = c.store.get("Deployment", "ns3", "d3")
    dep.spec.replicas += 3
    c.store.update(dep)
    c.reconcile()
    new = [p for p in c.store.list("Pod", "ns3") if p.metadata.labels.get("app") == "d3"]
    counted.reads.clear()  # the line above is the test's own read
    kubelet_readies(c, new)

    assert len(new) == 4 and all(p.status.phase == "Running" for p in new)
    assert c.store.get("Deployment", "ns3", "d3").status.ready_replicas == 4
    # the endpoints of d3's Service hold its four pods
    (sl,) = c.store.select("EndpointSlice", "ns3", {"kubernetes.io/service-name": "d3"})
    assert len(sl.endpoints) == 4
    # one Deployment, its ReplicaSet and its Service were synced (a few times over the passes), not 1,000
    assert counted.synced["_sync_deployment"] <= 6, counted.synced
    assert counted.synced["_sync_replicaset"] <= 6, counted.synced
    assert counted.synced["service"] <= 6, counted.synced
    # what the controllers read: a few hundred objects at most, where the store holds more than 5,000;
    # the scheduler's snapshot of the nodes' pods (one read of each bound pod per scheduling pass, as
    # kube-scheduler's cache holds them) is counted apart
    scheduler_snapshot = counted.reads["netemu.control.scheduler:__init__"]
    assert counted.total(but=("netemu.control.scheduler:__init__",)) < 300, counted.reads.most_common(8)
    assert scheduler_snapshot <= c.store.count("Pod"), scheduler_snapshot
    assert n_objects > 5000


def test_an_idle_pass_reads_next_to_nothing(cluster, monkeypatch):
    c, clock = cluster
    counted = Counted(monkeypatch)
    clock.t += 20  # leases come due: the node controller renews them
    c.reconcile()
    assert sum(counted.synced.values()) == 0, counted.synced
    assert counted.total() < 200, counted.reads.most_common(8)  # nodes, namespaces, leases: not pods


def test_a_full_pass_is_what_the_counts_are_compared_with(cluster, monkeypatch):
    """After a restart (a store loaded without notifications) every queued controller looks at everything
    once, as informers list before they watch."""
    c, _ = cluster
    for q in c.queues.values():
        q.requeue_all()
    counted = Counted(monkeypatch)
    c.reconcile()
    assert counted.synced["_sync_deployment"] >= 1000 and counted.synced["service"] >= 1000, counted.synced
