"""Verbs that change a running lab: apply, delete, scale, expose, cordon, drain (through the lab's
Kubernetes API, so that every request meets the API's validation), and the lab's own rollout, node
and speaker verbs."""
from __future__ import annotations

import copy
import re
import sys
import time
from typing import Optional

from netemu.cli.client import ApiCallError, CliError, Client, pick_lab
from netemu.cli.kinds import (MERGE_PATCH, by_kind, find_object, get_object, learn_crds, list_objects,
                              namespace_for, path, split_ref)
from netemu.cli.output import Progress, warn
from netemu.wellknown import MIRROR_ANNOTATION


def _client(args) -> Client:
    return Client(pick_lab(args.lab))


def _load_for_lab(client: Client, files: list[str], namespace: Optional[str] = None) -> tuple[list[dict], list[str]]:
    """The files' objects through netemu's spec loader (re-indents flattened manifests, validates),
    as dicts; objects without a namespace go to `namespace` (-n). Returns (objects, loader warnings)."""
    from netemu.spec.errors import SpecError
    from netemu.spec.load import load_objects
    from netemu.spec.models import Lab

    lab = Lab.model_validate(client.call("lab"))
    learn_crds(client)  # the lab's CustomResourceDefinitions: their objects load as stored kinds
    try:
        objs, warnings = load_objects(files, lab, namespace=namespace)
    except SpecError as e:
        raise CliError(str(e)) from None
    for w in warnings:
        warn(w)
    return [o.dump() for o in objs], warnings


def _version(obj: dict) -> Optional[str]:
    return (obj.get("apiVersion") or "").rpartition("/")[2] or None


def _target(obj: dict):
    res = by_kind(obj.get("kind") or "", obj.get("apiVersion"))
    meta = obj.get("metadata") or {}
    return res, (meta.get("namespace") or "default") if res.namespaced else None, meta.get("name") or ""


# ------------------------------------------------------------------------------ apply
def cmd_apply(args) -> int:
    client = _client(args)
    objs, loader_warnings = _load_for_lab(client, args.filename, args.namespace)
    rc = 0
    for obj in sorted(objs, key=lambda o: 0 if o.get("kind") == "Namespace" else 1):  # namespaces first
        try:
            print(apply_one(client, obj, loader_warnings), flush=True)
        except CliError as e:
            print(str(e) if isinstance(e, ApiCallError) else f"error: {e}", file=sys.stderr)
            rc = 1
    return rc


def apply_one(client: Client, obj: dict, known_warnings: list[str] = ()) -> str:
    """Create the object, or replace the one there (keeping its status): kubectl's
    `<resource>/<name> created|configured|unchanged`."""
    res, ns, name = _target(obj)
    version = _version(obj)
    warnings: list[str] = []
    try:
        try:
            client.rest("POST", path(res, ns, version=version), obj, warnings=warnings)
            return f"{res.resource_name()}/{name} created"
        except ApiCallError as e:
            if e.status != 409 or e.reason != "AlreadyExists":
                raise
        for attempt in range(5):
            current = get_object(client, res, ns, name)
            body = _replacement(obj, current)
            try:
                stored = client.rest("PUT", path(res, ns, name, version=version), body, warnings=warnings)
            except ApiCallError as e:
                if e.status == 409 and e.reason == "Conflict" and attempt < 4:  # changed meanwhile: again
                    continue
                raise
            return f"{res.resource_name()}/{name} {'unchanged' if _same(current, stored) else 'configured'}"
        raise CliError(f"{res.resource_name()}/{name}: the object kept changing")  # not reached
    finally:
        for w in warnings:  # what the spec loader said already is not said twice
            if not _already_said(w, known_warnings):
                warn(w)


def _already_said(warning: str, known: list[str]) -> bool:
    m = re.match(r"unknown field [\'\"](.+?)[\'\"]", warning)
    if m:
        return any(f"{m.group(1)}: unknown field" in k for k in known)
    return any(k.endswith(warning) for k in known)


def _replacement(obj: dict, current: dict) -> dict:
    """The object to PUT: the file's, at the stored resourceVersion, with the stored status. Labels and
    annotations that only the stored object has are kept (controllers' annotations, as kubectl's apply
    keeps what it did not set); so are its owners and finalizers."""
    body = copy.deepcopy(obj)
    meta, cur = body.setdefault("metadata", {}), current.get("metadata") or {}
    meta["resourceVersion"] = cur.get("resourceVersion")
    for key in ("labels", "annotations"):
        merged = {**(cur.get(key) or {}), **(meta.get(key) or {})}
        if merged:
            meta[key] = merged
    for key in ("ownerReferences", "finalizers"):
        if key not in meta and cur.get(key):
            meta[key] = cur[key]
    spec, cur_spec = body.get("spec"), current.get("spec")
    if isinstance(spec, dict) and isinstance(cur_spec, dict):
        for key in ASSIGNED.get(body.get("kind"), ()):  # what the cluster filled in, the file does not say
            if key not in spec and key in cur_spec:
                spec[key] = cur_spec[key]
    if "status" in current:
        body["status"] = current["status"]
    else:
        body.pop("status", None)
    return body


# spec fields the cluster assigns after creation (a scheduler's binding, an allocator's address): a
# manifest that leaves them out does not mean to take them away
ASSIGNED = {
    "Pod": ("nodeName",),
    "Service": ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "healthCheckNodePort"),
    "PersistentVolumeClaim": ("volumeName",),
}


def _same(before: dict, after: dict) -> bool:
    """The write changed nothing: the resourceVersion did not move, or nothing but it did."""
    rv = (before.get("metadata") or {}).get("resourceVersion")
    if rv and rv == (after.get("metadata") or {}).get("resourceVersion"):
        return True

    def strip(o: dict) -> dict:
        o = {k: v for k, v in o.items() if k != "status"}
        o["metadata"] = {k: v for k, v in (o.get("metadata") or {}).items()
                         if k not in ("resourceVersion", "managedFields")}
        return o
    return strip(before) == strip(after)


# ------------------------------------------------------------------------------ delete
def cmd_delete(args) -> int:
    client = _client(args)
    targets = []
    if args.filename:
        objs, _ = _load_for_lab(client, args.filename, args.namespace)
        targets = [_target(o) for o in objs]
    else:
        if not args.resource:
            raise CliError("delete needs a resource and name, or -f FILE")
        if "/" in args.resource:
            refs = [split_ref(r, None, client) for r in [args.resource, *(args.names or [])]]
        else:
            refs = [split_ref(args.resource, n, client) for n in args.names or []]
        if not refs:
            raise CliError(f"delete {args.resource}: name the objects to delete")
        targets = [(res, namespace_for(res, args), name) for res, name in refs]
    rc = 0
    query = {"gracePeriodSeconds": args.grace_period} if args.grace_period is not None else None
    for res, ns, name in targets:
        try:
            client.rest("DELETE", path(res, ns, name, query=query))
            print(f'{res.resource_name()} "{name}" deleted', flush=True)
        except ApiCallError as e:
            print(str(e), file=sys.stderr)
            rc = 1
    return rc


# ------------------------------------------------------------------------------ scale
def cmd_scale(args) -> int:
    client = _client(args)
    res, name = split_ref(args.resource, args.name, client)
    if not name:
        raise CliError("scale needs a name: netemu scale deployment NAME --replicas=N")
    if "scale" not in res.subresources:
        raise CliError(f"cannot scale {res.plural}: they have no scale subresource")
    client.rest("PATCH", path(res, namespace_for(res, args), name, "scale"), {"spec": {"replicas": args.replicas}},
                content_type=MERGE_PATCH)
    print(f"{res.resource_name()}/{name} scaled")
    return 0


# ------------------------------------------------------------------------------ rollout
def cmd_rollout(args) -> int:
    if args.action != "status":
        raise CliError(f"rollout {args.action}: only `rollout status` is supported")
    client = Client(pick_lab(args.lab), timeout=None)
    res, name = split_ref(args.resource, args.name)
    if res.kind != "Deployment":
        raise CliError("rollout status works on deployments")
    last = [None]

    def show(msg: str, final: bool) -> None:
        if msg != last[0]:
            print(msg, flush=True)
            last[0] = msg

    client.wait(show, **{"for": "rollout"}, name=name, namespace=args.namespace or "default", timeout=args.timeout)
    return 0


# ------------------------------------------------------------------------------ cordon, drain
def _cordon(client: Client, node: str, value: bool) -> str:
    res = by_kind("Node")
    obj = get_object(client, res, None, node)
    verb = "cordoned" if value else "uncordoned"
    if bool((obj.get("spec") or {}).get("unschedulable")) == value:
        return f"node/{node} already {verb}"
    client.rest("PATCH", path(res, None, node), {"spec": {"unschedulable": True if value else None}},
                content_type=MERGE_PATCH)
    return f"node/{node} {verb}"


def cmd_cordon(args, value: bool) -> int:
    print(_cordon(_client(args), args.node, value))
    return 0


def _controller(pod: dict) -> Optional[dict]:
    return next((r for r in (pod.get("metadata") or {}).get("ownerReferences") or [] if r.get("controller")), None)


def drain_plan(pods: list[dict], ignore_daemonsets: bool, delete_emptydir_data: bool, force: bool
               ) -> tuple[list[dict], list[str], list[str]]:
    """kubectl drain's filters: (pods to evict, warnings, errors). Mirror pods stay (the kubelet owns
    them); DaemonSet pods stay with --ignore-daemonsets and stop the drain without it; pods without a
    controller need --force, pods with emptyDir volumes --delete-emptydir-data. Finished pods go."""
    evict, skipped_ds, unmanaged, local = [], [], [], []
    errors: list[str] = []
    blocked_ds, blocked_unmanaged, blocked_local = [], [], []
    for pod in pods:
        meta = pod.get("metadata") or {}
        ref = f"{meta.get('namespace', 'default')}/{meta.get('name')}"
        if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
            continue
        finished = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        ctrl = _controller(pod)
        if ctrl is not None and ctrl.get("kind") == "DaemonSet" and not finished:
            (skipped_ds if ignore_daemonsets else blocked_ds).append(ref)
            continue
        if ctrl is None and not finished:
            (unmanaged if force else blocked_unmanaged).append(ref)
        if any("emptyDir" in v for v in (pod.get("spec") or {}).get("volumes") or []) and not finished:
            (local if delete_emptydir_data else blocked_local).append(ref)
        evict.append(pod)
    if blocked_ds:
        errors.append("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): "
                      + ", ".join(blocked_ds))
    if blocked_unmanaged:
        errors.append("cannot delete Pods that declare no controller (use --force to override): "
                      + ", ".join(blocked_unmanaged))
    if blocked_local:
        errors.append("cannot delete Pods with local storage (use --delete-emptydir-data to override): "
                      + ", ".join(blocked_local))
    warnings = []
    if skipped_ds:
        warnings.append("ignoring DaemonSet-managed Pods: " + ", ".join(skipped_ds))
    if unmanaged:
        warnings.append("deleting Pods that declare no controller: " + ", ".join(unmanaged))
    if local:
        warnings.append("deleting Pods with local storage: " + ", ".join(local))
    return evict, warnings, errors


def cmd_drain(args) -> int:
    client = _client(args)
    node = args.node
    print(_cordon(client, node, True), flush=True)
    pod_res = by_kind("Pod")
    pods = list_objects(client, pod_res, None, fields=f"spec.nodeName={node}")
    evict, warnings, errors = drain_plan(pods, args.ignore_daemonsets, args.delete_emptydir_data, args.force)
    if errors:
        raise CliError(f'unable to drain node "{node}" due to error: ' + "; ".join(errors))
    for w in warnings:
        warn(w)
    waiting: dict[tuple[str, str], str] = {}
    for pod in evict:
        meta = pod["metadata"]
        ns, name = meta.get("namespace") or "default", meta["name"]
        print(f"evicting pod {ns}/{name}", file=sys.stderr, flush=True)
        eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}
        if args.grace_period is not None and args.grace_period >= 0:
            eviction["deleteOptions"] = {"gracePeriodSeconds": args.grace_period}
        try:
            client.rest("POST", path(pod_res, ns, name, "eviction"), eviction)
        except ApiCallError as e:
            if e.status != 404:  # gone already: nothing to evict
                raise CliError(f'unable to drain node "{node}": error when evicting pods/"{name}" -n "{ns}": '
                               f"{e.api_message}") from None
        waiting[(ns, name)] = meta.get("uid") or ""
    deadline = time.time() + args.timeout
    while waiting:
        for (ns, name), uid in list(waiting.items()):
            now = find_object(client, pod_res, ns, name)
            if now is None or (uid and (now.get("metadata") or {}).get("uid") != uid):
                print(f"pod/{name} evicted", flush=True)
                del waiting[(ns, name)]
        if not waiting:
            break
        if time.time() >= deadline:
            left = ", ".join(f"{ns}/{name}" for ns, name in waiting)
            raise CliError(f'unable to drain node "{node}": timed out after {args.timeout:g}s waiting for the pods '
                           f"to go: {left}")
        time.sleep(0.2)
    if not args.no_wait:  # the lab's own wait: the evicted pods' replacements Ready elsewhere
        progress = Progress()
        Client(client.lab, timeout=None).wait(lambda m, f: progress.status(m),
                                              timeout=max(1.0, deadline - time.time()))
        progress.done()
    print(f"node/{node} drained")
    return 0


# ------------------------------------------------------------------------------ expose
EXPOSABLE = ("Deployment", "ReplicaSet", "Pod", "Service")


def cmd_expose(args) -> int:
    from netemu.control.expose import ExposeError, expose, selector_map

    client = _client(args)
    res, name = split_ref(args.resource, args.name, client)
    if not name:
        raise CliError("expose needs a name: netemu expose deployment NAME --port=N")
    if res.kind not in EXPOSABLE:
        raise CliError(f"cannot expose a {res.kind}: netemu exposes deployments, replicasets, pods and services")
    ns = namespace_for(res, args)
    target = get_object(client, res, ns, name)
    target.setdefault("kind", res.kind)
    try:
        svc = expose(target, name=args.service_name, type_=args.type or "ClusterIP", port=args.port,
                     target_port=args.target_port, protocol=args.protocol, external_ip=args.external_ip,
                     session_affinity=args.session_affinity, cluster_ip=args.cluster_ip,
                     load_balancer_ip=args.load_balancer_ip, selector=selector_map(args.selector))
    except ExposeError as e:
        raise CliError(str(e)) from None
    created = client.rest("POST", path(by_kind("Service"), ns), svc)
    print(f"service/{created['metadata']['name']} exposed")
    return 0


# ------------------------------------------------------------------------------ the lab's own verbs
def cmd_node(args) -> int:
    client = _client(args)
    print(client.call("node", name=args.node, up=args.action == "up"))
    return 0


def cmd_speaker(args) -> int:
    print(_client(args).call("speaker", name=args.node, alive=args.action == "start"))
    return 0
