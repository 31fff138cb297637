"""Kubernetes PATCH: JSON patch, JSON merge patch, strategic merge patch and (approximated) apply.

Pure functions over JSON dicts (camelCase, as the API serializes objects). The server maps
:class:`PatchError` to a Status with ``.code``.

Strategic merge patch (SMP) follows k8s.io/apimachinery/pkg/util/strategicpatch as applied by the
server (``StrategicMergeMapPatch``: parallel lists merged, unmatched nulls dropped), because kubectl
apply/edit/patch compute SMPs client side from the Go struct tags and expect the server to undo them
exactly. The tags live in :data:`_TYPES`; a list not in the table is replaced, a map is merged, as
for a Go field without tags. Deliberate deviations, all on inputs kubectl does not send: values new to
the object are cleaned of directives and nulls (Go copies them raw and lets decoding drop them), and
server-side list elements lacking their merge key are kept rather than refused.
"""
from __future__ import annotations

import copy
import json
from typing import Any, NamedTuple, Optional

import jsonpatch
import yaml

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
# the order kube-apiserver lists them in its 415 answer
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)


class PatchError(ValueError):
    """A patch that cannot be applied; .code is the HTTP status to answer (400 bad patch body,
    422 when the result is unusable, 415 unknown type)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- the struct tags


class _F(NamedTuple):
    key: Optional[str] = None  # list patchMergeKey; "" = scalar list merged as a set; None = replaced
    type: Optional[str] = None  # _TYPES entry describing the value (each element, for a list)
    replace: bool = False  # a map with patchStrategy "replace"


_NONE = _F()
_META = {"metadata": _F(type="ObjectMeta")}
_CONDITIONS = {"conditions": _F("type")}  # the status of most kinds: conditions merged by type

# patchStrategy/patchMergeKey tags of k8s.io/api, by Go struct, only for the fields that carry one
# or lead to one. Kinds share a shape where the tags agree (all pod-template workloads, say).
_TYPES: dict[str, dict[str, _F]] = {
    "ObjectMeta": {"finalizers": _F(""), "ownerReferences": _F("uid")},
    "PodTemplateSpec": {**_META, "spec": _F(type="PodSpec")},
    "PodSpec": {
        "containers": _F("name", "Container"),
        "initContainers": _F("name", "Container"),
        "ephemeralContainers": _F("name", "Container"),
        "volumes": _F("name"),
        "imagePullSecrets": _F("name"),
        "hostAliases": _F("ip"),
        # upstream keys it by topologyKey alone (SSA uses topologyKey+whenUnsatisfiable)
        "topologySpreadConstraints": _F("topologyKey"),
        "schedulingGates": _F("name"),
        "resourceClaims": _F("name"),
        # tolerations, readinessGates: no tag, replaced
    },
    # Container and EphemeralContainer (envFrom, resizePolicy: no tag, replaced)
    "Container": {
        "ports": _F("containerPort"),
        "env": _F("name"),
        "volumeMounts": _F("mountPath"),
        "volumeDevices": _F("devicePath"),
    },
    "PodStatus": {**_CONDITIONS, "podIPs": _F("ip"), "hostIPs": _F("ip"), "resourceClaimStatuses": _F("name")},
    "Status": _CONDITIONS,
    # Deployment, ReplicaSet, DaemonSet, StatefulSet, Job, ReplicationController
    "TemplateSpec": {"template": _F(type="PodTemplateSpec")},
    "JobTemplateSpec": {**_META, "spec": _F(type="TemplateSpec")},
    "ServiceSpec": {"ports": _F("port")},
    "NodeSpec": {"podCIDRs": _F("")},  # taints: no tag, replaced
    "NodeStatus": {**_CONDITIONS, "addresses": _F("type")},
    "Webhook": {"matchConditions": _F("name")},
    # ----- kinds
    "Object": _META,
    "Pod": {**_META, "spec": _F(type="PodSpec"), "status": _F(type="PodStatus")},
    "Workload": {**_META, "spec": _F(type="TemplateSpec"), "status": _F(type="Status")},
    "CronJob": {**_META, "spec": _F(type="CronJobSpec")},
    "CronJobSpec": {"jobTemplate": _F(type="JobTemplateSpec")},
    "PodTemplate": {**_META, "template": _F(type="PodTemplateSpec")},
    "Service": {**_META, "spec": _F(type="ServiceSpec"), "status": _F(type="Status")},
    "Node": {**_META, "spec": _F(type="NodeSpec"), "status": _F(type="NodeStatus")},
    "WithStatus": {**_META, "status": _F(type="Status")},
    "PodDisruptionBudget": {**_META, "spec": _F(type="PDBSpec"), "status": _F(type="Status")},
    "PDBSpec": {"selector": _F(replace=True)},
    "ServiceAccount": {**_META, "secrets": _F("name")},
    "ComponentStatus": {**_META, **_CONDITIONS},
    "WebhookConfiguration": {**_META, "webhooks": _F("name", "Webhook")},
}

_KINDS: dict[str, str] = {
    "Pod": "Pod", "PodTemplate": "PodTemplate", "CronJob": "CronJob", "Service": "Service", "Node": "Node",
    "PodDisruptionBudget": "PodDisruptionBudget", "ServiceAccount": "ServiceAccount",
    "ComponentStatus": "ComponentStatus",
    **dict.fromkeys(("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job", "ReplicationController"),
                    "Workload"),
    **dict.fromkeys(("Namespace", "PersistentVolumeClaim", "HorizontalPodAutoscaler", "CertificateSigningRequest",
                     "FlowSchema", "PriorityLevelConfiguration", "APIService"), "WithStatus"),
    **dict.fromkeys(("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"), "WebhookConfiguration"),
    # built in, but no tags below metadata that matter
    **dict.fromkeys((
        "ConfigMap", "Secret", "Event", "Endpoints", "PersistentVolume", "ResourceQuota", "LimitRange",
        "Binding", "Eviction", "Scale", "ControllerRevision", "EndpointSlice", "Ingress", "IngressClass",
        "NetworkPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "StorageClass", "CSIDriver",
        "CSINode", "CSIStorageCapacity", "VolumeAttachment", "PriorityClass", "Lease", "RuntimeClass",
        "CustomResourceDefinition", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
        "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding", "ServiceCIDR", "IPAddress",
    ), "Object"),
}


def _field(schema: Optional[str], name: str) -> _F:
    return _TYPES.get(schema or "", {}).get(name, _NONE)


# --------------------------------------------------------------------------- entry point


def apply_patch(current: dict, body: bytes | str, content_type: str, kind: str,
                strategic_ok: Optional[bool] = None) -> dict:
    """Apply a PATCH request body to ``current`` (not mutated) and return the new object.

    ``strategic_ok`` says whether the resource accepts strategic merge patch; None decides by
    ``kind``: upstream built-in kinds do, anything else is taken for a custom resource and refused
    with 415, as kube-apiserver does (it has no Go struct tags for them).

    ``application/apply-patch+yaml`` (server-side apply) is approximated: the body is merged into
    ``current`` like a strategic merge patch (lists with a merge key merged by it, scalar sets as
    sets, other lists replaced, maps merged), new list elements appended, nulls and ``$`` directives
    ignored; fields the body does not mention are kept. There is no field ownership, so fields an
    earlier apply set and this one omits are *not* removed, and there are no conflicts.
    """
    ctype = content_type.split(";", 1)[0].strip().lower()
    if strategic_ok is None:
        strategic_ok = kind in _KINDS
    accepted = [t for t in PATCH_TYPES if strategic_ok or t != STRATEGIC_PATCH]
    if ctype not in accepted:
        raise PatchError(415, "the body of the request was in an unknown format - accepted media types include: "
                         + ", ".join(accepted))
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise PatchError(400, f"error decoding patch: {e}") from None
    doc = copy.deepcopy(current)  # every path below may then share or rebuild parts of doc freely

    if ctype == APPLY_PATCH:
        from netemu.spec.documents import safe_load_limited

        try:  # with the API server's limits (no alias bombs)
            applied = _jsonable(safe_load_limited(body, _YAMLLoader))
        except yaml.YAMLError as e:
            raise PatchError(400, f"error decoding YAML: {e}") from None
        if not isinstance(applied, dict):
            raise PatchError(400, "the apply configuration must be a YAML or JSON object")
        result = _apply_merge(doc, applied, _KINDS.get(kind))
    else:
        patch = _loads(body)
        if ctype == JSON_PATCH:
            result = _json_patch(doc, patch)
        elif ctype == MERGE_PATCH:
            result = _merge_patch(doc, patch)
        else:
            if not isinstance(patch, dict):
                raise PatchError(400, f"json: cannot unmarshal {_json_kind(patch)} into Go value of type "
                                 "map[string]interface {}")
            result = _merge_map(doc, patch, _KINDS.get(kind))
    if not isinstance(result, dict):
        raise PatchError(422, f"the patched object is a JSON {_json_kind(result)}, not an object")
    return result


class _YAMLLoader(yaml.SafeLoader):
    """YAML as kube reads it (through JSON): timestamps stay strings."""


_YAMLLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag != "tag:yaml.org,2002:timestamp"]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _jsonable(v: Any) -> Any:
    """JSON has string keys only; YAML 1.1 may hand back ``on: x`` as ``{True: "x"}``."""
    if isinstance(v, dict):
        return {k if isinstance(k, str) else json.dumps(k) if isinstance(k, (bool, type(None))) else str(k):
                _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def _loads(text: str) -> Any:
    def refuse(name):  # Go's decoder has no NaN/Infinity, so neither may a patch
        raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError as e:
        raise PatchError(400, f"error decoding patch: {e}") from None


def _json_kind(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "bool", type(None): "null"}.get(type(v), "number")


# --------------------------------------------------------------------------- RFC 6902 and RFC 7386


def _json_patch(doc: dict, ops: Any) -> Any:
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise PatchError(400, f"json: cannot unmarshal {_json_kind(ops)} into Go value of type jsonpatch.Patch")
    # one operation at a time, so that the error names the operation that failed, as kube's does
    for op in ops:
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc, in_place=True)
        except jsonpatch.InvalidJsonPatch as e:
            raise PatchError(400, f"invalid JSON patch operation {json.dumps(op)}: {e}") from None
        except jsonpatch.JsonPatchTestFailed:
            raise PatchError(422, f"testing value {op.get('path')} failed: test failed") from None
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException,
                TypeError, KeyError, IndexError, ValueError) as e:  # the library's own slips on odd documents
            raise PatchError(422, f"{op.get('op')} operation does not apply: doc is missing path: "
                             f"\"{op.get('path')}\": {e}") from None
    return doc


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch  # RFC 7386: anything but an object replaces the target whole
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = _merge_patch(result.get(k), v)
    return result


# --------------------------------------------------------------------------- strategic merge patch

_DIRECTIVE = "$patch"
_RETAIN = "$retainKeys"
_ORDER = "$setElementOrder/"
_DELETE_FROM = "$deleteFromPrimitiveList/"


def _hk(v: Any) -> tuple:
    """A hashable identity for a merge-key value or set element; Go compares interface values, so
    true is not 1 and 80 is 80.0."""
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, (int, float)):
        return ("n", float(v))
    if isinstance(v, str):
        return ("s", v)
    return ("j", json.dumps(v, sort_keys=True))


def _merge_map(orig: dict, patch: dict, schema: Optional[str]) -> dict:
    directive = patch.get(_DIRECTIVE)
    if directive == "replace":
        return _merge_map({}, {k: v for k, v in patch.items() if k != _DIRECTIVE}, schema)
    if directive == "delete":
        return {}
    if _DIRECTIVE in patch:  # "merge" is only legal in lists; upstream refuses it in maps too
        raise PatchError(400, f"unknown patch type: {directive} in map: {patch}")
    result, patch = dict(orig), dict(patch)

    # Upstream order matters: $retainKeys clears first, then $setElementOrder lists (merged with their
    # field), then everything else; deletions from primitive lists go last so an addition cannot undo them.
    if _RETAIN in patch:
        retain = patch.pop(_RETAIN)
        if not isinstance(retain, list):
            raise PatchError(400, "invalid patch format of retainKeys")
        for k, v in patch.items():
            if v is not None and not k.startswith((_ORDER, _DELETE_FROM)) and k not in retain:
                raise PatchError(400, "invalid patch format of retainKeys")
        result = {k: v for k, v in result.items() if k in retain}

    for okey in [k for k in patch if k.startswith(_ORDER)]:
        _set_element_order(result, patch, okey, schema)

    deletions = []
    for k, v in patch.items():
        if k.startswith(_DELETE_FROM):
            deletions.append((k, v))
            continue
        if k.startswith("$"):
            continue  # an unknown directive: a typed decode would drop the field anyway
        if v is None:
            result.pop(k, None)
            continue
        f = _field(schema, k)
        cur = result.get(k)
        if isinstance(cur, dict) and isinstance(v, dict):
            result[k] = _merge_map({} if f.replace else cur, v, f.type)
        elif isinstance(cur, list) and isinstance(v, list):
            result[k] = _merge_list(cur, v, f)
        else:  # absent, or the type changed: take the patch value
            result[k] = _fresh(v, f)

    for k, v in deletions:
        name = k[len(_DELETE_FROM):]
        if not isinstance(v, list) or not name:
            raise PatchError(400, "invalid patch format of primitive list")
        if isinstance(result.get(name), list):
            gone = {_hk(x) for x in v}
            result[name] = [x for x in result[name] if _hk(x) not in gone]
    return result


def _fresh(v: Any, f: _F) -> Any:
    """A patch value with nothing to merge into, cleaned of directives and nulls."""
    if isinstance(v, dict):
        return _merge_map({}, v, f.type)
    if isinstance(v, list):
        return _merge_list([], v, f)
    return v


def _merge_list(orig: list, patch: list, f: _F) -> list:
    if f.key is None:  # no patchStrategy: the patch list replaces the whole list
        return [_merge_map({}, e, f.type) if isinstance(e, dict) else e
                for e in patch if not (isinstance(e, dict) and _DIRECTIVE in e)]
    if not orig and not patch:
        return []
    _element_kind(orig + patch)
    if not any(isinstance(e, dict) for e in orig + patch):  # a set of scalars (finalizers)
        seen, merged = set(), []
        for e in orig + patch:
            if _hk(e) not in seen:
                seen.add(_hk(e))
                merged.append(e)
        ident = _hk
    else:
        if not f.key:
            raise PatchError(422, "cannot merge lists without merge key")
        key = f.key
        ident = lambda e: _hk(e.get(key))  # noqa: E731
        plain, replace = [], False
        for e in patch:
            if _DIRECTIVE not in e:
                plain.append(e)
            elif e[_DIRECTIVE] == "delete":
                if key not in e:
                    raise PatchError(400, f"map: {e} does not contain declared merge key: {key}")
                orig = [o for o in orig if ident(o) != ident(e) or key not in o]
            elif e[_DIRECTIVE] == "replace":
                replace = True
            elif e[_DIRECTIVE] == "merge":
                raise PatchError(400, "merging lists cannot yet be specified in the patch")
            else:
                raise PatchError(400, f"unknown patch type: {e[_DIRECTIVE]} in map: {e}")
        if replace:  # the remaining elements are the whole list, in their order
            orig, plain = [_merge_map({}, e, f.type) for e in plain], []
        merged = list(orig)
        for e in plain:
            if key not in e:
                raise PatchError(400, f"map: {e} does not contain declared merge key: {key}")
            at = next((i for i, o in enumerate(merged) if key in o and ident(o) == ident(e)), None)
            if at is None:
                merged.append(_merge_map({}, e, f.type))
            else:
                merged[at] = _merge_map(merged[at], e, f.type)
        patch = plain
    in_patch = {ident(e) for e in patch}
    return _order([e for e in merged if ident(e) in in_patch], [e for e in merged if ident(e) not in in_patch],
                  patch, orig, ident)


def _element_kind(items: list) -> None:
    kinds = {_json_kind(e) for e in items}
    if "array" in kinds:
        raise PatchError(422, "lists of lists are not supported")
    if len(kinds) > 1 and "object" in kinds:
        raise PatchError(422, f"list element types are not identical: {items}")


def _order(patch_items: list, server_only: list, patch_order: list, server_order: list, ident) -> list:
    """Upstream normalizeElementOrder: patch items in the patch's order, server-only items in the live
    order, then interleaved so a server-only item goes before the first patch item that follows it in
    the live list. Elements new to the list therefore come *first* (kubectl's docs show it)."""
    def index(seq, e):
        want = ident(e)
        return next((i for i, x in enumerate(seq) if ident(x) == want), -1)

    def sort_by(items, seq):
        return sorted(items, key=lambda e: (index(seq, e) < 0, index(seq, e)))

    left, right = sort_by(server_only, server_order), sort_by(patch_items, patch_order)
    out, i, j = [], 0, 0
    while i < len(left) or j < len(right):
        if j >= len(right):
            take_left = True
        elif i >= len(left):
            take_left = False
        else:
            li, ri = index(server_order, left[i]), index(server_order, right[j])
            take_left = 0 <= li < ri
        if take_left:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    return out


def _set_element_order(result: dict, patch: dict, okey: str, schema: Optional[str]) -> None:
    """Merge the list named by ``$setElementOrder/<name>`` together with its patch list, then order it:
    the listed elements in the given order, the others interleaved by their live position."""
    order = patch.pop(okey)
    name = okey[len(_ORDER):]
    if not isinstance(order, list) or not name:
        raise PatchError(400, "invalid patch format of setElementOrder list")
    f = _field(schema, name)
    cur, plist = result.get(name), patch.pop(name, None)
    if cur is not None and not isinstance(cur, list) or plist is not None and not isinstance(plist, list):
        raise PatchError(400, "invalid patch format of setElementOrder list")
    if cur is None and plist is None:
        return
    merged = cur if plist is None else _merge_list(cur or [], plist, f)
    if f.key is None or not merged:  # a replaced list keeps the patch's order, as upstream would
        result[name] = merged
        return
    if isinstance(merged[0], dict):
        key = f.key
        if any(not isinstance(e, dict) or key not in e for e in order):
            raise PatchError(400, "invalid patch format of setElementOrder list")
        ident = lambda e: _hk(e.get(key))  # noqa: E731
    else:
        ident = _hk
    wanted = {ident(e) for e in order}
    result[name] = _order([e for e in merged if ident(e) in wanted], [e for e in merged if ident(e) not in wanted],
                          order, cur or [], ident)


# --------------------------------------------------------------------------- server-side apply (approximate)


def _apply_merge(cur: Any, applied: Any, schema: Optional[str], f: _F = _NONE) -> Any:
    """Merge an apply configuration into the live object; see :func:`apply_patch` for what is left out."""
    if isinstance(applied, dict):
        base = cur if isinstance(cur, dict) and not f.replace else {}
        out = dict(base)
        for k, v in applied.items():
            if v is None or k.startswith("$"):
                continue  # not a deletion in apply, and directives are SMP-only
            sub = _field(schema, k)
            out[k] = _apply_merge(base.get(k), v, sub.type, sub)
        return out
    if isinstance(applied, list):
        if f.key is None or not isinstance(cur, list):
            return [_apply_merge(None, e, schema) for e in applied]
        _element_kind(cur + applied)
        ident = _hk if f.key == "" else (lambda e: _hk(e.get(f.key)) if isinstance(e, dict) else _hk(e))
        out = list(cur)
        for e in applied:
            at = next((i for i, o in enumerate(out) if ident(o) == ident(e)), None)
            if at is None:
                out.append(_apply_merge(None, e, schema))
            elif isinstance(e, dict):
                out[at] = _apply_merge(out[at], e, schema)
        return out
    return applied
