"""The API server's mutating admission for what scheduling reads, applied to every pod however it is
made (a lab file, the API, a controller):

- Priority: spec.priority (and preemptionPolicy) from spec.priorityClassName, or the global default
  PriorityClass; the built-in system-node-critical and system-cluster-critical classes;
- DefaultTolerationSeconds: tolerations of node.kubernetes.io/not-ready and unreachable (NoExecute) for
  a while, so that pods leave a failed node after that time; the lab's podEvictionTimeoutSeconds plays
  kube-apiserver's --default-not-ready-toleration-seconds / --default-unreachable-toleration-seconds;
- a Job's selector (batch.kubernetes.io/controller-uid) and its template's labels, as the API server
  generates them.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from netemu.spec.models import LabelSelector, Pod, Toleration
from netemu.wellknown import JOB_NAME_LABEL, JOB_UID_LABEL
from netemu.wellknown import NOT_READY_TAINT as NOT_READY
from netemu.wellknown import UNREACHABLE_TAINT as UNREACHABLE

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

# scheduling.k8s.io's built-in classes (they exist in every cluster)
SYSTEM_PRIORITY_CLASSES = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}


class Forbidden(ValueError):
    pass


def toleration_seconds(c: "Cluster") -> int:
    return int(math.ceil(max(0.0, c.lab.spec.pod_eviction_timeout_seconds)))


def _priority_class(c: "Cluster", name: str) -> Optional[tuple[int, Optional[str]]]:
    if name in SYSTEM_PRIORITY_CLASSES:
        return SYSTEM_PRIORITY_CLASSES[name], "PreemptLowerPriority"
    pc = c.store.find("PriorityClass", "", name)
    if pc is None:
        return None
    extra = pc.model_extra or {}
    return int(extra.get("value") or 0), extra.get("preemptionPolicy")


def _global_default(c: "Cluster") -> Optional[tuple[str, int, Optional[str]]]:
    best = None
    for pc in c.store.list("PriorityClass"):
        extra = pc.model_extra or {}
        if extra.get("globalDefault"):
            v = int(extra.get("value") or 0)
            if best is None or v < best[1]:
                best = (pc.metadata.name, v, extra.get("preemptionPolicy"))
    return best


def admit_pod(c: "Cluster", pod: Pod, current: Optional[Pod] = None) -> None:
    """Raises Forbidden for a priorityClassName that does not exist."""
    spec = pod.spec
    if current is not None:  # these are set at creation and do not change
        spec.priority = current.spec.priority if spec.priority is None else spec.priority
        if spec.preemption_policy is None:
            spec.preemption_policy = current.spec.preemption_policy
        return
    if spec.priority_class_name:
        got = _priority_class(c, spec.priority_class_name)
        if got is None:
            raise Forbidden(f'pods "{pod.metadata.name}" is forbidden: no PriorityClass with name '
                            f"{spec.priority_class_name} was found")
        spec.priority, policy = got
        spec.preemption_policy = spec.preemption_policy or policy or "PreemptLowerPriority"
    else:
        default = _global_default(c)
        if default is not None:
            spec.priority_class_name, spec.priority, policy = default
            spec.preemption_policy = spec.preemption_policy or policy or "PreemptLowerPriority"
        else:
            spec.priority = spec.priority or 0
            spec.preemption_policy = spec.preemption_policy or "PreemptLowerPriority"
    default_tolerations(c, pod)


def default_tolerations(c: "Cluster", pod: Pod) -> None:
    tols = list(pod.spec.tolerations or [])
    want = {NOT_READY: True, UNREACHABLE: True}
    for t in tols:
        for key in want:
            if (t.key == key or not t.key) and (t.effect == "NoExecute" or not t.effect):
                want[key] = False
    seconds = toleration_seconds(c)
    for key, missing in want.items():
        if missing:
            tols.append(Toleration(key=key, operator="Exists", effect="NoExecute", toleration_seconds=seconds))
    pod.spec.tolerations = tols or None


def admit_job(c: "Cluster", job, current) -> None:
    """The Job's generated selector: it needs the uid, so the uid is given here (the store keeps it)."""
    if current is not None:
        job.metadata.uid = current.metadata.uid
        if job.spec.selector is None:
            job.spec.selector = current.spec.selector
        if job.spec.template is not None and current.spec.template is not None and not job.spec.manual_selector:
            keep = {k: v for k, v in (current.spec.template.metadata.labels or {}).items()
                    if k in (JOB_UID_LABEL, JOB_NAME_LABEL, "controller-uid", "job-name")}
            meta = job.spec.template.metadata
            meta.labels = {**(meta.labels or {}), **keep} or None
        return
    if job.spec.manual_selector or job.spec.selector is not None or job.spec.template is None:
        return
    job.metadata.uid = job.metadata.uid or c.store.new_uid()
    uid, name = job.metadata.uid, job.metadata.name
    job.spec.selector = LabelSelector(match_labels={JOB_UID_LABEL: uid})
    meta = job.spec.template.metadata
    meta.labels = {**(meta.labels or {}), JOB_UID_LABEL: uid, JOB_NAME_LABEL: name, "controller-uid": uid,
                   "job-name": name}


def admit(c: "Cluster", obj, current) -> None:
    """Called for every create and update (netemu.control.services.admit)."""
    from netemu.control.cluster import AdmissionError

    if obj.kind == "Pod":
        try:
            admit_pod(c, obj, current if current is not None and current.kind == "Pod" else None)
        except Forbidden as e:
            raise AdmissionError(str(e)) from None
    elif obj.kind == "Job":
        admit_job(c, obj, current)
