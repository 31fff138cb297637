"""Deployment and ReplicaSet controllers.

A Deployment owns one ReplicaSet per pod template (named `<deployment>-<pod-template-hash>`);
a ReplicaSet keeps `replicas` active pods named `<replicaset>-<5 random characters>`. Rolling
updates move replicas from old to new ReplicaSets within maxSurge / maxUnavailable.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from netemu.control import naming, workqueue
from netemu.control.pods import controller_of, is_active, is_ready
from netemu.spec.models import (
    Condition,
    Deployment,
    ObjectMeta,
    OwnerReference,
    Pod,
    PodStatus,
    ReplicaSet,
    ReplicaSetSpec,
)
from netemu.wellknown import DEPLOYMENT_REVISION_ANNOTATION as REVISION_ANNOTATION
from netemu.wellknown import POD_TEMPLATE_HASH_LABEL as HASH_LABEL

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster


def template_hash(dep: Deployment) -> str:
    tmpl = dep.spec.template.dump()
    (tmpl.get("metadata", {}).get("labels") or {}).pop(HASH_LABEL, None)
    return naming.pod_template_hash(tmpl)


def owned_by(objs, owner) -> list:
    uid = owner.metadata.uid
    return [o for o in objs if (ref := controller_of(o)) is not None and ref.uid == uid]


def _owner_ref(owner) -> OwnerReference:
    return OwnerReference(api_version=owner.api_version, kind=owner.kind, name=owner.metadata.name,
                          uid=owner.metadata.uid or "", controller=True)


# ---------------------------------------------------------------------------- Deployment
# what queues a Deployment: itself, its ReplicaSets, their pods (status counts them)
DEPLOYMENT_WATCHES = {"Deployment": workqueue.itself, "ReplicaSet": workqueue.controller,
                      "Pod": workqueue.controller_of_controller}


def reconcile_deployments(c: "Cluster", keys=None) -> None:
    """keys: the queued Deployments (None: every one)."""
    for dep in workqueue.objects(c.store, "Deployment", keys):
        _sync_deployment(c, dep)


def _sync_deployment(c: "Cluster", dep: Deployment) -> None:
    ns = dep.metadata.namespace
    rss = c.store.owned("ReplicaSet", dep.metadata.uid)
    h = template_hash(dep)
    new_name = f"{dep.metadata.name}-{h}"
    new_rs = next((rs for rs in rss if rs.metadata.name == new_name), None)
    old = [rs for rs in rss if rs is not new_rs]
    want = dep.spec.replicas if dep.spec.replicas is not None else 1
    if new_rs is None:
        new_rs = _new_replicaset(c, dep, new_name, h, 0)
    _set_revision(c, dep, new_rs, old)
    strategy = (dep.spec.strategy.type if dep.spec.strategy else None) or "RollingUpdate"

    old_pods = sum(rs.spec.replicas for rs in old)
    if strategy == "Recreate":
        for rs in old:
            _scale_rs(c, rs, 0)
        if not any(_active_pods(c, rs) for rs in old):
            _scale_rs(c, new_rs, want)
    elif old_pods == 0:
        _scale_rs(c, new_rs, want)
    else:
        _rolling_update(c, new_rs, old, want, *_rolling_params(dep, want))
    # old, empty ReplicaSets beyond the history limit are deleted
    limit = dep.spec.revision_history_limit if dep.spec.revision_history_limit is not None else 10
    empty_old = [rs for rs in old if rs.spec.replicas == 0 and not _active_pods(c, rs)]
    empty_old.sort(key=lambda r: r.metadata.creation_timestamp or "")
    for rs in empty_old[: max(0, len(empty_old) - limit)]:
        c.store.delete("ReplicaSet", ns, rs.metadata.name)
    _deployment_status(c, dep, new_rs, old, want)


def _rolling_update(c: "Cluster", new_rs: ReplicaSet, old: list[ReplicaSet], want: int,
                    surge: int, unavailable: int) -> None:
    """One step of a rolling update, as the Deployment controller takes it: grow the new
    ReplicaSet within maxSurge, then shrink old ones while minAvailable pods stay ready."""
    total = new_rs.spec.replicas + sum(rs.spec.replicas for rs in old)
    grow = min(want + surge - total, want - new_rs.spec.replicas)
    if grow > 0:
        _scale_rs(c, new_rs, new_rs.spec.replicas + grow)
        total += grow
    min_available = want - unavailable
    new_unavailable = new_rs.spec.replicas - _ready_count(c, new_rs)
    budget = total - min_available - new_unavailable
    oldest_first = sorted(old, key=lambda r: r.metadata.creation_timestamp or "")
    # unhealthy old pods go first: removing them costs no availability
    for rs in oldest_first:
        if budget <= 0:
            return
        unhealthy = rs.spec.replicas - _ready_count(c, rs)
        drop = min(budget, max(0, unhealthy))
        if drop:
            _scale_rs(c, rs, rs.spec.replicas - drop)
            budget -= drop
    ready_total = _ready_count(c, new_rs) + sum(_ready_count(c, rs) for rs in old)
    budget = min(budget, ready_total - min_available)
    for rs in oldest_first:
        if budget <= 0:
            return
        drop = min(budget, rs.spec.replicas)
        if drop:
            _scale_rs(c, rs, rs.spec.replicas - drop)
            budget -= drop


def _rolling_params(dep: Deployment, want: int) -> tuple[int, int]:
    ru = (dep.spec.strategy.rolling_update if dep.spec.strategy else None) or {}

    def resolve(v, default: str, round_up: bool) -> int:
        v = ru.get(v, default)
        if isinstance(v, str) and v.endswith("%"):
            frac = int(v[:-1]) * want / 100
            return math.ceil(frac) if round_up else math.floor(frac)
        return int(v)

    surge = resolve("maxSurge", "25%", True)
    unavailable = resolve("maxUnavailable", "25%", False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _new_replicaset(c: "Cluster", dep: Deployment, name: str, h: str, replicas: int) -> ReplicaSet:
    tmpl = dep.spec.template.model_copy(deep=True)
    tmpl.metadata.labels = {**(tmpl.metadata.labels or {}), HASH_LABEL: h}
    sel = dep.spec.selector.model_copy(deep=True)
    sel.match_labels = {**(sel.match_labels or {}), HASH_LABEL: h}
    rs = ReplicaSet(
        metadata=ObjectMeta(name=name, namespace=dep.metadata.namespace, labels=dict(tmpl.metadata.labels),
                            owner_references=[_owner_ref(dep)],
                            annotations={REVISION_ANNOTATION: str(_next_revision(c, dep))}),
        spec=ReplicaSetSpec(replicas=replicas, selector=sel, template=tmpl),
    )
    c.store.create(rs)
    c.event(dep, "ScalingReplicaSet", f"Scaled up replica set {name} to {replicas}")
    return rs


def _set_revision(c: "Cluster", dep: Deployment, new_rs: ReplicaSet, old: list[ReplicaSet]) -> None:
    """The current ReplicaSet carries the highest revision (a rollback to an old template makes its
    ReplicaSet the newest revision again, as `kubectl rollout undo` expects), and the Deployment shows
    it in the same annotation, as the Deployment controller keeps them."""
    key = REVISION_ANNOTATION
    rev = int((new_rs.metadata.annotations or {}).get(key, "0"))
    top = max((int((rs.metadata.annotations or {}).get(key, "0")) for rs in old), default=0)
    if rev <= top:
        rev = top + 1
        new_rs.metadata.annotations = {**(new_rs.metadata.annotations or {}), key: str(rev)}
        c.store.update(new_rs)
    if (dep.metadata.annotations or {}).get(key) != str(rev):
        dep.metadata.annotations = {**(dep.metadata.annotations or {}), key: str(rev)}
        c.store.update(dep)


def _next_revision(c: "Cluster", dep: Deployment) -> int:
    revs = [int((rs.metadata.annotations or {}).get(REVISION_ANNOTATION, "0"))
            for rs in c.store.owned("ReplicaSet", dep.metadata.uid)]
    return max(revs, default=0) + 1


def _scale_rs(c: "Cluster", rs: ReplicaSet, n: int) -> None:
    if rs.spec.replicas != n:
        direction = "up" if n > rs.spec.replicas else "down"
        rs.spec.replicas = n
        c.store.update(rs)
        owner = controller_of(rs)
        if owner is not None:
            dep = c.store.find("Deployment", rs.metadata.namespace, owner.name)
            if dep is not None:
                c.event(dep, "ScalingReplicaSet", f"Scaled {direction} replica set {rs.metadata.name} to {n}")


def _active_pods(c: "Cluster", rs: ReplicaSet) -> list[Pod]:
    return [p for p in c.store.owned("Pod", rs.metadata.uid) if is_active(p)]


def _ready_count(c: "Cluster", rs: ReplicaSet) -> int:
    return sum(1 for p in _active_pods(c, rs) if is_ready(p))


def _deployment_status(c: "Cluster", dep: Deployment, new_rs: ReplicaSet, old: list[ReplicaSet], want: int) -> None:
    new_pods = _active_pods(c, new_rs)
    pods = new_pods + [p for rs in old for p in _active_pods(c, rs)]
    ready = sum(1 for p in pods if is_ready(p))
    st = dep.status
    now = c.now_str()
    available = ready >= want - _rolling_params(dep, want)[1] if want else True
    complete = len(new_pods) == want and sum(1 for p in new_pods if is_ready(p)) == want and len(pods) == want
    conds = [
        Condition(type="Available", status="True" if available else "False",
                  reason="MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                  message="Deployment has minimum availability." if available
                  else "Deployment does not have minimum availability."),
        Condition(type="Progressing", status="True",
                  reason="NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                  message=f'ReplicaSet "{new_rs.metadata.name}" has successfully progressed.' if complete
                  else f'ReplicaSet "{new_rs.metadata.name}" is progressing.'),
    ]
    for cond in conds:
        prev = next((x for x in st.conditions or [] if x.type == cond.type), None)
        cond.last_transition_time = prev.last_transition_time if prev and prev.status == cond.status else now
    new = dict(replicas=len(pods), updated_replicas=len(new_pods), ready_replicas=ready,
               available_replicas=ready, unavailable_replicas=max(0, want - ready) or None,
               observed_generation=dep.metadata.generation)
    changed = any(getattr(st, k) != v for k, v in new.items()) or [x.dump() for x in st.conditions or []] != [
        x.dump() for x in conds]
    if changed:
        for k, v in new.items():
            setattr(st, k, v)
        st.conditions = conds
        c.store.update(dep)


# ---------------------------------------------------------------------------- ReplicaSet
REPLICASET_WATCHES = {"ReplicaSet": workqueue.itself, "Pod": workqueue.controller}


def reconcile_replicasets(c: "Cluster", keys=None) -> None:
    for rs in workqueue.objects(c.store, "ReplicaSet", keys):
        _sync_replicaset(c, rs)


def _sync_replicaset(c: "Cluster", rs: ReplicaSet) -> None:
    ns = rs.metadata.namespace
    pods = c.store.owned("Pod", rs.metadata.uid)
    active = [p for p in pods if is_active(p)]
    diff = len(active) - rs.spec.replicas
    if diff < 0:
        taken = naming.Taken(lambda name: c.store.find("Pod", ns, name) is not None)
        for _ in range(-diff):
            pod = _pod_from_template(c, rs, taken)
            taken.add(pod.metadata.name)
            c.store.create(pod)
            c.event(rs, "SuccessfulCreate", f"Created pod: {pod.metadata.name}")
    elif diff > 0:
        for pod in sorted(active, key=_deletion_rank)[:diff]:
            c.delete_pod(pod)
            c.event(rs, "SuccessfulDelete", f"Deleted pod: {pod.metadata.name}")
    ready = sum(1 for p in active if is_ready(p))
    st = rs.status
    if (st.replicas, st.ready_replicas, st.available_replicas) != (len(active), ready, ready):
        st.replicas, st.ready_replicas, st.available_replicas = len(active), ready, ready
        st.observed_generation = rs.metadata.generation
        c.store.update(rs)


def _deletion_rank(pod: Pod):
    """Which pods a ReplicaSet removes first when scaling down (as ActivePodsWithRanks):
    unscheduled, then pending, then not ready, then the youngest."""
    scheduled = pod.spec.node_name is not None
    running = pod.status.phase == "Running"
    ts = pod.metadata.creation_timestamp or ""
    return (scheduled, running, is_ready(pod), _neg(ts), pod.metadata.name)


def _neg(ts: str) -> tuple:
    return tuple(-ord(ch) for ch in ts)


def _pod_from_template(c: "Cluster", rs: ReplicaSet, taken: set[str]) -> Pod:
    tmpl = rs.spec.template
    name = naming.generate_name(rs.metadata.name + "-", c.store.rng, taken)
    meta = ObjectMeta(
        name=name,
        generate_name=rs.metadata.name + "-",
        namespace=rs.metadata.namespace,
        labels=dict(tmpl.metadata.labels or {}),
        annotations=dict(tmpl.metadata.annotations) if tmpl.metadata.annotations else None,
        owner_references=[_owner_ref(rs)],
    )
    pod = Pod(metadata=meta, spec=tmpl.spec.model_copy(deep=True), status=PodStatus(phase="Pending"))
    prepare_pod(c, pod)
    return pod


def prepare_pod(c: "Cluster", pod: Pod) -> None:
    """What the API server does to a pod a controller creates: defaults (requests from limits, the QoS
    class) and admission (priority, default tolerations)."""
    from netemu.control.admission import Forbidden, admit_pod
    from netemu.spec.podresources import default_requests, qos_class

    default_requests([*pod.spec.containers, *(pod.spec.init_containers or [])])
    pod.status.qos_class = qos_class(pod.spec)
    try:
        admit_pod(c, pod)
    except Forbidden:
        pod.spec.priority = pod.spec.priority or 0  # the class went away since the template was admitted
