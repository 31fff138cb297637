"""What each API verb does to the lab's store: the REST semantics kube-apiserver gives its clients
(resourceVersion preconditions, generation, status and scale subresources, dry-run, cascading
deletes, label and field selectors, watch windows), on top of :class:`netemu.control.cluster.Cluster`.

Every write goes through the spec layer's conversion, defaults and validation (the same door as a lab
file), and is checked completely before anything is stored: a refused request changes nothing.
Pure: no kernel and no network; the daemon's HTTP layer (netemu.daemon.apiserver) calls it.
"""
from __future__ import annotations

import copy
import json
from typing import Any, Callable, Optional

from netemu.api import errors
from netemu.spec import registry
from netemu.api.errors import ApiError
from netemu.spec.registry import Resource
from netemu.api.selectors import field_selector, label_selector
from netemu.api.versions import at_version
from netemu.api.watchlog import Change, WatchLog, encode
from netemu.wellknown import SERVICE_NAME_LABEL

# kinds the store does not hold: served from elsewhere (the cluster's event list, the metrics
# collector, the EndpointSlices) through providers the daemon registers
VIRTUAL = {"Event", "Endpoints", "PodMetrics", "NodeMetrics", "ComponentStatus"}


def _rv(obj) -> int:
    return int(obj.metadata.resource_version or 0)


class Storage:
    def __init__(self, cluster, kick: Callable[[], None] = lambda: None):
        self.cluster = cluster
        self.store = cluster.store
        self.kick = kick
        self.watch = WatchLog()
        self.providers: dict[str, Callable[..., list[dict]]] = {}
        self._dumps: dict[tuple, tuple[str, dict]] = {}  # store key -> (resourceVersion, dict)
        self.journal = None  # netemu.daemon.journal.Journal: every change, as the watch window has it
        self.store.listeners.append(self._on_change)
        cluster.event_listeners.append(self._on_event)

    # ------------------------------------------------------------------ change feed
    def _on_change(self, kind: str, event: str, obj) -> None:
        from netemu.control.store import key_of

        key = key_of(obj)
        d = obj.dump()
        if event == "DELETED":
            self._dumps.pop(key, None)
        else:
            self._dumps[key] = (obj.metadata.resource_version, d)
        res = registry.by_kind(kind)
        rv, raw = int(obj.metadata.resource_version), encode(d)
        if self.journal is not None:
            self.journal.record(rv, key, None if event == "DELETED" else raw)
        self.watch.append(Change(rv, event, kind, res.group if res else "", key[1], d.get("apiVersion", ""), raw))
        if kind == "CustomResourceDefinition":
            (registry.unregister_crd(obj.metadata.name) if event == "DELETED" else registry.register_crd(d))
        if kind == "EndpointSlice":  # core Endpoints is a view of the slices: watchers of it learn too
            svc = (obj.metadata.labels or {}).get(SERVICE_NAME_LABEL)
            s = self.store.find("Service", key[1], svc) if svc else None
            if s is not None:
                ep = self._endpoints_of(s)
                ep["metadata"]["resourceVersion"] = obj.metadata.resource_version
                self.watch.append(Change(int(obj.metadata.resource_version), "MODIFIED", "Endpoints", "", key[1],
                                         "v1", encode(ep)))

    def _on_event(self, ev) -> None:
        ev.rv = self.store.next_rv()
        d = event_dict(ev)
        self.watch.append(Change(ev.rv, "ADDED" if ev.count == 1 else "MODIFIED", "Event", "", ev.namespace, "v1",
                                 encode(d)))

    def dump(self, obj) -> dict:
        from netemu.control.store import key_of

        key = key_of(obj)
        hit = self._dumps.get(key)
        if hit is not None and hit[0] == obj.metadata.resource_version:
            return hit[1]
        d = obj.dump()
        self._dumps[key] = (obj.metadata.resource_version, d)
        return d

    # ------------------------------------------------------------------ reads
    def resource_version(self) -> str:
        return str(self.store.last_rv)

    def list(self, res: Resource, namespace: Optional[str], labels: Optional[str] = None,
             fields: Optional[str] = None) -> list[dict]:
        match_l, match_f = label_selector(labels), field_selector(res.kind, fields)
        items = self._all(res, namespace)
        out = [o for o in items if match_l(o) and match_f(o)]
        out.sort(key=lambda o: ((o["metadata"].get("namespace") or ""), o["metadata"].get("name") or ""))
        return [self._as_version(res, o) for o in out]

    def _all(self, res: Resource, namespace: Optional[str]) -> list[dict]:
        if res.kind == "Event":
            return [event_dict(e) for e in self.cluster.events
                    if namespace is None or e.namespace == namespace]
        if res.kind == "Endpoints":
            svcs = self.store.list("Service", namespace) if namespace else self.store.list("Service")
            return [self._endpoints_of(s) for s in svcs if s.spec.type != "ExternalName"]
        if res.kind in self.providers:
            return self.providers[res.kind](namespace)
        objs = self.store.list(res.kind, namespace if res.namespaced else None)
        return [self.dump(o) for o in objs]

    def get(self, res: Resource, namespace: str, name: str) -> dict:
        if res.kind in VIRTUAL:
            for o in self._all(res, namespace if res.namespaced else None):
                if o["metadata"]["name"] == name:
                    return self._as_version(res, o)
            raise errors.not_found(res, name)
        return self._as_version(res, self.dump(self._obj(res, namespace, name)))

    def _obj(self, res: Resource, namespace: str, name: str):
        obj = self.store.find(res.kind, namespace if res.namespaced else "", name)
        if obj is None:
            raise errors.not_found(res, name)
        return obj

    def _as_version(self, res: Resource, d: dict) -> dict:
        """The stored form at the version ``res`` is asked at (see netemu.api.versions)."""
        return at_version(res, res.version, d)

    def _endpoints_of(self, svc) -> dict:
        from netemu.control.endpoints import endpoints_view

        slices = [s for s in self.store.list("EndpointSlice", svc.metadata.namespace)
                  if (s.metadata.labels or {}).get(SERVICE_NAME_LABEL) == svc.metadata.name]
        ep = endpoints_view(svc, slices)
        ep.setdefault("apiVersion", "v1")
        ep.setdefault("kind", "Endpoints")
        meta = ep.setdefault("metadata", {})
        meta.setdefault("creationTimestamp", svc.metadata.creation_timestamp)
        meta.setdefault("resourceVersion", str(max([_rv(svc)] + [_rv(s) for s in slices])))
        return ep

    # ------------------------------------------------------------------ writes
    def _check_namespace(self, res: Resource, namespace: str) -> None:
        if not res.namespaced:
            return
        ns = self.store.find("Namespace", "", namespace)
        if ns is None:
            raise errors.namespace_not_found(namespace)
        if ns.metadata.deletion_timestamp:
            raise ApiError(403, "Forbidden", f'{res.plural} is forbidden: unable to create new content in namespace '
                           f"{namespace} because it is being terminated")

    def _admit(self, res: Resource, body: dict, namespace: Optional[str], name_hint: str,
               field_validation: str = "Warn", known_unknown: frozenset = frozenset()) -> tuple[Any, list[str]]:
        """The same door as a lab file: convert, defaults, validation. Returns (model, warnings)."""
        from netemu.spec.convert import convert
        from netemu.spec.defaults import apply_defaults
        from netemu.spec.errors import Location, Report
        from netemu.spec.validate import validate_objects

        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        body.setdefault("kind", res.kind)
        body.setdefault("apiVersion", res.group_version)
        if body.get("kind") != res.kind:
            raise errors.bad_request(f'the kind of the object ({body.get("kind")}) does not match the resource '
                                     f"({res.plural}): expected {res.kind}")
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if res.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent "
                                         "on the request")
            meta["namespace"] = namespace
        report = Report()
        items = convert(body, Location("request"), report)
        for c in items:
            apply_defaults(c.obj)
        if items and not report.errors:
            validate_objects(items, self.cluster.lab, report)
        if report.errors or not items:
            raise errors.invalid(res, meta.get("name") or name_hint, _causes(report.fields or [("", "invalid object")],
                                                                           body))
        unknown = [p for p, t in report.warn_fields if t.startswith("unknown field") and p not in known_unknown]
        if unknown and field_validation == "Strict":  # kubectl's default (--validate=strict)
            kind = res.kind
            raise errors.bad_request(f'{kind} in version "{res.version}" cannot be handled as a {kind}: strict '
                                     "decoding error: " + ", ".join(f'unknown field "{p}"' for p in unknown))
        warnings = [(f'unknown field "{p}"' + t[len("unknown field, ignored"):]) if t.startswith("unknown field")
                    else (f"{p}: {t}" if p else t) for p, t in report.warn_fields
                    if field_validation != "Ignore" or not t.startswith("unknown field")]
        return items[0].obj, warnings

    def create(self, res: Resource, namespace: Optional[str], body: dict, dry_run: bool = False,
               field_validation: str = "Warn") -> tuple[dict, list]:
        if res.kind in VIRTUAL and res.kind != "Event" or "create" not in res.verbs:
            raise errors.method_not_allowed()
        meta = body.get("metadata") if isinstance(body, dict) else None
        if isinstance(meta, dict) and not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + _suffix(self.store.rng)
        if isinstance(meta, dict):  # the server owns these
            for k in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation"):
                meta.pop(k, None)
        if res.kind == "Event":
            return self._create_event(namespace, body), []
        if res.kind == "Node":
            raise errors.forbidden('nodes are the lab\'s own: add one to the Lab document (spec.nodes) and '
                                   "`netemu up` the lab again")
        self._check_namespace(res, namespace or "")
        obj, warnings = self._admit(res, body, namespace, "", field_validation)
        if self.store.find(res.kind, obj.metadata.namespace or "", obj.metadata.name) is not None:
            raise errors.already_exists(res, obj.metadata.name)
        self._admission(obj, None)
        if dry_run:
            obj.metadata.uid = obj.metadata.uid or self.store.new_uid()
            obj.metadata.creation_timestamp = self.cluster.now_str()
            return self._as_version(res, obj.dump()), warnings
        self.store.create(obj)
        self._kick(res)
        return self._as_version(res, self.dump(obj)), warnings

    def _kick(self, res: Optional[Resource]) -> None:
        """Wake the controllers, unless no controller reads this kind (stored kinds): a ConfigMap of an
        installer's should not cost a reconcile pass of the whole lab."""
        if res is None or res.acted or res.kind == "CustomResourceDefinition" or not res.builtin:
            self.kick()
        elif res.kind in ("DaemonSet", "Job", "StatefulSet", "PodDisruptionBudget", "ServiceAccount",
                          "APIService"):
            self.kick()  # their controllers or the lab's stand-ins for them read them

    def _admission(self, obj, current) -> None:
        from netemu.control import services
        from netemu.control.cluster import AdmissionError

        try:
            services.admit(self.cluster, obj, current)
        except AdmissionError as e:
            raise ApiError(422, "Invalid", str(e)) from None

    def update(self, res: Resource, namespace: str, name: str, body: dict, subresource: str = "",
               dry_run: bool = False, field_validation: str = "Warn") -> tuple[dict, list]:
        if res.kind in VIRTUAL or "update" not in res.verbs:
            raise errors.method_not_allowed()
        current = self._obj(res, namespace, name)
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise errors.bad_request(f'the name of the object ({meta.get("name")}) does not match the name on the URL '
                                     f"({name})")
        want_rv = meta.get("resourceVersion")
        if want_rv and want_rv != current.metadata.resource_version:
            raise errors.conflict(res, name)
        body = copy.deepcopy(body)
        body.setdefault("metadata", {})["name"] = name
        if subresource == "status":  # only status changes; the rest is the current object's
            merged = copy.deepcopy(self.dump(current))
            merged["status"] = body.get("status")
            body = merged
        from netemu.spec.fields import unknown_fields

        # strictness is about what this request adds: fields stored before (under Warn) do not count
        before = frozenset(unknown_fields(self.dump(current)) or ())
        new, warnings = self._admit(res, body, namespace, name, field_validation, before)
        self._admission(new, current)
        out = self._replace(current, new, status_only=subresource == "status", dry_run=dry_run)
        return self._as_version(res, out), warnings

    def _replace(self, current, new, status_only: bool, dry_run: bool) -> dict:
        from netemu.control.cluster import _dump

        before = self.dump(current)
        if current.kind == "Pod" and not status_only:
            # a bound pod stays where it is: spec.nodeName is set once (binding), never moved by an update
            if new.spec.node_name is None:
                new.spec.node_name = current.spec.node_name
            elif current.spec.node_name and new.spec.node_name != current.spec.node_name:
                raise errors.invalid(registry.by_kind("Pod"), current.metadata.name, [
                    ("spec.nodeName", f"Invalid value: {new.spec.node_name!r}: field is immutable")])
        target = current.model_copy(deep=True) if dry_run else current
        spec_changed = False
        if status_only:
            if "status" in type(new).model_fields:
                target.status = new.status
        else:
            fields = [f for f in type(new).model_fields if f not in ("metadata", "status", "kind", "api_version")]
            for f in fields:
                if _dump(getattr(new, f)) != _dump(getattr(target, f)):
                    setattr(target, f, getattr(new, f))
                    spec_changed = spec_changed or f != "data"
            extra_new, extra_old = dict(new.model_extra or {}), dict(target.model_extra or {})
            extra_new.pop("status", None)
            if extra_new != {k: v for k, v in extra_old.items() if k != "status"}:
                spec_changed = True
                keep_status = extra_old.get("status")
                target.__pydantic_extra__ = dict(extra_new, **({"status": keep_status} if keep_status else {}))
            m, n = target.metadata, new.metadata
            m.labels, m.annotations, m.owner_references = n.labels, n.annotations, n.owner_references
            for k in ("finalizers",):
                if k in (n.model_extra or {}):
                    m.__pydantic_extra__[k] = n.model_extra[k]
                elif k in (m.model_extra or {}):
                    del m.__pydantic_extra__[k]
            if spec_changed and m.generation is not None:
                m.generation += 1
        if dry_run:
            return target.dump()
        if _same(before, target.dump()):  # a write that changes nothing is no change (no new resourceVersion)
            return before
        self.store.update(target)
        self._kick(registry.by_kind(target.kind))
        return self.dump(target)

    def patch(self, res: Resource, namespace: str, name: str, body: bytes, content_type: str,
              subresource: str = "", dry_run: bool = False, field_validation: str = "Warn") -> tuple[dict, list]:
        from netemu.api.patch import PatchError, apply_patch

        if res.kind in VIRTUAL or "patch" not in res.verbs:
            raise errors.method_not_allowed()
        current = self._obj(res, namespace, name)
        base = self._as_version(res, self.dump(current))
        try:
            patched = apply_patch(base, body, content_type, res.kind,
                                  strategic_ok=None if res.builtin else False)  # CRs take no strategic patches
        except PatchError as e:
            raise ApiError(e.code, {400: "BadRequest", 415: "UnsupportedMediaType"}.get(e.code, "Invalid"),
                           str(e)) from None
        meta = patched.get("metadata") if isinstance(patched, dict) else None
        if not isinstance(meta, dict):
            raise errors.bad_request("the patch removed the object's metadata")
        # a resourceVersion in the patch is a precondition; otherwise the patch applies to the latest
        if meta.get("resourceVersion") not in (None, current.metadata.resource_version):
            raise errors.conflict(res, name)
        meta["resourceVersion"] = current.metadata.resource_version
        return self.update(res, namespace, name, patched, subresource, dry_run, field_validation)

    def delete(self, res: Resource, namespace: str, name: str, options: Optional[dict] = None,
               dry_run: bool = False) -> dict:
        from netemu.control.cluster import AdmissionError

        if res.kind in VIRTUAL or "delete" not in res.verbs:
            raise errors.method_not_allowed()
        options = options or {}
        obj = self._obj(res, namespace, name)
        pre = (options.get("preconditions") or {})
        if pre.get("uid") and pre["uid"] != obj.metadata.uid:
            raise errors.conflict(res, name, f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                                  f"object meta: {obj.metadata.uid}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != obj.metadata.resource_version:
            raise errors.conflict(res, name)
        if dry_run:
            return self.dump(obj)
        if options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents"):
            self._orphan(obj)
        try:
            if res.kind == "Pod":
                grace = options.get("gracePeriodSeconds")
                self.cluster.delete_pod(obj, grace=None if grace is None else int(grace))
            else:
                self.cluster.delete(res.kind, obj.metadata.namespace or "", name)
        except AdmissionError as e:
            raise ApiError(422, "Invalid", str(e)) from None
        self._kick(res)
        return self.dump(obj) if self.store.find(res.kind, obj.metadata.namespace or "", name) else obj.dump()

    def _orphan(self, owner) -> None:
        for o in list(self.store):
            refs = o.metadata.owner_references or []
            kept = [r for r in refs if r.uid != owner.metadata.uid]
            if len(kept) != len(refs):
                o.metadata.owner_references = kept or None
                self.store.update(o)

    def delete_collection(self, res: Resource, namespace: Optional[str], labels: Optional[str],
                          fields: Optional[str], options: Optional[dict], dry_run: bool = False) -> dict:
        items = self.list(res, namespace, labels, fields)
        for o in items:
            try:
                self.delete(res, o["metadata"].get("namespace") or "", o["metadata"]["name"], options, dry_run)
            except ApiError as e:
                if e.code != 404:
                    raise
        return {"kind": f"{res.kind}List", "apiVersion": res.group_version,
                "metadata": {"resourceVersion": self.resource_version()}, "items": items}

    # ------------------------------------------------------------------ subresources
    def scale(self, res: Resource, namespace: str, name: str) -> dict:
        if "scale" not in res.subresources:
            raise errors.not_found(res, name)
        obj = self._obj(res, namespace, name)
        from netemu.control.labels import format_selector

        sel = getattr(obj.spec, "selector", None)
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": name, "namespace": namespace, "uid": obj.metadata.uid,
                             "resourceVersion": obj.metadata.resource_version,
                             "creationTimestamp": obj.metadata.creation_timestamp},
                "spec": {"replicas": obj.spec.replicas if obj.spec.replicas is not None else 1},
                "status": {"replicas": getattr(obj.status, "replicas", 0) or 0,
                           "selector": format_selector(sel) if sel is not None else ""}}

    def set_scale(self, res: Resource, namespace: str, name: str, scale: dict, dry_run: bool = False) -> dict:
        obj = self._obj(res, namespace, name)
        want = (scale.get("metadata") or {}).get("resourceVersion")
        if want and want != obj.metadata.resource_version:
            raise errors.conflict(res, name)
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid(registry.Resource("Scale", "autoscaling", "v1", "scale"), name,
                                 [("spec.replicas", f"Invalid value: {json.dumps(replicas)}: must be greater than or "
                                   "equal to 0")])
        d = self.dump(obj)
        body = dict(d, spec=dict(d["spec"], replicas=replicas))  # update() copies it before changing it
        self.update(res, namespace, name, body, dry_run=dry_run)  # the same validation, dry or not
        if dry_run:
            return dict(self.scale(res, namespace, name), spec={"replicas": replicas})
        return self.scale(res, namespace, name)

    def patch_scale(self, res: Resource, namespace: str, name: str, body: bytes, content_type: str,
                    dry_run: bool = False) -> dict:
        from netemu.api.patch import PatchError, apply_patch

        try:
            patched = apply_patch(self.scale(res, namespace, name), body, content_type, "Scale")
        except PatchError as e:
            raise ApiError(e.code, "BadRequest" if e.code == 400 else "Invalid", str(e)) from None
        return self.set_scale(res, namespace, name, patched, dry_run)

    def evict(self, namespace: str, name: str, body: dict) -> dict:
        pod = self._obj(registry.by_kind("Pod"), namespace, name)
        from netemu.control.disruption import EvictionRefused, evict

        opts = (body or {}).get("deleteOptions") or {}
        grace = opts.get("gracePeriodSeconds")
        try:  # a PodDisruptionBudget may refuse it now (429, as kube-apiserver answers)
            evict(self.cluster, pod, None if grace is None else int(grace))
        except EvictionRefused as e:
            raise ApiError(e.code, e.reason, e.message, e.details) from None
        self.kick()
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def bind(self, namespace: str, name: str, body: dict) -> dict:
        pod = self._obj(registry.by_kind("Pod"), namespace, name)
        target = ((body or {}).get("target") or {}).get("name")
        if not target or self.store.find("Node", "", target) is None:
            raise errors.bad_request(f'binding target node "{target}" not found')
        if pod.spec.node_name:
            raise errors.conflict(registry.by_kind("Pod"), name, f"pod {name} is already assigned to node "
                                  f'"{pod.spec.node_name}"')
        pod.spec.node_name = target
        self.store.update(pod)
        self.kick()
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def _create_event(self, namespace: Optional[str], body: dict) -> dict:
        # clients (and in-cluster programs) may record events; they join the cluster's event list
        inv = body.get("involvedObject") or body.get("regarding") or {}
        ev = self.cluster.record_event(inv.get("kind", ""), inv.get("namespace") or namespace or "",
                                       inv.get("name", ""), body.get("reason", ""), body.get("message") or
                                       body.get("note") or "", body.get("type", "Normal"),
                                       (body.get("source") or {}).get("component") or body.get("reportingController")
                                       or "")
        return event_dict(ev)


# ---------------------------------------------------------------------- helpers
def _same(a: dict, b: dict) -> bool:
    def strip(d: dict) -> dict:
        meta = {k: v for k, v in (d.get("metadata") or {}).items() if k != "resourceVersion"}
        return dict(d, metadata=meta)

    return strip(a) == strip(b)


def _suffix(rng) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(rng.choice(alphabet) for _ in range(5))


def _value_at(body: dict, path: str):
    import re

    cur: Any = body
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            i = int(part[1:-1])
            if not isinstance(cur, list) or i >= len(cur):
                return _MISSING
            cur = cur[i]
        else:
            if not isinstance(cur, dict) or part not in cur:
                return _MISSING
            cur = cur[part]
    return cur


_MISSING = object()


def _causes(fields: list[tuple[str, str]], body: dict) -> list[tuple[str, str]]:
    """Report lines as the API server words causes: `Required value`, `Invalid value: X: why`."""
    out = []
    for path, text in fields:
        if text.startswith("required field is missing"):
            out.append((path, "Required value" + text[len("required field is missing"):]))
            continue
        if text.startswith(("Required value", "Forbidden", "Unsupported value", "Invalid value", "Duplicate value")):
            out.append((path, text))  # already in the API server's words
            continue
        value = _value_at(body, path) if path else _MISSING
        if value is _MISSING or isinstance(value, (dict, list)):
            out.append((path, text))
        else:
            out.append((path, f"Invalid value: {json.dumps(value)}: {_api_words(text)}"))
    return out


def _api_words(text: str) -> str:
    """The spec layer's bounds in the API server's words (the value is already in the message)."""
    import re

    m = re.fullmatch(r"must be (>=|<=) (\S+), got .*", text)
    if m:
        return f"must be {'greater' if m.group(1) == '>=' else 'less'} than or equal to {m.group(2)}"
    m = re.fullmatch(r"must be between (\S+) and (\S+), got .*", text)
    if m:
        return f"must be between {m.group(1)} and {m.group(2)}, inclusive"
    return text


def event_dict(ev) -> dict:
    """A cluster event as core/v1 Event."""
    from netemu.control.store import rfc3339

    res = registry.by_kind(ev.kind)
    api_version = res.group_version if res else "v1"
    eid = _event_id(ev)
    name = f"{ev.name}.{eid:016x}"
    return {"kind": "Event", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": ev.namespace or "default",
                         "resourceVersion": str(getattr(ev, "rv", 0) or 0),
                         "creationTimestamp": rfc3339(ev.first), "uid": _event_uid(eid)},
            "involvedObject": {"kind": ev.kind, "namespace": ev.namespace or None, "name": ev.name,
                               "apiVersion": api_version, **({"uid": ev.uid} if getattr(ev, "uid", "") else {})},
            "reason": ev.reason, "message": ev.message, "source": {"component": ev.source},
            "firstTimestamp": rfc3339(ev.first), "lastTimestamp": rfc3339(ev.last), "count": ev.count,
            "type": ev.type, "eventTime": None, "reportingComponent": ev.source, "reportingInstance": ""}


def _event_id(ev) -> int:
    import hashlib

    h = hashlib.sha1(f"{ev.kind}/{ev.namespace}/{ev.name}/{ev.reason}/{ev.message}/{ev.first}".encode()).digest()
    return int.from_bytes(h[:8], "big")


def _event_uid(eid: int) -> str:
    import uuid

    return str(uuid.UUID(int=eid << 64 | eid, version=4))
