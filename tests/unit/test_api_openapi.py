"""The OpenAPI documents (netemu.api.openapi), checked the way kubectl 1.32 reads them: the field
validation probe (the PATCH operation of the object's kind declares fieldValidation), `kubectl explain`'s
walk (GVK from an operation on the resource's path, then the schema carrying that GVK, then properties
through $ref/allOf), refs that resolve, and hashes that follow the registry."""
from __future__ import annotations

import hashlib
import json
import time

import pytest

from netemu.api import openapi
from netemu.spec import registry
from netemu.api.openapi import (
    REF, REF_V2, gv_path, v2_document, v2_document_json, v3_document, v3_document_json, v3_index,
)

METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture
def resources():
    return registry.all_resources()


def all_gvs():
    return [(g, v) for g, vs in registry.groups().items() for v in vs]


def operations(doc):
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


# ------------------------------------------------------------------ what kubectl does with them
def kubectl_supports_field_validation(doc, group, version, kind) -> bool:
    """cli-runtime's supportsQueryParamV3, made stricter: kubectl takes the first PATCH operation (in map
    order) whose x-kubernetes-group-version-kind is the kind; here every one of them must qualify."""
    want = {"group": group, "version": version, "kind": kind}
    found = False
    for _, method, op in operations(doc):
        ext = op.get("x-kubernetes-group-version-kind")
        if method != "patch" or not isinstance(ext, dict):
            continue
        if {k: ext.get(k) for k in want} != want:
            continue
        found = True
        if not any(p.get("name") == "fieldValidation" for p in op.get("parameters", [])):
            return False
    return found


def resolve(doc, schema):
    ref = schema.get("$ref")
    if ref:
        assert ref.startswith(REF), ref
        return doc["components"]["schemas"][ref[len(REF):]]
    return schema


def kubectl_explain(doc, group, version, plural, field_path):
    """kubectl explain's plaintext template: (gvk, kind schema, field schema, resolved field schema)."""
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    gvk = None
    for path in (f"{prefix}/{plural}", f"{prefix}/{plural}/{{name}}", f"{prefix}/namespaces/{{namespace}}/{plural}",
                 f"{prefix}/namespaces/{{namespace}}/{plural}/{{name}}"):
        item = doc["paths"].get(path) or {}
        for method in ("get", "post", "put", "patch", "delete"):
            if method in item and item[method].get("x-kubernetes-group-version-kind"):
                gvk = item[method]["x-kubernetes-group-version-kind"]
                break
        if gvk:
            break
    assert gvk, f"GVR {group}/{version}/{plural} not found in OpenAPI schema"
    kind_schema = next(s for _, s in sorted(doc["components"]["schemas"].items())
                       if gvk in (s.get("x-kubernetes-group-version-kind") or []))
    schema, field = kind_schema, None
    for name in field_path:
        field = None
        todo = [schema]
        while todo and field is None:  # the template's order: properties, items, additionalProperties, allOf
            s = resolve(doc, todo.pop(0))
            if name in (s.get("properties") or {}):
                field = s["properties"][name]
            else:
                todo += [x for x in (s.get("items"), s.get("additionalProperties")) if isinstance(x, dict)]
                todo += s.get("allOf") or []
        assert field is not None, f'field "{name}" does not exist'
        schema = field
    resolved = schema
    while "$ref" in resolved or ("allOf" in resolved and len(resolved["allOf"]) == 1 and "properties" not in resolved):
        resolved = resolve(doc, resolved["allOf"][0] if "allOf" in resolved else resolved)
    return gvk, kind_schema, field, resolved


def refs(obj):
    if isinstance(obj, dict):
        if isinstance(obj.get("$ref"), str):
            yield obj["$ref"]
        for v in obj.values():
            yield from refs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from refs(v)


def property_schemas(doc):
    for name, schema in doc["components"]["schemas"].items():
        stack = [(name, schema)]
        while stack:
            where, s = stack.pop()
            for prop, sub in (s.get("properties") or {}).items():
                yield f"{where}.{prop}", sub
                stack.append((f"{where}.{prop}", sub))
            for key in ("items", "additionalProperties"):
                if isinstance(s.get(key), dict):
                    stack.append((f"{where}[{key}]", s[key]))


# ------------------------------------------------------------------ the index
def test_index_lists_every_group_version_of_the_registry(resources):
    index = v3_index(resources)
    assert set(index["paths"]) == {gv_path(g, v) for g, v in all_gvs()}
    assert {"api/v1", "apis/apps/v1", "apis/autoscaling/v1", "apis/autoscaling/v2",
            "apis/metallb.io/v1beta1", "apis/metallb.io/v1beta2"} <= set(index["paths"])
    for key, entry in index["paths"].items():
        url = entry["serverRelativeURL"]
        assert url.startswith(f"/openapi/v3/{key}?hash="), url
        group, version = (("", key.split("/")[1]) if key.startswith("api/") else tuple(key.split("/")[1:]))
        data, digest = v3_document_json(group, version, resources)
        assert url.endswith("=" + digest)
        assert digest == hashlib.sha512(data).hexdigest().upper()
        assert json.loads(data) == v3_document(group, version, resources)


def test_a_group_version_nobody_serves_has_no_document(resources):
    assert v3_document("apps", "v2", resources) is None
    assert v3_document_json("nothing.example.com", "v1", resources) is None


# ------------------------------------------------------------------ field validation (kubectl --validate=strict)
def test_deployment_patch_declares_field_validation(resources):
    doc = v3_document("apps", "v1", resources)
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    params = {p["name"]: p for p in patch["parameters"]}
    assert {"fieldValidation", "dryRun", "fieldManager", "force"} <= set(params)
    assert all(params[n]["in"] == "query" for n in ("fieldValidation", "dryRun", "fieldManager", "force"))
    assert patch["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert patch["x-kubernetes-action"] == "patch"
    assert kubectl_supports_field_validation(doc, "apps", "v1", "Deployment")


def test_kubectl_finds_field_validation_for_every_patchable_kind(resources):
    for group, version in all_gvs():
        doc = v3_document(group, version, resources)
        for res in registry.resources_of(group, version):
            if "patch" in res.verbs:
                assert kubectl_supports_field_validation(doc, group, version, res.kind), (group, version, res.kind)
            else:
                assert not kubectl_supports_field_validation(doc, group, version, res.kind), res.kind


def test_every_write_declares_the_write_parameters(resources):
    for group, version in all_gvs():
        for path, method, op in operations(v3_document(group, version, resources)):
            if method not in ("post", "put", "patch") or op["x-kubernetes-action"] == "connect":
                continue
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            assert {"fieldValidation", "dryRun", "fieldManager"} <= names, (path, method)
            if method == "patch":
                assert "force" in names, path
                assert "application/merge-patch+json" in op["requestBody"]["content"]
                # the models describe a subset of the fields: kubectl must not build strategic merge
                # patches from these schemas (it uses its compiled-in types instead)
                assert "application/strategic-merge-patch+json" not in op["requestBody"]["content"]


def test_paths_of_a_namespaced_resource_and_its_subresources(resources):
    core = v3_document("", "v1", resources)
    paths = core["paths"]
    assert set(paths["/api/v1/namespaces/{namespace}/pods"]) >= {"get", "post", "delete"}
    assert set(paths["/api/v1/namespaces/{namespace}/pods/{name}"]) >= {"get", "put", "patch", "delete"}
    assert paths["/api/v1/pods"]["get"]["x-kubernetes-action"] == "list"
    assert paths["/api/v1/pods"]["get"]["x-kubernetes-group-version-kind"] == {"group": "", "version": "v1",
                                                                              "kind": "Pod"}
    assert "/api/v1/nodes/{name}/status" in paths and "/api/v1/namespaces/{namespace}/nodes" not in paths
    eviction = paths["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"]
    assert eviction["x-kubernetes-group-version-kind"] == {"group": "policy", "version": "v1", "kind": "Eviction"}
    assert "fieldValidation" in {p["name"] for p in eviction["parameters"]}
    assert "follow" in {p["name"] for p in paths["/api/v1/namespaces/{namespace}/pods/{name}/log"]["get"]["parameters"]}
    assert paths["/api/v1/namespaces/{namespace}/pods/{name}/exec"]["post"]["x-kubernetes-action"] == "connect"
    # ComponentStatus is read only: no writes
    assert set(paths["/api/v1/componentstatuses/{name}"]) == {"get", "parameters"}

    apps = v3_document("apps", "v1", resources)["paths"]
    scale = apps["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert scale["patch"]["x-kubernetes-group-version-kind"] == {"group": "autoscaling", "version": "v1",
                                                                 "kind": "Scale"}
    status = apps["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"]["patch"]
    assert status["x-kubernetes-group-version-kind"]["kind"] == "Deployment"
    assert "fieldValidation" in {p["name"] for p in status["parameters"]}
    ids = [op["operationId"] for _, _, op in operations(v3_document("apps", "v1", resources))]
    assert len(ids) == len(set(ids)) and "patchAppsV1NamespacedDeployment" in ids
    assert "listAppsV1DeploymentForAllNamespaces" in ids


# ------------------------------------------------------------------ schemas
def test_schemas_are_named_as_kubernetes_names_them_and_carry_their_gvk(resources):
    core = v3_document("", "v1", resources)["components"]["schemas"]
    apps = v3_document("apps", "v1", resources)["components"]["schemas"]
    metallb = v3_document("metallb.io", "v1beta1", resources)["components"]["schemas"]
    assert {"io.k8s.api.core.v1.Pod", "io.k8s.api.core.v1.PodSpec", "io.k8s.api.core.v1.Service",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"} <= set(core)
    assert {"io.k8s.api.apps.v1.Deployment", "io.k8s.api.apps.v1.DeploymentSpec",
            "io.k8s.api.core.v1.PodTemplateSpec", "io.k8s.api.core.v1.PodSpec"} <= set(apps)
    assert core["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"] == [
        {"group": "", "kind": "Pod", "version": "v1"}]
    assert apps["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "kind": "Deployment", "version": "v1"}]
    assert apps["io.k8s.api.apps.v1.DeploymentList"]["x-kubernetes-group-version-kind"][0]["kind"] == "DeploymentList"
    pool = metallb["io.metallb.v1beta1.IPAddressPool"]
    assert pool["x-kubernetes-group-version-kind"] == [{"group": "metallb.io", "kind": "IPAddressPool",
                                                        "version": "v1beta1"}]
    assert "x-kubernetes-preserve-unknown-fields" not in pool  # a model: its fields are described
    spec = metallb["io.metallb.v1beta1.IPAddressPoolSpec"]
    assert spec["properties"]["addresses"] == {**spec["properties"]["addresses"], "type": "array",
                                               "items": {"type": "string"}}
    assert spec["required"] == ["addresses"]
    # the two versions of HorizontalPodAutoscaler are documents of their own
    v1 = v3_document("autoscaling", "v1", resources)["components"]["schemas"]
    assert v1["io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler"]["x-kubernetes-group-version-kind"] == [
        {"group": "autoscaling", "kind": "HorizontalPodAutoscaler", "version": "v1"}]
    assert "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler" not in v1


def test_field_types_from_the_models(resources):
    core = v3_document("", "v1", resources)["components"]["schemas"]
    port = core["io.k8s.api.core.v1.ServicePort"]["properties"]
    assert port["port"]["type"] == "integer" and port["port"]["format"] == "int32"
    assert port["protocol"]["enum"] == ["TCP", "UDP", "SCTP"]
    target = port["targetPort"]
    assert target["allOf"] == [{"$ref": REF + "io.k8s.apimachinery.pkg.util.intstr.IntOrString"}]
    assert target["description"]
    int_or_string = core["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    assert int_or_string["x-kubernetes-int-or-string"] is True
    meta = core["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]
    assert meta["labels"]["type"] == "object" and meta["labels"]["additionalProperties"] == {"type": "string"}
    assert meta["creationTimestamp"]["allOf"] == [{"$ref": REF + "io.k8s.apimachinery.pkg.apis.meta.v1.Time"}]
    assert meta["generation"]["format"] == "int64"
    assert meta["ownerReferences"]["x-kubernetes-patch-merge-key"] == "uid"
    containers = core["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["type"] == "array" and containers["items"] == {"$ref": REF + "io.k8s.api.core.v1.Container"}
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    limits = core["io.k8s.api.core.v1.ResourceRequirements"]["properties"]["limits"]
    assert limits["additionalProperties"] == {"$ref": REF + "io.k8s.apimachinery.pkg.api.resource.Quantity"}
    assert core["io.k8s.api.core.v1.PodStatus"]["properties"]["hostIP"]["type"] == "string"  # the alias


def test_every_field_has_a_type_and_every_kind_a_description(resources):
    for group, version in all_gvs():
        doc = v3_document(group, version, resources)
        for where, s in property_schemas(doc):
            assert ("type" in s or "$ref" in s or "allOf" in s or "oneOf" in s
                    or s.get("x-kubernetes-preserve-unknown-fields")), where
        for name, s in doc["components"]["schemas"].items():
            if s.get("x-kubernetes-group-version-kind"):
                assert s.get("description"), name
                assert s["type"] == "object"


def test_a_stored_kind_keeps_unknown_fields(resources):
    core = v3_document("", "v1", resources)
    pvc = core["components"]["schemas"]["io.k8s.api.core.v1.PersistentVolumeClaim"]
    assert pvc["x-kubernetes-preserve-unknown-fields"] is True
    assert pvc["type"] == "object"
    assert set(pvc["properties"]) == {"apiVersion", "kind", "metadata"}
    assert pvc["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "PersistentVolumeClaim", "version": "v1"}]
    assert "does not act on it" in pvc["description"]
    assert kubectl_supports_field_validation(core, "", "v1", "PersistentVolumeClaim")
    # the events.k8s.io Event is not the core model
    events = v3_document("events.k8s.io", "v1", resources)["components"]["schemas"]["io.k8s.api.events.v1.Event"]
    assert events["x-kubernetes-preserve-unknown-fields"] is True
    assert "involvedObject" in v3_document("", "v1", resources)["components"]["schemas"][
        "io.k8s.api.core.v1.Event"]["properties"]


def test_refs_resolve_in_every_document(resources):
    for group, version in all_gvs():
        doc = v3_document(group, version, resources)
        schemas = doc["components"]["schemas"]
        found = list(refs(doc))
        assert found
        for ref in found:
            assert ref.startswith(REF) and ref[len(REF):] in schemas, (group, version, ref)
    v2 = v2_document(resources)
    for ref in refs(v2):
        assert ref.startswith(REF_V2) and ref[len(REF_V2):] in v2["definitions"], ref
    assert "#/components/" not in v2_document_json(resources)[0].decode()


# ------------------------------------------------------------------ kubectl explain
def test_explain_deployment_spec_replicas(resources):
    doc = v3_document("apps", "v1", resources)
    gvk, kind, field, resolved = kubectl_explain(doc, "apps", "v1", "deployments", ["spec", "replicas"])
    assert gvk == {"group": "apps", "kind": "Deployment", "version": "v1"}
    assert kind["description"].startswith("A Deployment")
    assert field["type"] == "integer"
    assert "desired pods" in field["description"]
    _, _, template, resolved = kubectl_explain(doc, "apps", "v1", "deployments", ["spec", "template", "spec",
                                                                                  "containers", "image"])
    assert template["type"] == "string" and template["description"]
    with pytest.raises(AssertionError, match="does not exist"):
        kubectl_explain(doc, "apps", "v1", "deployments", ["spec", "replicaz"])


def test_explain_finds_cluster_scoped_and_stored_kinds(resources):
    core = v3_document("", "v1", resources)
    gvk, kind, field, _ = kubectl_explain(core, "", "v1", "nodes", ["spec", "podCIDR"])
    assert gvk == {"group": "", "kind": "Node", "version": "v1"} and field["type"] == "string"
    gvk, kind, field, resolved = kubectl_explain(core, "", "v1", "serviceaccounts", ["metadata", "labels"])
    assert gvk["kind"] == "ServiceAccount" and field["additionalProperties"] == {"type": "string"}
    pools = v3_document("metallb.io", "v1beta1", resources)
    _, _, field, _ = kubectl_explain(pools, "metallb.io", "v1beta1", "ipaddresspools", ["spec", "autoAssign"])
    assert field["type"] == "boolean"


# ------------------------------------------------------------------ swagger 2.0
def test_v2_document(resources):
    v2 = v2_document(resources)
    assert v2["swagger"] == "2.0"
    for group, version in all_gvs():  # every group/version's paths, in one document
        assert f"/{gv_path(group, version)}/" in v2["paths"]
    patch = v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    params = {p["name"]: p for p in patch["parameters"]}
    assert params["fieldValidation"] == {**params["fieldValidation"], "in": "query", "type": "string"}
    assert params["body"]["in"] == "body"
    assert params["body"]["schema"] == {"$ref": REF_V2 + "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}
    assert "application/merge-patch+json" in patch["consumes"]
    assert "application/strategic-merge-patch+json" not in patch["consumes"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert patch["responses"]["200"]["schema"] == {"$ref": REF_V2 + "io.k8s.api.apps.v1.Deployment"}
    defs = v2["definitions"]
    spec = defs["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]
    assert spec["template"]["$ref"] == REF_V2 + "io.k8s.api.core.v1.PodTemplateSpec" and spec["template"]["description"]
    assert defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"
    # kubectl validates on the client with v2 only, and rejects any field a schema does not list: a stored
    # kind keeps no properties there (as the API server publishes custom resources)
    sa = defs["io.k8s.api.core.v1.ServiceAccount"]
    assert "properties" not in sa and sa["type"] == "object" and sa["x-kubernetes-preserve-unknown-fields"] is True
    assert sa["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "ServiceAccount", "version": "v1"}]
    assert "oneOf" not in json.dumps(v2)
    assert defs["io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler"]["x-kubernetes-group-version-kind"][0][
        "version"] == "v1"
    assert defs["io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler"]["x-kubernetes-group-version-kind"][0][
        "version"] == "v2"


# ------------------------------------------------------------------ hashes and the cache
CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
       "metadata": {"name": "crontabs.stable.example.com"},
       "spec": {"group": "stable.example.com", "scope": "Namespaced",
                "names": {"kind": "CronTab", "plural": "crontabs", "singular": "crontab"},
                "versions": [{"name": "v1", "served": True, "storage": True,
                              "subresources": {"status": {}}}]}}
METALLB_CRD = {"metadata": {"name": "widgets.metallb.io"},
               "spec": {"group": "metallb.io", "scope": "Namespaced", "names": {"kind": "Widget", "plural": "widgets"},
                        "versions": [{"name": "v1beta1", "served": True, "storage": True}]}}


def test_hashes_are_stable_and_follow_the_crds():
    before = v3_index(registry.all_resources())
    v2_before = v2_document_json(registry.all_resources())[1]
    openapi._cache.clear()  # a fresh build gives the same documents, not just the cached ones
    assert v3_index(registry.all_resources()) == before
    assert v2_document_json(registry.all_resources())[1] == v2_before
    try:
        assert registry.register_crd(CRD) is not None
        assert registry.register_crd(METALLB_CRD) is not None
        after = v3_index(registry.all_resources())
        key = "apis/stable.example.com/v1"
        assert set(after["paths"]) == set(before["paths"]) | {key}
        assert after["paths"]["api/v1"] == before["paths"]["api/v1"]
        assert after["paths"]["apis/metallb.io/v1beta1"] != before["paths"]["apis/metallb.io/v1beta1"]
        assert v2_document_json(registry.all_resources())[1] != v2_before

        doc = v3_document("stable.example.com", "v1", registry.all_resources())
        crontab = doc["components"]["schemas"]["com.example.stable.v1.CronTab"]
        assert crontab["x-kubernetes-preserve-unknown-fields"] is True
        assert crontab["x-kubernetes-group-version-kind"] == [{"group": "stable.example.com", "kind": "CronTab",
                                                               "version": "v1"}]
        assert kubectl_supports_field_validation(doc, "stable.example.com", "v1", "CronTab")
        assert "/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}/status" in doc["paths"]
        widget = v3_document("metallb.io", "v1beta1", registry.all_resources())["components"]["schemas"]
        assert widget["io.metallb.v1beta1.Widget"]["x-kubernetes-preserve-unknown-fields"] is True
    finally:
        registry.unregister_crd(CRD["metadata"]["name"])
        registry.unregister_crd(METALLB_CRD["metadata"]["name"])
    assert v3_index(registry.all_resources()) == before
    assert v2_document_json(registry.all_resources())[1] == v2_before


def test_documents_are_cached_and_fast(resources):
    assert v3_document("apps", "v1", resources) is v3_document("apps", "v1", list(resources))
    openapi._cache.clear()
    start = time.perf_counter()
    v3_index(resources)
    v2_document(resources)
    assert time.perf_counter() - start < 1.0
    start = time.perf_counter()
    for _ in range(100):
        v3_index(resources)
        v3_document_json("", "v1", resources)
    assert time.perf_counter() - start < 0.5
