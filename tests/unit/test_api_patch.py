"""Kubernetes PATCH semantics (netemu.api.patch): JSON patch, merge patch, strategic merge patch, apply."""
import copy
import json

import pytest

from netemu.api.patch import PatchError, apply_patch

JP = "application/json-patch+json"
MP = "application/merge-patch+json"
SMP = "application/strategic-merge-patch+json"
SSA = "application/apply-patch+yaml"


def deployment():
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "front"},
                     "annotations": {"note": "x"}, "finalizers": ["a.example/one", "b.example/two"]},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1.25",
                         "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443, "protocol": "TCP"}],
                         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                        {"name": "sidecar", "image": "busybox:1.36", "args": ["sleep", "inf"]},
                    ],
                    "tolerations": [{"key": "k", "operator": "Exists"}],
                },
            },
        },
        "status": {"conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}]},
    }


def smp(obj, patch, kind="Deployment", **kw):
    return apply_patch(obj, json.dumps(patch).encode(), SMP, kind, **kw)


def containers(d):
    return d["spec"]["template"]["spec"]["containers"]


# --------------------------------------------------------------------------- merge patch


def test_merge_patch_null_deletes_and_maps_merge_lists_replace():
    d = deployment()
    before = copy.deepcopy(d)
    out = apply_patch(d, b'{"metadata":{"labels":{"tier":null,"new":"1"},"annotations":null},'
                         b'"spec":{"replicas":5,"template":{"spec":{"containers":[{"name":"only","image":"x"}]}}}}',
                      MP, "Deployment")
    assert out["metadata"]["labels"] == {"app": "web", "new": "1"}
    assert "annotations" not in out["metadata"]
    assert out["spec"]["replicas"] == 5
    assert containers(out) == [{"name": "only", "image": "x"}]  # RFC 7386 has no list merging
    assert out["spec"]["selector"] == before["spec"]["selector"]
    assert d == before  # never mutated


def test_merge_patch_new_object_drops_nested_nulls_and_non_object_result_is_422():
    out = apply_patch({"a": 1}, '{"b": {"c": null, "d": 2}}', MP, "ConfigMap")
    assert out == {"a": 1, "b": {"d": 2}}
    with pytest.raises(PatchError) as e:
        apply_patch({"a": 1}, "[1, 2]", MP, "ConfigMap")
    assert e.value.code == 422


# --------------------------------------------------------------------------- JSON patch


def test_json_patch_ops():
    d = deployment()
    ops = [
        {"op": "test", "path": "/spec/replicas", "value": 2},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/labels/added", "value": "yes"},
        {"op": "remove", "path": "/metadata/labels/tier"},
        {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "third", "image": "x"}},
        {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/copied"},
        {"op": "move", "from": "/metadata/annotations/note", "path": "/metadata/annotations/moved"},
    ]
    out = apply_patch(d, json.dumps(ops), "application/json-patch+json; charset=utf-8", "Deployment")
    assert out["spec"]["replicas"] == 3
    assert out["metadata"]["labels"] == {"app": "web", "added": "yes", "copied": "web"}
    assert out["metadata"]["annotations"] == {"moved": "x"}
    assert [c["name"] for c in containers(out)] == ["web", "sidecar", "third"]
    assert d == deployment()


@pytest.mark.parametrize("body, code", [
    ('[{"op": "test", "path": "/spec/replicas", "value": 7}]', 422),  # test fails
    ('[{"op": "replace", "path": "/spec/nothing", "value": 1}]', 422),  # path missing
    ('[{"op": "remove", "path": "/metadata/labels/none"}]', 422),
    ('[{"op": "frobnicate", "path": "/spec"}]', 400),  # unknown op
    ('{"op": "add"}', 400),  # not an array
    ("not json", 400),
    ('[{"op": "replace", "path": "", "value": 3}]', 422),  # result is not an object
])
def test_json_patch_errors(body, code):
    with pytest.raises(PatchError) as e:
        apply_patch(deployment(), body, JP, "Deployment")
    assert e.value.code == code


def test_json_patch_test_failure_message_names_path():
    with pytest.raises(PatchError, match="testing value /spec/replicas failed"):
        apply_patch(deployment(), '[{"op": "test", "path": "/spec/replicas", "value": 7}]', JP, "Deployment")


# --------------------------------------------------------------------------- strategic merge patch


def test_smp_containers_merge_by_name():
    out = smp(deployment(), {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox:1.37"}]}}}})
    web, side = containers(out)
    assert web == containers(deployment())[0]
    assert side == {"name": "sidecar", "image": "busybox:1.37", "args": ["sleep", "inf"]}


def test_smp_env_by_name_and_ports_by_container_port():
    out = smp(deployment(), {"spec": {"template": {"spec": {"containers": [{
        "name": "web",
        "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}],
        "ports": [{"containerPort": 443, "name": "https"}],
    }]}}}})
    web = containers(out)[0]
    # B changed in place; C is new: patch items keep the patch order, A keeps its place before B
    assert {e["name"]: e["value"] for e in web["env"]} == {"A": "1", "B": "two", "C": "3"}
    assert [e["name"] for e in web["env"]] == ["A", "B", "C"]
    assert web["ports"] == [{"containerPort": 80, "protocol": "TCP"},
                            {"containerPort": 443, "protocol": "TCP", "name": "https"}]


def test_smp_new_element_goes_first_like_upstream():
    # kubectl's documented patch-demo: a container added by patch ends up ahead of the live one
    out = smp(deployment(), {"spec": {"template": {"spec": {"containers": [{"name": "redis", "image": "redis"}]}}}})
    assert [c["name"] for c in containers(out)] == ["redis", "web", "sidecar"]


def test_smp_lists_without_merge_key_replace_maps_merge_null_deletes():
    out = smp(deployment(), {"metadata": {"labels": {"tier": None}},
                             "spec": {"template": {"spec": {"tolerations": [{"key": "t", "operator": "Exists"}]}}}})
    assert out["metadata"]["labels"] == {"app": "web"}
    assert out["spec"]["template"]["spec"]["tolerations"] == [{"key": "t", "operator": "Exists"}]
    # args has no tag either: replaced, not appended
    out = smp(deployment(), {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "args": ["true"]}]}}}})
    assert containers(out)[1]["args"] == ["true"]


def test_smp_patch_delete_list_element_and_map():
    out = smp(deployment(), {"spec": {"template": {"spec": {"containers": [
        {"$patch": "delete", "name": "sidecar"},
        {"name": "web", "env": [{"$patch": "delete", "name": "A"}]},
    ]}}}})
    assert [c["name"] for c in containers(out)] == ["web"]
    assert containers(out)[0]["env"] == [{"name": "B", "value": "2"}]
    out = smp(deployment(), {"spec": {"strategy": {"$patch": "delete"}}})
    assert out["spec"]["strategy"] == {}


def test_smp_patch_replace_in_list_and_map():
    out = smp(deployment(), {"spec": {"template": {"spec": {"containers": [
        {"$patch": "replace"}, {"name": "solo", "image": "x", "env": [{"name": "Z", "value": None}]}]}}}})
    assert containers(out) == [{"name": "solo", "image": "x", "env": [{"name": "Z"}]}]
    out = smp(deployment(), {"metadata": {"labels": {"$patch": "replace", "only": "this"}}})
    assert out["metadata"]["labels"] == {"only": "this"}


def test_smp_set_element_order_reorders_and_interleaves_server_only():
    d = deployment()
    out = smp(d, {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}]}}}})
    assert [c["name"] for c in containers(out)] == ["sidecar", "web"]
    # "x" was added by someone else between web and sidecar: it keeps its place relative to the live list
    containers(d).insert(1, {"name": "x", "image": "x"})
    out = smp(d, {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}]}}}})
    assert [c["name"] for c in containers(out)] == ["x", "sidecar", "web"]
    # server-only element placed after the listed ones when it was last in the live list
    d = deployment()
    containers(d).append({"name": "late", "image": "x"})
    out = smp(d, {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}, {"name": "new"}],
        "containers": [{"name": "new", "image": "n"}]}}}})
    assert [c["name"] for c in containers(out)] == ["sidecar", "web", "new", "late"]
    assert "$setElementOrder/containers" not in out["spec"]["template"]["spec"]


def test_smp_retain_keys_clears_unlisted_fields():
    # what kubectl apply sends when switching a Deployment to Recreate
    out = smp(deployment(), {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None}}})
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    out = smp(deployment(), {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}})
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    with pytest.raises(PatchError) as e:
        smp(deployment(), {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 1}}}})
    assert e.value.code == 400


def test_smp_finalizers_merge_as_set_and_delete_from_primitive_list():
    out = smp(deployment(), {"metadata": {"finalizers": ["b.example/two", "c.example/three"]}})
    assert out["metadata"]["finalizers"] == ["a.example/one", "b.example/two", "c.example/three"]
    out = smp(deployment(), {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example/one"],
                                          "$setElementOrder/finalizers": ["b.example/two", "c.example/three"],
                                          "finalizers": ["c.example/three"]}})
    assert out["metadata"]["finalizers"] == ["b.example/two", "c.example/three"]
    assert not any(k.startswith("$") for k in out["metadata"])


def test_smp_exactly_as_kubectl_apply_sends_it():
    d = deployment()
    containers(d)[0]["env"].append({"name": "OLD", "value": "x"})
    last = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1.27", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "sidecar", "image": "busybox:1.36"}]}}}}
    last_applied = json.dumps(last) + "\n"
    # CreateThreeWayMergePatch output for: replicas 2->3, web image bump, env OLD dropped
    body = ('{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":' + json.dumps(last_applied)
            + '}},"spec":{"replicas":3,"template":{"spec":{"$setElementOrder/containers":[{"name":"web"},'
            '{"name":"sidecar"}],"containers":[{"$setElementOrder/env":[{"name":"A"},{"name":"B"}],'
            '"env":[{"$patch":"delete","name":"OLD"}],"image":"nginx:1.27","name":"web"}]}}}}')
    out = apply_patch(d, body.encode(), SMP, "Deployment")
    assert out["spec"]["replicas"] == 3
    assert out["metadata"]["annotations"] == {"note": "x", "kubectl.kubernetes.io/last-applied-configuration": last_applied}
    web, side = containers(out)
    assert web["image"] == "nginx:1.27" and side["image"] == "busybox:1.36"
    assert web["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert web["ports"] == containers(deployment())[0]["ports"]
    assert out["status"] == deployment()["status"]
    assert "$" not in json.dumps(out).replace("$(", "")  # no directive survives


def test_smp_other_kinds_paths():
    cj = {"kind": "CronJob", "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}}}}}}
    out = smp(cj, {"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "2"}]}}}}}},
              kind="CronJob")
    assert out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"] == [
        {"name": "a", "image": "1"}, {"name": "b", "image": "2"}]
    svc = {"kind": "Service", "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]}}
    out = smp(svc, {"spec": {"ports": [{"port": 443, "targetPort": 9443}]}}, kind="Service")
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 9443}]
    node = {"kind": "Node", "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}]}}
    out = smp(node, {"spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]},
                     "status": {"conditions": [{"type": "Ready", "status": "True"}]}}, kind="Node")
    assert out["spec"]["taints"] == [{"key": "b", "effect": "NoSchedule"}]  # taints carry no merge tag
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}]


def test_smp_bad_bodies():
    for patch, code in [
        ({"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}}, 400),  # merge key missing
        ({"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}]}}}}, 400),
        ({"spec": {"strategy": {"$patch": "explode"}}}, 400),
        ({"metadata": {"$setElementOrder/finalizers": "nope"}}, 400),
    ]:
        with pytest.raises(PatchError) as e:
            smp(deployment(), patch)
        assert e.value.code == code, patch
    for body in (b"{not json", b"[1]", b"\xff"):
        with pytest.raises(PatchError) as e:
            apply_patch(deployment(), body, SMP, "Deployment")
        assert e.value.code == 400


def test_smp_refused_for_custom_resources_unless_allowed():
    cr = {"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"items": [{"name": "a", "v": 1}]}}
    with pytest.raises(PatchError) as e:
        smp(cr, {"spec": {"size": 3}}, kind="Widget")
    assert e.value.code == 415
    assert "unknown format" in str(e.value) and "merge-patch+json" in str(e.value)
    assert "strategic" not in str(e.value)
    with pytest.raises(PatchError) as e:
        smp(deployment(), {}, strategic_ok=False)
    assert e.value.code == 415
    # allowed explicitly: no tags known, so lists are replaced
    out = smp(cr, {"spec": {"items": [{"name": "b", "v": 2}]}}, kind="Widget", strategic_ok=True)
    assert out["spec"]["items"] == [{"name": "b", "v": 2}]


def test_unknown_content_type_415():
    with pytest.raises(PatchError) as e:
        apply_patch(deployment(), b"{}", "application/json", "Deployment")
    assert e.value.code == 415
    assert "application/strategic-merge-patch+json" in str(e.value)


# --------------------------------------------------------------------------- server-side apply (approximation)


def test_server_side_apply_merges_without_deleting_unmentioned_fields():
    d = deployment()
    body = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {tier: null, extra: "1"}
spec:
  replicas: 4
  template:
    spec:
      containers:
      - name: web
        image: nginx:1.27
        env: [{name: B, value: "22"}]
      - name: added
        image: alpine
"""
    out = apply_patch(d, body, SSA, "Deployment")
    assert out["spec"]["replicas"] == 4
    assert out["metadata"]["labels"] == {"app": "web", "tier": "front", "extra": "1"}  # null is not a delete here
    assert [c["name"] for c in containers(out)] == ["web", "sidecar", "added"]  # appended, not prepended
    web = containers(out)[0]
    assert web["image"] == "nginx:1.27" and web["ports"] == containers(deployment())[0]["ports"]
    assert web["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "22"}]
    assert out["spec"]["strategy"] == deployment()["spec"]["strategy"]
    assert d == deployment()


def test_server_side_apply_works_for_custom_resources_and_rejects_bad_yaml():
    cr = {"kind": "Widget", "spec": {"a": 1, "items": [1, 2]}}
    out = apply_patch(cr, '{"kind": "Widget", "spec": {"b": 2, "items": [3]}}', SSA, "Widget")
    assert out == {"kind": "Widget", "spec": {"a": 1, "b": 2, "items": [3]}}
    # read as kube reads YAML (into JSON): a bare date stays a string
    out = apply_patch(cr, "spec:\n  since: 2024-01-01\n", SSA, "Widget")
    assert out["spec"]["since"] == "2024-01-01"
    for body in ("a: [unclosed", "- just\n- a list\n"):
        with pytest.raises(PatchError) as e:
            apply_patch(cr, body, SSA, "Widget")
        assert e.value.code == 400
