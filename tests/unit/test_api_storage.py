"""The API's verbs on a cluster, without a server: validation through the spec layer, Status errors,
resourceVersion preconditions, selectors, watch windows, subresources, dry-run, field validation."""
from __future__ import annotations

import json

import pytest

from netemu.spec import registry
from netemu.api.errors import ApiError
from netemu.api.selectors import field_selector, label_selector
from netemu.api.storage import Storage
from netemu.api.watchlog import Change, TooOld, WatchLog, encode
from netemu.control import nodes
from netemu.control.cluster import Cluster
from netemu.spec.models import Lab, LabNode

DEPLOY = registry.by_kind("Deployment")
CM = registry.by_kind("ConfigMap")
POD = registry.by_kind("Pod")
SVC = registry.by_kind("Service")
NODE = registry.by_kind("Node")


class Clock:
    t = 1_800_000_000.0

    def __call__(self):
        return self.t


@pytest.fixture
def st():
    lab = Lab()
    lab.metadata.name = "unit"
    lab.spec.nodes = [LabNode(name="m-k8s", ip="192.168.1.10", role="control-plane")] + [
        LabNode(name=f"w{i}-k8s", ip=f"192.168.1.10{i}") for i in (1, 2, 3)]
    from netemu.spec.defaults import default_lab

    default_lab(lab, file_stem="unit")
    c = Cluster(lab, clock=Clock())
    s = Storage(c)
    c.bootstrap()
    for n in c.store.list("Node"):
        nodes.set_ready(c, n, True, "KubeletReady", "ok")
    return s


def deployment(name="web", replicas=2, **spec):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}, **spec}}


def test_create_fills_server_fields_and_get_returns_it(st):
    obj, warnings = st.create(DEPLOY, "default", deployment())
    meta = obj["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0 and warnings == []
    assert st.get(DEPLOY, "default", "web")["spec"]["replicas"] == 2


def test_invalid_object_is_422_with_causes_worded_like_the_api_server_and_nothing_is_stored(st):
    with pytest.raises(ApiError) as e:
        st.create(DEPLOY, "default", deployment(replicas=-1))
    status = e.value.status()
    assert status["code"] == 422 and status["reason"] == "Invalid"
    assert status["message"] == ('Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: '
                                 "must be greater than or equal to 0")
    assert status["details"]["causes"][0]["field"] == "spec.replicas"
    with pytest.raises(ApiError) as e:
        st.get(DEPLOY, "default", "web")
    assert e.value.code == 404 and e.value.message == 'deployments.apps "web" not found'


def test_namespace_must_exist(st):
    with pytest.raises(ApiError) as e:
        st.create(CM, "nowhere", {"metadata": {"name": "x"}, "data": {"a": "b"}})
    assert e.value.code == 404 and e.value.message == 'namespaces "nowhere" not found'


def test_already_exists_and_stale_resource_version_conflict(st):
    obj, _ = st.create(CM, "default", {"metadata": {"name": "x"}, "data": {"a": "1"}})
    with pytest.raises(ApiError) as e:
        st.create(CM, "default", {"metadata": {"name": "x"}, "data": {}})
    assert e.value.code == 409 and e.value.reason == "AlreadyExists"
    updated, _ = st.update(CM, "default", "x", dict(obj, data={"a": "2"}))
    assert int(updated["metadata"]["resourceVersion"]) > int(obj["metadata"]["resourceVersion"])
    with pytest.raises(ApiError) as e:  # obj carries the old resourceVersion
        st.update(CM, "default", "x", dict(obj, data={"a": "3"}))
    assert e.value.code == 409 and e.value.reason == "Conflict"
    assert st.get(CM, "default", "x")["data"] == {"a": "2"}


def test_generation_moves_with_the_spec_not_the_labels(st):
    obj, _ = st.create(DEPLOY, "default", deployment())
    labelled, _ = st.patch(DEPLOY, "default", "web", b'{"metadata":{"labels":{"x":"y"}}}',
                           "application/merge-patch+json")
    assert labelled["metadata"]["generation"] == 1 and labelled["metadata"]["labels"] == {"x": "y"}
    scaled, _ = st.patch(DEPLOY, "default", "web", b'{"spec":{"replicas":5}}', "application/merge-patch+json")
    assert scaled["metadata"]["generation"] == 2 and scaled["spec"]["replicas"] == 5


def test_strategic_merge_patch_changes_one_container_by_name(st):
    body = deployment()
    body["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "redis"})
    st.create(DEPLOY, "default", body)
    out, _ = st.patch(DEPLOY, "default", "web",
                      b'{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"redis:7"}]}}}}',
                      "application/strategic-merge-patch+json")
    images = [(c["name"], c["image"]) for c in out["spec"]["template"]["spec"]["containers"]]
    assert images == [("c", "nginx"), ("side", "redis:7")]


def test_a_bad_patch_result_is_refused_and_changes_nothing(st):
    st.create(DEPLOY, "default", deployment())
    with pytest.raises(ApiError) as e:
        st.patch(DEPLOY, "default", "web", b'{"spec":{"replicas":-3}}', "application/merge-patch+json")
    assert e.value.code == 422
    assert st.get(DEPLOY, "default", "web")["spec"]["replicas"] == 2


def test_service_port_out_of_range_is_refused(st):
    svc = {"metadata": {"name": "bad"}, "spec": {"type": "NodePort", "selector": {"app": "x"},
                                                "ports": [{"port": 99999}]}}
    with pytest.raises(ApiError) as e:
        st.create(SVC, "default", svc)
    assert e.value.code == 422 and "spec.ports[0].port" in e.value.message
    assert st.store.find("Service", "default", "bad") is None


def test_strict_field_validation_names_the_unknown_field(st):
    body = deployment()
    body["spec"]["replcas"] = 3
    with pytest.raises(ApiError) as e:
        st.create(DEPLOY, "default", body, field_validation="Strict")
    assert e.value.code == 400 and 'unknown field "spec.replcas"' in e.value.message
    _, warnings = st.create(DEPLOY, "default", body, field_validation="Warn")
    assert any('unknown field "spec.replcas"' in w for w in warnings)
    # a field Kubernetes knows but the lab does not act on is kept silently
    body2 = deployment("other")
    body2["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    obj, warnings = st.create(DEPLOY, "default", body2, field_validation="Strict")
    assert warnings == [] and obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_dry_run_answers_without_storing(st):
    obj, _ = st.create(CM, "default", {"metadata": {"name": "dry"}, "data": {}}, dry_run=True)
    assert obj["metadata"]["uid"]
    assert st.store.find("ConfigMap", "default", "dry") is None


def test_scale_subresource(st):
    st.create(DEPLOY, "default", deployment())
    assert st.scale(DEPLOY, "default", "web")["spec"]["replicas"] == 2
    out = st.patch_scale(DEPLOY, "default", "web", b'{"spec":{"replicas":4}}', "application/merge-patch+json")
    assert out["spec"]["replicas"] == 4 and out["kind"] == "Scale"
    assert st.get(DEPLOY, "default", "web")["spec"]["replicas"] == 4
    with pytest.raises(ApiError) as e:
        st.patch_scale(DEPLOY, "default", "web", b'{"spec":{"replicas":-1}}', "application/merge-patch+json")
    assert e.value.code == 422


def test_cordon_through_a_patch_reaches_the_scheduler(st):
    st.patch(NODE, "", "w3-k8s", b'{"spec":{"unschedulable":true}}', "application/strategic-merge-patch+json")
    st.create(DEPLOY, "default", deployment(replicas=6))
    st.cluster.reconcile()
    placed = {p.spec.node_name for p in st.store.list("Pod", "default")}
    assert placed and "w3-k8s" not in placed
    taints = st.store.get("Node", "", "w3-k8s").spec.taints
    assert [t.key for t in taints] == ["node.kubernetes.io/unschedulable"]


def test_nodes_cannot_be_created_through_the_api(st):
    with pytest.raises(ApiError) as e:
        st.create(NODE, None, {"metadata": {"name": "w9"}})
    assert e.value.code == 403


def test_label_and_field_selectors(st):
    st.create(DEPLOY, "default", deployment(replicas=3))
    st.cluster.reconcile()
    pods = st.list(POD, "default", labels="app=web")
    assert len(pods) == 3
    node = pods[0]["spec"]["nodeName"]
    on = st.list(POD, None, fields=f"spec.nodeName={node}")
    assert pods[0]["metadata"]["name"] in {p["metadata"]["name"] for p in on}
    assert all(p["spec"]["nodeName"] == node for p in on)
    assert st.list(POD, "default", labels="app!=web") == []
    with pytest.raises(ApiError) as e:
        field_selector("Pod", "spec.bogus=1")
    assert e.value.code == 400
    assert label_selector("tier in (a,b)")({"metadata": {"labels": {"tier": "b"}}})
    assert field_selector("Node", "spec.unschedulable=false")({"spec": {}})


def test_deleting_a_deployment_cascades_and_orphan_keeps_pods(st):
    st.create(DEPLOY, "default", deployment("a"))
    st.create(DEPLOY, "default", deployment("b"))
    st.cluster.reconcile()
    st.delete(DEPLOY, "default", "a")
    st.delete(DEPLOY, "default", "b", {"propagationPolicy": "Orphan"})
    st.cluster.reconcile()
    rs = {r.metadata.name.split("-")[0] for r in st.store.list("ReplicaSet", "default")}
    assert rs == {"b"}


def test_watch_log_from_a_resource_version_and_410_when_too_old():
    log = WatchLog(size=3)
    for rv in range(1, 6):
        log.append(Change(rv, "MODIFIED", "ConfigMap", "", "default", "v1", encode({"metadata": {"name": f"c{rv}"}})))
    assert [c.rv for c in log.since(3, lambda c: True)] == [4, 5]
    with pytest.raises(TooOld):
        log.since(1, lambda c: True)


def test_store_changes_reach_the_watch_log_with_their_resource_versions(st):
    obj, _ = st.create(CM, "default", {"metadata": {"name": "w"}, "data": {"a": "1"}})
    rv = int(obj["metadata"]["resourceVersion"])
    st.patch(CM, "default", "w", b'{"data":{"a":"2"}}', "application/merge-patch+json")
    st.delete(CM, "default", "w")
    seen = [(c.type, c.obj["metadata"]["name"]) for c in st.watch.since(rv - 1, lambda c: c.kind == "ConfigMap")]
    assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
    rvs = [c.rv for c in st.watch.since(rv - 1, lambda c: c.kind == "ConfigMap")]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3


def test_events_are_served_as_core_v1_events(st):
    st.create(DEPLOY, "default", deployment())
    st.cluster.reconcile()
    events = st.list(registry.by_kind("Event"), "default")
    assert events and all(e["kind"] == "Event" and e["involvedObject"]["name"] for e in events)
    scheduled = [e for e in events if e["reason"] == "Scheduled"]
    assert scheduled and scheduled[0]["source"]["component"] == "default-scheduler"
    sel = st.list(registry.by_kind("Event"), "default",
                  fields=f"involvedObject.name={scheduled[0]['involvedObject']['name']}")
    assert all(e["involvedObject"]["name"] == scheduled[0]["involvedObject"]["name"] for e in sel)


def test_stored_kinds_and_crds(st):
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "gadgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"kind": "Gadget", "plural": "gadgets"},
                    "versions": [{"name": "v1", "served": True, "storage": True}]}}
    st.create(registry.by_kind("CustomResourceDefinition"), None, crd)
    res = registry.by_gvr("example.com", "v1", "gadgets")
    assert res is not None and res.namespaced and not res.builtin
    obj, warnings = st.create(res, "default", {"apiVersion": "example.com/v1", "kind": "Gadget",
                                               "metadata": {"name": "g"}, "spec": {"size": 3}})
    assert obj["spec"] == {"size": 3}
    # custom resources take merge patches, not strategic ones, as on a real server
    with pytest.raises(ApiError) as e:
        st.patch(res, "default", "g", b'{"spec":{"size":4}}', "application/strategic-merge-patch+json")
    assert e.value.code == 415
    st.patch(res, "default", "g", b'{"spec":{"size":4}}', "application/merge-patch+json")
    assert st.get(res, "default", "g")["spec"]["size"] == 4
    st.delete(registry.by_kind("CustomResourceDefinition"), "", "gadgets.example.com")
    assert registry.by_gvr("example.com", "v1", "gadgets") is None
    json.dumps(obj)  # served as JSON


def test_a_write_that_changes_nothing_keeps_the_resource_version(st):
    obj, _ = st.create(CM, "default", {"metadata": {"name": "same"}, "data": {"a": "1"}})
    again, _ = st.update(CM, "default", "same", obj)
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    patched, _ = st.patch(CM, "default", "same", b'{"data":{"a":"1"}}', "application/merge-patch+json")
    assert patched["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_a_bound_pod_keeps_its_node(st):
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    st.create(POD, "default", pod)
    st.cluster.reconcile()
    bound = st.get(POD, "default", "p")
    node = bound["spec"]["nodeName"]
    body = json.loads(json.dumps(bound))
    del body["spec"]["nodeName"]
    out, _ = st.update(POD, "default", "p", body)
    assert out["spec"]["nodeName"] == node
    body = json.loads(json.dumps(st.get(POD, "default", "p")))
    body["spec"]["nodeName"] = "m-k8s" if node != "m-k8s" else "w1-k8s"
    with pytest.raises(ApiError) as e:
        st.update(POD, "default", "p", body)
    assert e.value.code == 422 and "spec.nodeName" in e.value.message


def test_reviews_answer_without_storing():
    from netemu.api.reviews import review

    out = review("SelfSubjectAccessReview", {"spec": {"resourceAttributes": {"verb": "delete", "resource": "pods"}}},
                 "kubernetes-admin", None)
    assert out["status"]["allowed"] is True and "RBAC" in out["status"]["reason"]
    who = review("SelfSubjectReview", {}, "system:serviceaccount:team:robot", None)["status"]["userInfo"]
    assert who["username"] == "system:serviceaccount:team:robot"
    assert "system:serviceaccounts:team" in who["groups"]
