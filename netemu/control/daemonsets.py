"""The DaemonSet controller, as kube-controller-manager runs it.

A DaemonSet wants one pod on every node its pod may run on (NodeShouldRunDaemonPod: nodeName,
nodeSelector and required node affinity, taints its pods do not tolerate). Its pods carry the
tolerations the controller adds (not-ready and unreachable NoExecute, the pressure conditions,
unschedulable: a cordoned node keeps and gets its daemon pods, as on a real cluster) and a required
node affinity on their node's name; the default scheduler binds them, so a node without room leaves
its pod Pending. A node that starts to carry an untolerated NoSchedule taint gets no new pod but
keeps the one it has; an untolerated NoExecute taint removes it. Rolling updates replace pods node by
node within maxUnavailable (or surge within maxSurge), templates are kept as ControllerRevisions
(`kubectl rollout history/undo daemonset`), status is what `kubectl get ds` and `rollout status` read.

The lab's own kube-proxy DaemonSet (annotated netemu.dev/run-by: control-process) is kubeadm.py's.
A DaemonSet of host-network pods runs only for the add-ons whose work the lab does itself (MetalLB's
speaker): its pods stand for the lab's own component, as kube-proxy's do.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from netemu.control import naming
from netemu.control.kubeadm import ANNOTATION, is_control_process_pod
from netemu.control.pods import is_ready, is_terminating
from netemu.control.scheduler import required_node_affinity, untolerated
from netemu.control.store import parse_rfc3339
from netemu.spec.models import (
    DaemonSet, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectMeta, OwnerReference,
    Pod, PodStatus, Toleration,
)
from netemu.wellknown import CONTROLLER_REVISION_HASH_LABEL as REVISION_LABEL
from netemu.wellknown import NOT_READY_TAINT, UNREACHABLE_TAINT, UNSCHEDULABLE_TAINT

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

GENERATION_LABEL = "pod-template-generation"
DAEMON_TOLERATIONS = (  # util.AddOrUpdateDaemonPodTolerations
    (NOT_READY_TAINT, "NoExecute"),
    (UNREACHABLE_TAINT, "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    (UNSCHEDULABLE_TAINT, "NoSchedule"),
)
NETWORK_UNAVAILABLE = ("node.kubernetes.io/network-unavailable", "NoSchedule")  # host-network pods only


def is_lab_owned(ds: DaemonSet) -> bool:
    """kube-system/kube-proxy: kubeadm.py makes its pods (the control process is their program); a lab
    persisted before the annotation was added is recognised by the name."""
    return (ds.metadata.annotations or {}).get(ANNOTATION) == "control-process" or (
        ds.metadata.namespace == "kube-system" and ds.metadata.name == "kube-proxy")


def daemon_tolerations(spec) -> list[Toleration]:
    tols = list(spec.tolerations or [])
    wanted = list(DAEMON_TOLERATIONS) + ([NETWORK_UNAVAILABLE] if spec.host_network else [])
    for key, effect in wanted:
        tols = [t for t in tols if not (t.key == key and t.effect == effect)]
        tols.append(Toleration(key=key, operator="Exists", effect=effect))
    return tols


def _template_pod(ds: DaemonSet) -> Pod:
    tmpl = ds.spec.template
    pod = Pod(metadata=ObjectMeta(labels=dict(tmpl.metadata.labels or {})), spec=tmpl.spec.model_copy(deep=True))
    pod.spec.tolerations = daemon_tolerations(pod.spec)
    return pod


def should_run(ds: DaemonSet, template_pod: Pod, node) -> tuple[bool, bool]:
    """NodeShouldRunDaemonPod: (should run a pod there, may keep running the one it has)."""
    name = ds.spec.template.spec.node_name
    if name and name != node.metadata.name:
        return False, False
    if not required_node_affinity(template_pod, node):
        return False, False
    taints = node.spec.taints or []
    if untolerated(taints, template_pod.spec.tolerations) is not None:
        return False, untolerated(taints, template_pod.spec.tolerations, ("NoExecute",)) is None
    return True, True


def template_hash(ds: DaemonSet) -> str:
    return naming.pod_template_hash(ds.spec.template.dump(), ds.status.collision_count or 0)


def _int_or_percent(v, total: int, round_up: bool) -> int:
    if isinstance(v, str) and v.endswith("%"):
        frac = int(v[:-1]) * total / 100
        return math.ceil(frac) if round_up else math.floor(frac)
    return int(v or 0)


def _available(pod: Pod, min_ready: int, now: float) -> bool:
    if not is_ready(pod):
        return False
    if not min_ready:
        return True
    cond = next((x for x in pod.status.conditions or [] if x.type == "Ready"), None)
    since = parse_rfc3339(cond.last_transition_time) if cond else None
    return since is not None and now - since >= min_ready


def reconcile(c: "Cluster") -> None:
    for ds in c.store.list("DaemonSet"):
        if is_lab_owned(ds) or ds.spec.template is None or ds.spec.selector is None:
            continue
        if ds.metadata.deletion_timestamp:
            continue
        sync(c, ds)


def _host_network_addon(ds: DaemonSet) -> Optional[bool]:
    """None: not host-network; True: an add-on the lab does itself (its pods stand for the lab's own
    component); False: host-network pods the lab cannot run."""
    spec = ds.spec.template.spec
    if not spec.host_network:
        return None
    from netemu.images import ADDONS, parse_image

    return all(parse_image(ct.image).repository in ADDONS for ct in spec.containers)


def sync(c: "Cluster", ds: DaemonSet) -> None:
    now = c.clock()
    ns = ds.metadata.namespace
    h = template_hash(ds)
    _revisions(c, ds, h)
    pods = [p for p in c.store.owned("Pod", ds.metadata.uid)]
    by_node: dict[str, list[Pod]] = {}
    for p in pods:
        node = _pod_node(p)
        if node and not is_terminating(p):
            by_node.setdefault(node, []).append(p)
    tp = _template_pod(ds)
    host = _host_network_addon(ds)
    desired: list[str] = []
    to_create: list[str] = []
    to_delete: list[Pod] = []
    nodes = sorted(c.store.list("Node"), key=lambda n: n.metadata.name)
    for node in nodes:
        name = node.metadata.name
        run, keep = should_run(ds, tp, node)
        here = by_node.get(name, [])
        if run:
            desired.append(name)
        if run and not here:
            to_create.append(name)
        elif (run or keep) and here:
            failed = [p for p in here if p.status.phase == "Failed"]
            for p in failed:
                c.event(ds, "FailedDaemonPod", f"Found failed daemon pod {ns}/{p.metadata.name} on node {name}, "
                        "will try to kill it", type_="Warning")
                to_delete.append(p)
            alive = sorted((p for p in here if p not in failed), key=lambda p: (p.metadata.creation_timestamp or "",
                                                                                   p.metadata.name))
            to_delete += alive[1:]  # more than one: the oldest stays
        elif not keep and here:
            to_delete += here
    if host is False:
        to_create = []
        _warn_once(c, ds, "hostNetwork pods are not run here: every pod has a network namespace of its own "
                          "(the lab runs host-network DaemonSets only for the add-ons whose work it does itself)")
    if (ds.spec.update_strategy and ds.spec.update_strategy.type) != "OnDelete":
        to_delete += _rolling_update(ds, by_node, desired, h, now, to_create)
    for p in to_delete:
        if c.store.find("Pod", ns, p.metadata.name) is p and not is_terminating(p):
            c.delete_pod(p)
            c.event(ds, "SuccessfulDelete", f"Deleted pod: {p.metadata.name}")
    taken = None
    for name in to_create:
        if taken is None:
            taken = {p.metadata.name for p in c.store.list("Pod", ns)}
        pod = _new_pod(c, ds, name, h, taken, host is True)
        taken.add(pod.metadata.name)
        c.store.create(pod)
        c.event(ds, "SuccessfulCreate", f"Created pod: {pod.metadata.name}")
    if host is True:
        from netemu.control.kubeadm import mark_running

        mark_running(c, [p for p in c.store.owned("Pod", ds.metadata.uid) if is_control_process_pod(p)])
    _status(c, ds, desired, h, now)


def _warn_once(c: "Cluster", ds: DaemonSet, message: str) -> None:
    told = c.__dict__.setdefault("_daemonset_warned", set())
    key = (ds.metadata.uid, ds.metadata.generation)
    if key not in told:
        told.add(key)
        c.event(ds, "FailedCreate", message, type_="Warning")


def _pod_node(pod: Pod) -> Optional[str]:
    """The node a daemon pod is for: where it is bound, else its required node-name affinity."""
    if pod.spec.node_name:
        return pod.spec.node_name
    na = pod.spec.affinity.node_affinity if pod.spec.affinity else None
    req = na.required_during_scheduling_ignored_during_execution if na else None
    for term in (req.node_selector_terms if req else None) or []:
        for f in term.match_fields or []:
            if f.key == "metadata.name" and f.values:
                return f.values[0]
    return None


def _rolling_update(ds: DaemonSet, by_node: dict[str, list[Pod]], desired: list[str], h: str, now: float,
                    to_create: list[str]) -> list[Pod]:
    """One step of a rolling update (rollingUpdate in the controller): old pods to delete now."""
    ru = ds.spec.update_strategy.rolling_update if ds.spec.update_strategy else None
    n = len(desired)
    surge = _int_or_percent(ru.max_surge if ru else 0, n, True)
    unavailable_max = _int_or_percent(ru.max_unavailable if ru else 1, n, True)
    if surge == 0 and unavailable_max == 0:
        unavailable_max = 1
    min_ready = ds.spec.min_ready_seconds or 0
    out: list[Pod] = []
    if surge == 0:
        unavailable = 0
        replace, candidates = [], []
        for name in desired:
            pods = by_node.get(name, [])
            new = [p for p in pods if (p.metadata.labels or {}).get(REVISION_LABEL) == h]
            old = [p for p in pods if p not in new]
            if len(pods) > 1 or not pods:
                unavailable += 1
                continue
            if new:
                if not _available(new[0], min_ready, now):
                    unavailable += 1
                continue
            if not _available(old[0], min_ready, now):
                replace.append(old[0])
            elif unavailable < unavailable_max:
                candidates.append(old[0])
        room = max(0, unavailable_max - unavailable)
        return replace + candidates[:room]
    # maxSurge: a new pod next to the old one, the old one goes once the new is available
    surged = 0
    for name in desired:
        pods = by_node.get(name, [])
        new = [p for p in pods if (p.metadata.labels or {}).get(REVISION_LABEL) == h]
        old = [p for p in pods if p not in new]
        if new and old:
            surged += 1
            if _available(new[0], min_ready, now):
                out += old
    for name in desired:
        pods = by_node.get(name, [])
        if pods and all((p.metadata.labels or {}).get(REVISION_LABEL) != h for p in pods) and surged < surge:
            to_create.append(name)
            surged += 1
    return out


def _new_pod(c: "Cluster", ds: DaemonSet, node: str, h: str, taken: set, control_process: bool) -> Pod:
    from netemu.control.workloads import prepare_pod

    tmpl = ds.spec.template
    prefix = f"{ds.metadata.name}-"
    labels = {**(tmpl.metadata.labels or {}), REVISION_LABEL: h, GENERATION_LABEL: str(ds.metadata.generation or 1)}
    annotations = dict(tmpl.metadata.annotations or {})
    if control_process:
        annotations[ANNOTATION] = "control-process"
    spec = tmpl.spec.model_copy(deep=True)
    spec.tolerations = daemon_tolerations(spec)
    term = NodeSelectorTerm(match_fields=[NodeSelectorRequirement(key="metadata.name", operator="In", values=[node])])
    from netemu.spec.models import Affinity

    aff = spec.affinity = spec.affinity or Affinity()
    na = aff.node_affinity = aff.node_affinity or NodeAffinity()
    na.required_during_scheduling_ignored_during_execution = NodeSelector(node_selector_terms=[term])
    if control_process:
        spec.node_name = node  # the lab's component: bound where it stands, as kube-proxy's pods
    pod = Pod(metadata=ObjectMeta(name=naming.generate_name(prefix, c.store.rng, taken), generate_name=prefix,
                                  namespace=ds.metadata.namespace, labels=labels, annotations=annotations or None,
                                  owner_references=[OwnerReference(api_version="apps/v1", kind="DaemonSet",
                                                                   name=ds.metadata.name, uid=ds.metadata.uid or "",
                                                                   controller=True)]),
              spec=spec, status=PodStatus(phase="Pending"))
    prepare_pod(c, pod)
    return pod


def _revisions(c: "Cluster", ds: DaemonSet, h: str) -> None:
    """ControllerRevisions: one per template the DaemonSet had, the current one with the highest
    revision (a rollback to an old template makes its revision the newest again)."""
    from netemu.spec.models import StoredObject

    ns = ds.metadata.namespace
    revs = c.store.owned("ControllerRevision", ds.metadata.uid)
    name = f"{ds.metadata.name}-{h}"
    top = max((int((r.model_extra or {}).get("revision") or 0) for r in revs), default=0)
    cur = next((r for r in revs if r.metadata.name == name), None)
    if cur is None:
        tmpl = ds.spec.template.dump()
        tmpl["$patch"] = "replace"
        cur = StoredObject.model_validate({
            "apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": name, "namespace": ns,
                         "labels": {**(ds.spec.template.metadata.labels or {}), REVISION_LABEL: h},
                         "annotations": {"deprecated.daemonset.template.generation": str(ds.metadata.generation or 1)},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": ds.metadata.name,
                                              "uid": ds.metadata.uid, "controller": True,
                                              "blockOwnerDeletion": True}]},
            "data": {"spec": {"template": tmpl}}, "revision": top + 1})
        c.store.create(cur)
    elif int((cur.model_extra or {}).get("revision") or 0) < top:
        cur.__pydantic_extra__["revision"] = top + 1
        c.store.update(cur)
    limit = ds.spec.revision_history_limit if ds.spec.revision_history_limit is not None else 10
    in_use = {(p.metadata.labels or {}).get(REVISION_LABEL) for p in c.store.owned("Pod", ds.metadata.uid)}
    old = [r for r in revs if r.metadata.name != name and r.metadata.name[len(ds.metadata.name) + 1:] not in in_use]
    old.sort(key=lambda r: int((r.model_extra or {}).get("revision") or 0))
    for r in old[: max(0, len(old) - limit)]:
        c.store.delete("ControllerRevision", ns, r.metadata.name)


def _status(c: "Cluster", ds: DaemonSet, desired: list[str], h: str, now: float) -> None:
    want = set(desired)
    current = misscheduled = ready = available = updated = 0
    seen: set[str] = set()
    for p in c.store.owned("Pod", ds.metadata.uid):
        node = p.spec.node_name
        if not node or is_terminating(p) or node in seen:
            continue
        seen.add(node)
        if node not in want:
            misscheduled += 1
            continue
        current += 1
        if is_ready(p):
            ready += 1
            if _available(p, ds.spec.min_ready_seconds or 0, now):
                available += 1
        if (p.metadata.labels or {}).get(REVISION_LABEL) == h:
            updated += 1
    st = ds.status
    new = dict(desired_number_scheduled=len(want), current_number_scheduled=current,
               number_misscheduled=misscheduled, number_ready=ready, number_available=available or None,
               number_unavailable=(len(want) - available) or None, updated_number_scheduled=updated or None,
               observed_generation=ds.metadata.generation)
    if any(getattr(st, k) != v for k, v in new.items()):
        for k, v in new.items():
            setattr(st, k, v)
        c.store.update(ds)
    if ds.spec.min_ready_seconds and ready > available:
        c.wake_at(now + 1)
