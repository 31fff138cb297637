"""The CLI as a client of the lab's Kubernetes API, without a lab: paths from the table of kinds,
what apply PUTs, drain's filters, expose's Service, top's quantities, the API's warnings."""
from __future__ import annotations

import pytest

from netemu.cli import kinds, ops_cmds, top_cmds
from netemu.cli.client import CliError, warning_text
from netemu.control.expose import ExposeError, expose, selector_map


def test_paths_come_from_the_registry():
    pod, deploy, node = kinds.resource_of("po"), kinds.resource_of("deployments.apps"), kinds.resource_of("no")
    assert kinds.path(pod, "default") == "/api/v1/namespaces/default/pods"
    assert kinds.path(pod, None) == "/api/v1/pods"
    assert kinds.path(pod, "default", "x", "eviction") == "/api/v1/namespaces/default/pods/x/eviction"
    assert kinds.path(deploy, "a", "web", "scale") == "/apis/apps/v1/namespaces/a/deployments/web/scale"
    assert kinds.path(node, "ignored", "w1") == "/api/v1/nodes/w1"
    hpa = kinds.by_kind("HorizontalPodAutoscaler")
    assert kinds.path(hpa, "default", version="v1") == "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers"
    assert kinds.path(pod, "default", query={"labelSelector": "app=a,b!=c", "fieldSelector": None}) == \
        "/api/v1/namespaces/default/pods?labelSelector=app%3Da%2Cb%21%3Dc"
    assert kinds.split_ref("svc/np-svc", None)[0].kind == "Service"
    assert kinds.split_ref("ing", "x") == (kinds.by_kind("Ingress"), "x")
    with pytest.raises(CliError, match='the server doesn\'t have a resource type "nope"'):
        kinds.resource_of("nope")


def test_warning_headers():
    assert warning_text('299 - "unknown field \'spec.x\'"') == "unknown field 'spec.x'"
    assert warning_text("plain text") == "plain text"


def test_apply_replaces_the_spec_and_keeps_what_the_cluster_set():
    current = {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "p", "namespace": "default", "resourceVersion": "7", "uid": "u",
        "labels": {"a": "1"}, "annotations": {"metallb.io/ip-allocated-from-pool": "pool"},
        "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": "r", "controller": True}]},
        "spec": {"nodeName": "w1-k8s", "containers": [{"name": "c", "image": "old"}]},
        "status": {"phase": "Running"}}
    mine = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "labels": {"b": "2"}},
            "spec": {"containers": [{"name": "c", "image": "new"}]}}
    body = ops_cmds._replacement(mine, current)
    assert body["metadata"]["resourceVersion"] == "7" and body["status"] == {"phase": "Running"}
    assert body["metadata"]["labels"] == {"a": "1", "b": "2"}
    assert body["metadata"]["annotations"] == {"metallb.io/ip-allocated-from-pool": "pool"}
    assert body["metadata"]["ownerReferences"] == current["metadata"]["ownerReferences"]
    assert body["spec"] == {"containers": [{"name": "c", "image": "new"}], "nodeName": "w1-k8s"}
    assert mine["metadata"] == {"name": "p", "namespace": "default", "labels": {"b": "2"}}  # not changed in place
    after = dict(current, metadata=dict(current["metadata"], resourceVersion="8"), status={"phase": "Pending"})
    assert ops_cmds._same(current, after)  # only the resourceVersion (and the status) moved
    assert ops_cmds._same(current, current)
    assert not ops_cmds._same(current, dict(after, spec={"nodeName": "w2-k8s"}))


def test_known_warnings_are_not_said_twice():
    known = ["f.yaml: document 1 (Service/s): spec.ports[0].target: unknown field, ignored (did you mean targetPort?)",
             "f.yaml: document 2 (Job/j): Job is stored and served, but the lab does not act on it"]
    assert ops_cmds._already_said("unknown field 'spec.ports[0].target' (did you mean targetPort?)", known)
    assert ops_cmds._already_said("Job is stored and served, but the lab does not act on it", known)
    assert not ops_cmds._already_said("unknown field 'spec.other'", known)


def _pod(name: str, owner: str | None = "ReplicaSet", **extra) -> dict:
    meta = {"name": name, "namespace": "default"}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "o", "uid": "u", "controller": True}]
    meta.update(extra.pop("meta", {}))
    return {"metadata": meta, "spec": extra.pop("spec", {}), "status": extra.pop("status", {"phase": "Running"})}


def test_drain_filters_as_kubectl():
    ds = _pod("kube-proxy-a", "DaemonSet")
    mirror = _pod("etcd-m", "Node", meta={"annotations": {"kubernetes.io/config.mirror": "x"}})
    web = _pod("web-1")
    bare = _pod("bare", None)
    scratch = _pod("scratch", spec={"volumes": [{"name": "v", "emptyDir": {}}]})
    done = _pod("job-1", None, status={"phase": "Succeeded"})
    evict, warnings, errors = ops_cmds.drain_plan([ds, mirror, web, done], False, False, False)
    assert errors == ["cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): "
                      "default/kube-proxy-a"]
    evict, warnings, errors = ops_cmds.drain_plan([ds, mirror, web, done], True, False, False)
    assert not errors and [p["metadata"]["name"] for p in evict] == ["web-1", "job-1"]
    assert warnings == ["ignoring DaemonSet-managed Pods: default/kube-proxy-a"]
    _, _, errors = ops_cmds.drain_plan([bare, scratch], True, False, False)
    assert errors == ["cannot delete Pods that declare no controller (use --force to override): default/bare",
                      "cannot delete Pods with local storage (use --delete-emptydir-data to override): "
                      "default/scratch"]
    evict, warnings, errors = ops_cmds.drain_plan([bare, scratch], True, True, True)
    assert not errors and len(evict) == 2
    assert warnings == ["deleting Pods that declare no controller: default/bare",
                        "deleting Pods with local storage: default/scratch"]


DEPLOY = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "np-pods", "namespace": "default",
                                                                     "labels": {"app": "np-pods"}},
          "spec": {"selector": {"matchLabels": {"app": "np-pods"}}, "template": {"spec": {"containers": [
              {"name": "c", "image": "x", "ports": [{"containerPort": 80}, {"containerPort": 443, "name": "https"}]}]}}}}


def test_expose_builds_the_service_kubectl_makes():
    svc = expose(DEPLOY, name="np-svc2", type_="NodePort", port=80)
    assert svc == {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "np-svc2", "namespace": "default", "labels": {"app": "np-pods"}},
                   "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                            "selector": {"app": "np-pods"}, "type": "NodePort"}}
    ports = expose(DEPLOY)["spec"]["ports"]
    assert ports == [{"name": "port-1", "port": 80, "protocol": "TCP", "targetPort": 80},
                     {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}]
    assert expose(DEPLOY, port=8080, target_port="http")["spec"]["ports"][0]["targetPort"] == "http"
    assert expose(DEPLOY, port=99999)["spec"]["ports"][0]["port"] == 99999  # the API's validation refuses it
    assert selector_map("a=b, c=d") == {"a": "b", "c": "d"}
    with pytest.raises(ExposeError, match="matchExpressions"):
        expose({**DEPLOY, "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}})
    with pytest.raises(ExposeError, match="no labels"):
        expose({"kind": "Pod", "metadata": {"name": "p"}, "spec": {}})


def test_top_reads_metrics_quantities():
    q = top_cmds.quantity
    assert q("250m") * 1000 == 250 and q("1500000n") * 1000 == 1.5 and q("2") == 2 and q("1e3") == 1000
    assert q("64Mi") == 64 * 2**20 and q("3900000Ki") == 3900000 * 1024 and q("1G") == 10**9 and q("x") is None
    pm = {"metadata": {"name": "p", "namespace": "default"},
          "containers": [{"name": "a", "usage": {"cpu": "3000000n", "memory": "10240Ki"}},
                         {"name": "b", "usage": {"cpu": "0", "memory": "0Ki"}}]}
    assert top_cmds.pod_usage(pm) == {"namespace": "default", "name": "p", "cpu_milli": 3, "memory_bytes": 10485760}
    node = {"metadata": {"name": "w1"}, "status": {"allocatable": {"cpu": "2", "memory": "4Gi"}}}
    row = top_cmds.node_usage(node, {"usage": {"cpu": "500m", "memory": "1Gi"}})
    assert top_cmds.node_rows([row])[1] == [["w1", "500m", "25%", "1024Mi", "25%"]]
    assert top_cmds.node_rows([top_cmds.node_usage(node, None)])[1] == [["w1"] + ["<unknown>"] * 4]
