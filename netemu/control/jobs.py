"""The Job controller (batch/v1), as kube-controller-manager runs it, and the TTL-after-finished
controller.

A Job keeps up to `parallelism` pods running until `completions` of them succeed (NonIndexed), or
until each index 0..completions-1 has a pod that succeeded (Indexed: the pod's index in its name,
hostname, the batch.kubernetes.io/job-completion-index annotation and label, and JOB_COMPLETION_INDEX).
A failed pod (restartPolicy Never) is replaced after a back-off that doubles from the lab's
restartBackoffSeconds (the controller's 10 s); with restartPolicy OnFailure the kubelet restarts the
container and the restarts count instead. Past `backoffLimit` failures, or `activeDeadlineSeconds`
after it started, the Job fails and its running pods are deleted. `suspend` deletes them and holds.
Status and conditions are the controller's (SuccessCriteriaMet then Complete, FailureTarget then
Failed), so `kubectl get jobs`, `kubectl wait --for=condition=complete` and `describe` read as usual.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from netemu.control import naming
from netemu.control.admission import JOB_NAME_LABEL, JOB_UID_LABEL
from netemu.control.pods import is_ready, is_terminating
from netemu.control.store import parse_rfc3339
from netemu.spec.models import Condition, EnvVar, EnvVarSource, Job, ObjectMeta, OwnerReference, Pod, PodStatus

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
MAX_BACKOFF = 360.0  # the controller's MaxJobPodFailureBackOff: 6 minutes


@dataclass
class _Seen:
    succeeded: set = field(default_factory=set)
    failed: set = field(default_factory=set)
    indexes: set = field(default_factory=set)
    last_failure: float = 0.0


def _memory(c: "Cluster", job: Job) -> _Seen:
    seen = c.__dict__.setdefault("_jobs_seen", {})
    got = seen.get(job.metadata.uid)
    if got is None:
        got = seen[job.metadata.uid] = _Seen()
    return got


def _finished(job: Job) -> Optional[str]:
    for cond in job.status.conditions or []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond.type
    return None


def reconcile(c: "Cluster") -> None:
    seen = c.__dict__.get("_jobs_seen")
    jobs = c.store.list("Job")
    if seen and len(seen) > len(jobs):  # forget the Jobs that are gone
        uids = {j.metadata.uid for j in jobs}
        for uid in [u for u in seen if u not in uids]:
            del seen[uid]
    for job in jobs:
        if job.spec.template is None or job.metadata.deletion_timestamp:
            continue
        if _finished(job):
            _ttl(c, job)
            continue
        sync(c, job)


def _ttl(c: "Cluster", job: Job) -> None:
    ttl = job.spec.ttl_seconds_after_finished
    if ttl is None:
        return
    done = next((parse_rfc3339(x.last_transition_time) for x in job.status.conditions or []
                 if x.type in ("Complete", "Failed") and x.status == "True"), None)
    if done is None:
        return
    if c.clock() >= done + ttl:
        c.delete("Job", job.metadata.namespace, job.metadata.name)
    else:
        c.wake_at(done + ttl)


def _index_of(pod: Pod) -> Optional[int]:
    v = (pod.metadata.annotations or {}).get(INDEX_KEY)
    return int(v) if v is not None and v.isdigit() else None


def _restarts(pod: Pod) -> int:
    return sum(cs.restart_count for cs in [*(pod.status.container_statuses or []),
                                           *(pod.status.init_container_statuses or [])])


def _cond(job: Job, ctype: str, reason: str, message: str, now: str) -> bool:
    conds = job.status.conditions = job.status.conditions or []
    for x in conds:
        if x.type == ctype:
            if x.status == "True":
                return False
            x.status, x.reason, x.message, x.last_transition_time, x.last_probe_time = "True", reason, message, now, now
            return True
    conds.append(Condition(type=ctype, status="True", reason=reason, message=message, last_transition_time=now,
                           last_probe_time=now))
    return True


def sync(c: "Cluster", job: Job) -> None:
    now = c.clock()
    now_s = c.now_str()
    spec, st = job.spec, job.status
    seen = _memory(c, job)
    pods = c.store.owned("Pod", job.metadata.uid)
    indexed = spec.completion_mode == "Indexed"
    for p in pods:
        if p.status.phase == "Succeeded" and p.metadata.uid not in seen.succeeded:
            seen.succeeded.add(p.metadata.uid)
            idx = _index_of(p)
            if idx is not None:
                seen.indexes.add(idx)
        elif p.status.phase == "Failed" and p.metadata.uid not in seen.failed:
            seen.failed.add(p.metadata.uid)
            seen.last_failure = now
    active = [p for p in pods if p.status.phase not in ("Succeeded", "Failed") and not is_terminating(p)]
    terminating = [p for p in pods if is_terminating(p) and p.status.phase not in ("Succeeded", "Failed")]
    succeeded = max(st.succeeded or 0, len(seen.succeeded)) if not indexed else len(seen.indexes)
    failed = max(st.failed or 0, len(seen.failed))
    changed = False
    if st.start_time is None and not spec.suspend:
        st.start_time = now_s
        st.uncounted_terminated_pods = {}
        changed = True
    # failure: too many failures, or past the deadline
    policy = spec.template.spec.restart_policy
    limit = spec.backoff_limit if spec.backoff_limit is not None else 6
    past_on_failure = False
    if policy == "OnFailure":  # pastBackoffLimitOnFailure: the restarts of its running and pending pods
        restarts = sum(_restarts(p) for p in active if p.status.phase in ("Running", "Pending"))
        past_on_failure = restarts > 0 if limit == 0 else restarts >= limit
    fail: Optional[tuple[str, str]] = None
    if failed > limit or past_on_failure:
        fail = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    started = parse_rfc3339(st.start_time)
    if fail is None and spec.active_deadline_seconds and started is not None and not spec.suspend:
        if now >= started + spec.active_deadline_seconds:
            fail = ("DeadlineExceeded", "Job was active longer than specified deadline")
        else:
            c.wake_at(started + spec.active_deadline_seconds)
    completions = spec.completions
    complete = False
    if fail is None:
        if completions is not None:
            complete = succeeded >= completions
        else:  # a work queue: done once one pod succeeded and none runs any more
            complete = succeeded > 0 and not active
    if fail is not None:
        for p in active:
            c.delete_pod(p)
            c.event(job, "SuccessfulDelete", f"Deleted pod: {p.metadata.name}")
        changed |= _cond(job, "FailureTarget", fail[0], fail[1], now_s)
        changed |= _cond(job, "Failed", fail[0], fail[1], now_s)
        c.event(job, fail[0], fail[1], type_="Warning")
        active = []
    elif complete:
        changed |= _cond(job, "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods",
                         now_s)
        changed |= _cond(job, "Complete", "CompletionsReached", "Reached expected number of succeeded pods", now_s)
        st.completion_time = now_s
        c.event(job, "Completed", "Job completed")
        for p in active:  # stragglers of a work queue
            c.delete_pod(p)
        active = []
    elif spec.suspend:
        for p in active:
            c.delete_pod(p)
            c.event(job, "SuccessfulDelete", f"Deleted pod: {p.metadata.name}")
        active = []
        changed |= _cond(job, "Suspended", "JobSuspended", "Job suspended", now_s)
        if st.start_time is not None:
            st.start_time = None
            changed = True
    else:
        changed |= _create(c, job, active, succeeded, seen, now)
        active = [p for p in c.store.owned("Pod", job.metadata.uid)
                  if p.status.phase not in ("Succeeded", "Failed") and not is_terminating(p)]
    new = dict(active=len(active) or None, succeeded=succeeded or None, failed=failed or None,
               ready=sum(1 for p in active if is_ready(p)), terminating=len(terminating),
               completed_indexes=_ranges(seen.indexes) if indexed and seen.indexes else None)
    for k, v in new.items():
        if getattr(st, k) != v:
            setattr(st, k, v)
            changed = True
    if changed:
        c.store.update(job)


def _ranges(indexes: set) -> str:
    out, run = [], []
    for i in sorted(indexes):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def _create(c: "Cluster", job: Job, active: list[Pod], succeeded: int, seen: _Seen, now: float) -> bool:
    spec = job.spec
    parallelism = spec.parallelism if spec.parallelism is not None else 1
    if spec.completions is not None:
        want = min(parallelism, spec.completions - succeeded)
    else:
        want = parallelism if succeeded == 0 else len(active)
    need = want - len(active)
    if need <= 0:
        return False
    failures = len(seen.failed)
    if failures:  # the back-off before replacing failed pods
        base = c.lab.spec.restart_backoff_seconds
        delay = min(MAX_BACKOFF, base * (2 ** (failures - 1)))
        if now < seen.last_failure + delay:
            c.wake_at(seen.last_failure + delay)
            return False
    ns = job.metadata.namespace
    taken = {p.metadata.name for p in c.store.list("Pod", ns)}
    indexes: list[Optional[int]] = [None] * need
    if spec.completion_mode == "Indexed":
        busy = {_index_of(p) for p in active}
        free = [i for i in range(spec.completions or 0) if i not in seen.indexes and i not in busy]
        indexes = free[:need]
    for idx in indexes:
        pod = _new_pod(c, job, idx, taken)
        taken.add(pod.metadata.name)
        c.store.create(pod)
        c.event(job, "SuccessfulCreate", f"Created pod: {pod.metadata.name}")
    return bool(indexes)


def _new_pod(c: "Cluster", job: Job, index: Optional[int], taken: set) -> Pod:
    from netemu.control.workloads import prepare_pod

    tmpl = job.spec.template
    name = job.metadata.name
    prefix = f"{name}-" if index is None else f"{name}-{index}-"
    labels = {**(tmpl.metadata.labels or {})}
    labels.setdefault(JOB_UID_LABEL, job.metadata.uid or "")
    labels.setdefault(JOB_NAME_LABEL, name)
    annotations = dict(tmpl.metadata.annotations or {})
    spec = tmpl.spec.model_copy(deep=True)
    if index is not None:
        annotations[INDEX_KEY] = str(index)
        labels[INDEX_KEY] = str(index)
        spec.hostname = spec.hostname or f"{name}-{index}"
        for ct in [*spec.containers, *(spec.init_containers or [])]:
            ct.env = [e for e in ct.env or [] if e.name != "JOB_COMPLETION_INDEX"] + [EnvVar(
                name="JOB_COMPLETION_INDEX", value_from=EnvVarSource(
                    field_ref={"fieldPath": f"metadata.annotations['{INDEX_KEY}']"}))]
    pod = Pod(metadata=ObjectMeta(name=naming.generate_name(prefix, c.store.rng, taken), generate_name=prefix,
                                  namespace=job.metadata.namespace, labels=labels, annotations=annotations or None,
                                  owner_references=[OwnerReference(api_version="batch/v1", kind="Job", name=name,
                                                                   uid=job.metadata.uid or "", controller=True)]),
              spec=spec, status=PodStatus(phase="Pending"))
    prepare_pod(c, pod)
    return pod
