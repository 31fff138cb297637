"""The horizontal pod autoscaler controller, as kube-controller-manager's podautoscaler runs it.

Pure: it reads the store and a metrics snapshot (pod -> cpu and memory usage, as metrics-server
serves them) and writes scale changes, HPA status and events. The daemon calls
`HorizontalController.reconcile` from its sync loop and wakes up again at the time it returns.

Every HPA is synced once per sync period (--horizontal-pod-autoscaler-sync-period, 15 s):

    desired = ceil(current * usage / target), unchanged within the tolerance (10%)

Pods are grouped as upstream's replica calculator does: deleted and failed pods are ignored;
pending pods, and for cpu pods that are not ready (or were ready for less than one metric window
within the cpu initialization period), are "unready"; ready pods without metrics are "missing".
On a scale-up, unready and missing pods count as using nothing; on a scale-down, missing pods
count as using their whole request (or the target, if above 100%); a change of direction caused
by these assumptions means no change. Then the recommendation is stabilized (scale-down: the
highest recommendation of the stabilization window, 300 s) and clamped: to [minReplicas,
maxReplicas] and, without `behavior`, to at most max(2 x current, 4); with `behavior`, by its
policies (scale events are remembered per period) and windows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Optional

from netemu.control import labels
from netemu.control.pods import condition
from netemu.control.store import parse_rfc3339, rfc3339
from netemu.spec.autoscaling import (
    SCALABLE_KINDS,
    HorizontalPodAutoscaler,
    HPAScalingRules,
    MetricSpec,
    MetricStatus,
    MetricValueStatus,
    ResourceMetricStatus,
    default_scale_down_rules,
    default_scale_up_rules,
    effective_metrics,
    format_milli,
    milli_value,
)
from netemu.spec.models import Condition, Pod

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

SOURCE = "horizontal-pod-autoscaler"
SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4.0
Key = tuple[str, str]  # namespace, name


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class PodMetrics:
    """One pod's usage, as metrics-server reports it: cpu averaged over `window` seconds up to
    `timestamp`, memory the working set at `timestamp`."""
    cpu_milli: int
    memory_bytes: int
    timestamp: float
    window: float

    def value(self, resource: str) -> int:
        """In milli-units, as the replica calculator works (memory bytes x 1000)."""
        return self.cpu_milli if resource == "cpu" else self.memory_bytes * 1000


MetricsSnapshot = Mapping[Key, PodMetrics]  # (namespace, pod name) -> usage


@dataclass
class HpaSettings:
    """kube-controller-manager's flags for the HPA controller."""
    sync_period: float = 15.0  # --horizontal-pod-autoscaler-sync-period
    downscale_stabilization: float = 300.0  # --horizontal-pod-autoscaler-downscale-stabilization
    tolerance: float = 0.1  # --horizontal-pod-autoscaler-tolerance
    cpu_initialization_period: float = 300.0  # --horizontal-pod-autoscaler-cpu-initialization-period
    initial_readiness_delay: float = 30.0  # --horizontal-pod-autoscaler-initial-readiness-delay

    @classmethod
    def from_lab(cls, lab) -> "HpaSettings":
        spec = lab.spec
        d = cls()
        return cls(
            sync_period=float(getattr(spec, "hpa_sync_period_seconds", None) or d.sync_period),
            downscale_stabilization=float(_first(getattr(spec, "hpa_downscale_stabilization_seconds", None),
                                                 d.downscale_stabilization)),
            tolerance=float(_first(getattr(spec, "hpa_tolerance", None), d.tolerance)),
            cpu_initialization_period=float(_first(getattr(spec, "hpa_cpu_initialization_period_seconds", None),
                                                   d.cpu_initialization_period)),
            initial_readiness_delay=float(_first(getattr(spec, "hpa_initial_readiness_delay_seconds", None),
                                                 d.initial_readiness_delay)),
        )


def _first(v, default):
    return default if v is None else v


class MetricError(Exception):
    """The replica calculator could not compute a proposal (the message is upstream's)."""


class _MetricFailed(Exception):
    """One metric of an HPA failed: the event reason, its message, and the error as
    computeReplicasForMetrics words it."""

    def __init__(self, reason: str, detail: str, error: str):
        super().__init__(error)
        self.reason, self.detail, self.error = reason, detail, error


class _AllMetricsInvalid(Exception):
    def __init__(self, message: str, statuses: list):
        super().__init__(message)
        self.statuses = statuses


# --------------------------------------------------------------------------- the replica calculator
def group_pods(pods: Iterable[Pod], metrics: Mapping[str, PodMetrics], resource: str,
               cpu_initialization_period: float, initial_readiness_delay: float,
               now: float) -> tuple[int, set[str], set[str], set[str]]:
    """(ready pod count, unready pods, pods missing metrics, ignored pods) by pod name."""
    ready = 0
    unready: set[str] = set()
    missing: set[str] = set()
    ignored: set[str] = set()
    for pod in pods:
        name = pod.metadata.name
        if pod.metadata.deletion_timestamp is not None or pod.status.phase == "Failed":
            ignored.add(name)
            continue
        if pod.status.phase == "Pending":
            unready.add(name)
            continue
        metric = metrics.get(name)
        if metric is None:
            missing.add(name)
            continue
        if resource == "cpu":
            cond = condition(pod, "Ready")
            start = parse_rfc3339(pod.status.start_time)
            if cond is None or start is None:
                is_unready = True
            else:
                transition = parse_rfc3339(cond.last_transition_time) or 0.0
                if start + cpu_initialization_period > now:
                    # within the initialization period: unready, or no full metric window since it
                    # became ready
                    is_unready = cond.status == "False" or metric.timestamp < transition + metric.window
                else:
                    # afterwards: ignored only if it is unready and has never been ready
                    is_unready = cond.status == "False" and start + initial_readiness_delay > transition
            if is_unready:
                unready.add(name)
                continue
        ready += 1
    return ready, unready, missing, ignored


def calculate_requests(pods: Iterable[Pod], resource: str) -> dict[str, int]:
    """Each pod's request for `resource` in milli-units (the sum of its containers', with the
    API server's default request = limit)."""
    out = {}
    for pod in pods:
        total = 0
        for c in pod.spec.containers:
            res = c.resources
            requests = {**((res.limits or {}) if res else {}), **((res.requests or {}) if res else {})}
            if resource not in requests:
                raise MetricError(f"missing request for {resource} in container {c.name} of Pod {pod.metadata.name}")
            total += milli_value(requests[resource])
        out[pod.metadata.name] = total
    return out


def resource_utilization_ratio(metrics: Mapping[str, int], requests: Mapping[str, int],
                               target_utilization: int) -> tuple[float, int, int]:
    """(usage ratio, utilization in % of request, average raw value), upstream's integer maths."""
    total = requested = n = 0
    for name, v in metrics.items():
        if name not in requests:
            continue
        total += v
        requested += requests[name]
        n += 1
    if requested == 0:
        raise MetricError("no metrics returned matched known pods")
    utilization = (total * 100) // requested
    return utilization / target_utilization, utilization, total // n


def metric_usage_ratio(metrics: Mapping[str, int], target_usage: int) -> tuple[float, int]:
    usage = sum(metrics.values()) // len(metrics)
    return usage / target_usage, usage


def _within(ratio: float, tolerance: float) -> bool:
    return (1.0 - tolerance) <= ratio <= (1.0 + tolerance)


def _counted_metrics(resource: str, pods: list[Pod], pod_metrics: Mapping[str, PodMetrics],
                     cpu_initialization_period: float, initial_readiness_delay: float, now: float):
    """The start both calculations share: (metrics of the pods that count, ready count, unready pods,
    pods without metrics, metrics timestamp). Raises MetricError."""
    if not pod_metrics:
        raise MetricError(f"unable to get metrics for resource {resource}: "
                          "no metrics returned from resource metrics API")
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    timestamp = max(m.timestamp for m in pod_metrics.values())
    metrics = {name: m.value(resource) for name, m in pod_metrics.items()}
    ready, unready, missing, ignored = group_pods(pods, pod_metrics, resource, cpu_initialization_period,
                                                  initial_readiness_delay, now)
    for name in ignored | unready:
        metrics.pop(name, None)
    if not metrics:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    return metrics, ready, unready, missing, timestamp


def _replicas_from_ratio(current_replicas: int, ratio: float, tolerance: float, metrics: dict[str, int], ready: int,
                         unready: set[str], missing: set[str], ratio_of: Callable[[dict[str, int]], float],
                         scale_down_fill: Callable[[str], int]) -> int:
    """The shared end: the replica count for a usage ratio, re-estimated (as kube-controller-manager
    does) when pods are unready or have no metrics: those count as using nothing on a scale-up and
    scale_down_fill(pod) on a scale-down; no change when the estimate flips the direction."""
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        return current_replicas if _within(ratio, tolerance) else math.ceil(ratio * ready)
    for name in missing:
        if ratio < 1.0:
            metrics[name] = scale_down_fill(name)
        elif ratio > 1.0:
            metrics[name] = 0
    if scale_up_with_unready:
        for name in unready:
            metrics[name] = 0
    new_ratio = ratio_of(metrics)
    if _within(new_ratio, tolerance) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current_replicas
    new_replicas = math.ceil(new_ratio * len(metrics))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (new_ratio > 1.0 and new_replicas < current_replicas):
        return current_replicas
    return new_replicas


def resource_replicas(current_replicas: int, target_utilization: int, resource: str, pods: list[Pod],
                      pod_metrics: Mapping[str, PodMetrics], tolerance: float, cpu_initialization_period: float,
                      initial_readiness_delay: float, now: float) -> tuple[int, int, int, float]:
    """GetResourceReplicas: (replicas, utilization %, raw average in milli-units, metrics timestamp)
    for a Utilization target. Raises MetricError."""
    metrics, ready, unready, missing, timestamp = _counted_metrics(
        resource, pods, pod_metrics, cpu_initialization_period, initial_readiness_delay, now)
    requests = calculate_requests(pods, resource)
    ratio, utilization, raw = resource_utilization_ratio(metrics, requests, target_utilization)
    # scale-down: a pod without metrics uses its whole request (or the target, above 100%)
    fallback = max(100, target_utilization)
    replicas = _replicas_from_ratio(
        current_replicas, ratio, tolerance, metrics, ready, unready, missing,
        lambda m: resource_utilization_ratio(m, requests, target_utilization)[0],
        lambda name: requests[name] * fallback // 100)
    return replicas, utilization, raw, timestamp


def raw_resource_replicas(current_replicas: int, target_usage: int, resource: str, pods: list[Pod],
                          pod_metrics: Mapping[str, PodMetrics], tolerance: float, cpu_initialization_period: float,
                          initial_readiness_delay: float, now: float) -> tuple[int, int, float]:
    """GetRawResourceReplicas: (replicas, average usage in milli-units, timestamp) for an
    AverageValue target (in milli-units). Raises MetricError."""
    metrics, ready, unready, missing, timestamp = _counted_metrics(
        resource, pods, pod_metrics, cpu_initialization_period, initial_readiness_delay, now)
    ratio, usage = metric_usage_ratio(metrics, target_usage)
    replicas = _replicas_from_ratio(current_replicas, ratio, tolerance, metrics, ready, unready, missing,
                                    lambda m: metric_usage_ratio(m, target_usage)[0], lambda name: target_usage)
    return replicas, usage, timestamp


# --------------------------------------------------------------------------- normalization rules
def convert_desired_replicas_with_rules(current: int, desired: int, min_replicas: int,
                                        max_replicas: int) -> tuple[int, str, str]:
    """Without `behavior`: [minReplicas, min(maxReplicas, max(2 x current, 4))]."""
    scale_up_limit = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
    if max_replicas > scale_up_limit:
        maximum, cond, reason = (scale_up_limit, "ScaleUpLimit",
                                 "the desired replica count is increasing faster than the maximum scale rate")
    else:
        maximum, cond, reason = (max_replicas, "TooManyReplicas",
                                 "the desired replica count is more than the maximum replica count")
    if desired < min_replicas:
        return min_replicas, "TooFewReplicas", "the desired replica count is less than the minimum replica count"
    if desired > maximum:
        return maximum, cond, reason
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


@dataclass
class ScaleEvent:
    change: int  # replicas added (scale-up list) or removed (scale-down list)
    timestamp: float
    outdated: bool = False


def _change_in_period(period: float, events: list[ScaleEvent], now: float) -> int:
    cutoff = now - period
    return sum(e.change for e in events if e.timestamp > cutoff)


def scale_up_limit(current: int, up_events: list[ScaleEvent], down_events: list[ScaleEvent],
                   rules: HPAScalingRules, now: float) -> int:
    if rules.select_policy == "Disabled":
        return current
    pick, result = (min, 2 ** 31 - 1) if rules.select_policy == "Min" else (max, -(2 ** 31))
    for p in rules.policies or []:
        start = current - _change_in_period(p.period_seconds, up_events, now) + \
            _change_in_period(p.period_seconds, down_events, now)
        if p.type == "Pods":
            proposed = start + p.value
        else:
            proposed = math.ceil(start * (1 + p.value / 100))
        result = pick(result, proposed)
    return result


def scale_down_limit(current: int, up_events: list[ScaleEvent], down_events: list[ScaleEvent],
                     rules: HPAScalingRules, now: float) -> int:
    if rules.select_policy == "Disabled":
        return current
    pick, result = (max, -(2 ** 31)) if rules.select_policy == "Min" else (min, 2 ** 31 - 1)
    for p in rules.policies or []:
        start = current + _change_in_period(p.period_seconds, down_events, now) - \
            _change_in_period(p.period_seconds, up_events, now)
        if p.type == "Pods":
            proposed = start - p.value
        else:
            proposed = int(start * (1 - p.value / 100))
        result = pick(result, proposed)
    return result


# --------------------------------------------------------------------------- conditions
def set_hpa_condition(hpa: HorizontalPodAutoscaler, ctype: str, status: bool, reason: str, message: str,
                      now: str) -> None:
    """setCondition: the transition time moves only when the status flips."""
    value_ = "True" if status else "False"
    conds = hpa.status.conditions = list(hpa.status.conditions or [])
    for c in conds:
        if c.type == ctype:
            if c.status != value_:
                c.last_transition_time = now
            c.status, c.reason, c.message = value_, reason, message
            return
    conds.append(Condition(type=ctype, status=value_, reason=reason, message=message, last_transition_time=now))


# --------------------------------------------------------------------------- the controller
@dataclass
class _State:
    uid: str
    next_sync: float = 0.0
    recommendations: list[tuple[int, float]] = field(default_factory=list)
    up_events: list[ScaleEvent] = field(default_factory=list)
    down_events: list[ScaleEvent] = field(default_factory=list)


_RESOURCE_PLURAL = {"Deployment": "deployments.apps", "ReplicaSet": "replicasets.apps",
                    "StatefulSet": "statefulsets.apps", "ReplicationController": "replicationcontrollers"}


class HorizontalController:
    def __init__(self, settings: Optional[HpaSettings] = None):
        self.settings = settings or HpaSettings()
        self._state: dict[Key, _State] = {}

    # ------------------------------------------------------------------ the loop
    def reconcile(self, cluster: "Cluster", metrics: MetricsSnapshot, now: Optional[float] = None) -> Optional[float]:
        """Sync every HPA whose sync period has come; returns when the next one is due (None
        without HPAs), for the daemon's wake-up."""
        now = cluster.clock() if now is None else now
        seen = set()
        for hpa in sorted(cluster.store.list("HorizontalPodAutoscaler"),
                          key=lambda h: (h.metadata.namespace or "", h.metadata.name)):
            key = (hpa.metadata.namespace or "default", hpa.metadata.name)
            seen.add(key)
            st = self._state.get(key)
            if st is None or st.uid != hpa.metadata.uid:
                st = self._state[key] = _State(uid=hpa.metadata.uid or "")
            if now >= st.next_sync:
                st.next_sync = now + self.settings.sync_period
                self.sync(cluster, hpa, metrics, now)
        for key in list(self._state):
            if key not in seen:
                del self._state[key]
        return min((s.next_sync for s in self._state.values()), default=None)

    # ------------------------------------------------------------------ one HPA
    def sync(self, cluster: "Cluster", hpa: HorizontalPodAutoscaler, metrics: MetricsSnapshot, now: float) -> None:
        """reconcileAutoscaler for one HPA."""
        key = (hpa.metadata.namespace or "default", hpa.metadata.name)
        st = self._state.setdefault(key, _State(uid=hpa.metadata.uid or ""))
        before = hpa.status.model_copy(deep=True)
        now_s = rfc3339(now)
        ns = key[0]
        ref = hpa.spec.scale_target_ref
        target = cluster.store.find(ref.kind, ns, ref.name) if ref.kind in SCALABLE_KINDS else None
        if target is None:
            what = _RESOURCE_PLURAL.get(ref.kind, ref.kind.lower() + "s")
            err = (f'{what} "{ref.name}" not found' if ref.kind in SCALABLE_KINDS
                   else f'no matches for kind "{ref.kind}": netemu scales {" and ".join(SCALABLE_KINDS)}')
            cluster.event(hpa, "FailedGetScale", err, type_="Warning", source=SOURCE)
            set_hpa_condition(hpa, "AbleToScale", False, "FailedGetScale",
                              f"the HPA controller was unable to get the target's current scale: {err}", now_s)
            self._update_status(cluster, hpa, before)
            return
        set_hpa_condition(hpa, "AbleToScale", True, "SucceededGetScale",
                          "the HPA controller was able to get the target's current scale", now_s)
        current = _spec_replicas(target)
        if not st.recommendations:  # recordInitialRecommendation
            st.recommendations.append((current, now))
        min_replicas = hpa.spec.min_replicas if hpa.spec.min_replicas is not None else 1
        max_replicas = hpa.spec.max_replicas
        statuses: Optional[list[MetricStatus]] = None
        reason = ""
        rescale = True
        if current == 0 and min_replicas != 0:
            desired, rescale = 0, False
            set_hpa_condition(hpa, "ScalingActive", False, "ScalingDisabled",
                              "scaling is disabled since the replica count of the target is zero", now_s)
        elif current > max_replicas:
            reason, desired = "Current number of replicas above Spec.MaxReplicas", max_replicas
        elif current < min_replicas:
            reason, desired = "Current number of replicas below Spec.MinReplicas", min_replicas
        else:
            try:
                proposal, metric_name, statuses = self._replicas_for_metrics(cluster, hpa, target, current,
                                                                             metrics, now, now_s)
            except _AllMetricsInvalid as e:
                hpa.status.current_replicas = current  # setCurrentReplicasAndMetricsInStatus
                hpa.status.current_metrics = e.statuses or None
                self._update_status(cluster, hpa, before)
                cluster.event(hpa, "FailedComputeMetricsReplicas", str(e), type_="Warning", source=SOURCE)
                return
            desired = proposal
            if desired > current:
                reason = f"{metric_name} above target"
            elif desired < current:
                reason = "All metrics below target"
            if hpa.spec.behavior is None:
                desired = self._normalize(hpa, st, current, desired, min_replicas, max_replicas, now, now_s)
            else:
                desired = self._normalize_with_behaviors(hpa, st, current, desired, min_replicas, max_replicas,
                                                         now, now_s)
            rescale = desired != current
        if rescale:
            cluster.scale(target.kind, ns, target.metadata.name, desired)
            set_hpa_condition(hpa, "AbleToScale", True, "SucceededRescale",
                              f"the HPA controller was able to update the target scale to {desired}", now_s)
            cluster.event(hpa, "SuccessfulRescale", f"New size: {desired}; reason: {reason}", source=SOURCE)
            self._store_scale_event(hpa, st, current, desired, now)
        else:
            desired = current
        st_ = hpa.status
        st_.current_replicas = current
        st_.desired_replicas = desired
        st_.current_metrics = statuses or None
        if rescale:
            st_.last_scale_time = now_s
        self._update_status(cluster, hpa, before)

    def _update_status(self, cluster: "Cluster", hpa: HorizontalPodAutoscaler, before) -> None:
        if hpa.status.dump() != before.dump():
            cluster.store.update(hpa)

    # ------------------------------------------------------------------ metrics
    def _replicas_for_metrics(self, cluster, hpa, target, current, metrics, now, now_s):
        """computeReplicasForMetrics: the largest proposal over the metrics."""
        ns = hpa.metadata.namespace or "default"
        selector = target.spec.selector
        pods = [p for p in cluster.store.list("Pod", ns) if labels.matches(selector, p.metadata.labels)]
        names = {p.metadata.name for p in pods}
        pod_metrics = {name: m for (mns, name), m in metrics.items() if mns == ns and name in names}
        specs = effective_metrics(hpa)  # defaults included, even on an object that skipped them
        statuses: list[MetricStatus] = []
        best, best_name = 0, ""
        invalid = 0
        first: Optional[tuple[str, str, str]] = None  # (condition reason, condition message, error)
        for spec in specs:
            try:
                proposal, name, status = self._replicas_for_metric(hpa, spec, current, pods, pod_metrics, now)
            except _MetricFailed as e:
                cluster.event(hpa, e.reason, e.detail, type_="Warning", source=SOURCE)
                if first is None:
                    first = (e.reason, f"the HPA was unable to compute the replica count: {e.detail}", e.error)
                invalid += 1
                statuses.append(MetricStatus(type=""))
                continue
            statuses.append(status)
            if best == 0 or proposal > best:
                best, best_name = proposal, name
        if specs and invalid >= len(specs):
            set_hpa_condition(hpa, "ScalingActive", False, first[0], first[1], now_s)
            raise _AllMetricsInvalid(f"invalid metrics ({invalid} invalid out of {len(specs)}), first error is: "
                                     f"{first[2]}", statuses)
        set_hpa_condition(hpa, "ScalingActive", True, "ValidMetricFound",
                          f"the HPA was able to successfully calculate a replica count from {best_name}", now_s)
        return best, best_name, statuses

    def _replicas_for_metric(self, hpa, spec: MetricSpec, current: int, pods: list[Pod],
                             pod_metrics: Mapping[str, PodMetrics], now: float):
        s = self.settings
        if spec.type != "Resource" or spec.resource is None:
            reason = f"FailedGet{spec.type}Metric"
            detail = (f"unable to get {spec.type.lower()} metric: netemu has no custom or external metrics API "
                      "(only Resource cpu and memory)")
            raise _MetricFailed(reason, detail, f"failed to get {spec.type.lower()} metric value: {detail}")
        res = spec.resource
        target = res.target
        try:
            if target.average_value is not None:
                replicas, usage, _ = raw_resource_replicas(
                    current, milli_value(target.average_value), res.name, pods, pod_metrics, s.tolerance,
                    s.cpu_initialization_period, s.initial_readiness_delay, now)
                status = MetricStatus(type="Resource", resource=ResourceMetricStatus(
                    name=res.name, current=MetricValueStatus(average_value=format_milli(usage))))
                return replicas, f"{res.name} resource", status
            if target.average_utilization is None:
                raise MetricError("invalid resource metric source: neither an average utilization target nor an "
                                  "average value (usage) target was set")
            replicas, utilization, raw, _ = resource_replicas(
                current, target.average_utilization, res.name, pods, pod_metrics, s.tolerance,
                s.cpu_initialization_period, s.initial_readiness_delay, now)
        except MetricError as e:
            kind = "usage" if target.average_value is not None else "utilization"
            detail = f"failed to get {res.name} {kind}: {e.args[0]}"
            raise _MetricFailed("FailedGetResourceMetric", detail,
                                f"failed to get {res.name} resource metric value: {detail}") from None
        status = MetricStatus(type="Resource", resource=ResourceMetricStatus(
            name=res.name, current=MetricValueStatus(average_utilization=utilization,
                                                     average_value=format_milli(raw))))
        return replicas, f"{res.name} resource utilization (percentage of request)", status

    # ------------------------------------------------------------------ normalization
    def _stabilize(self, st: _State, desired: int, now: float) -> int:
        """stabilizeRecommendation: the highest recommendation within the downscale window."""
        cutoff = now - self.settings.downscale_stabilization
        best = desired
        old = None
        for i, (rec, t) in enumerate(st.recommendations):
            if t < cutoff:
                old = i
            elif rec > best:
                best = rec
        if old is not None:
            st.recommendations[old] = (desired, now)
        else:
            st.recommendations.append((desired, now))
        return best

    def _normalize(self, hpa, st, current, desired, min_replicas, max_replicas, now, now_s) -> int:
        stabilized = self._stabilize(st, desired, now)
        if stabilized != desired:
            set_hpa_condition(hpa, "AbleToScale", True, "ScaleDownStabilized",
                              "recent recommendations were higher than current one, applying the highest recent "
                              "recommendation", now_s)
        else:
            set_hpa_condition(hpa, "AbleToScale", True, "ReadyForNewScale", "recommended size matches current size",
                              now_s)
        out, reason, message = convert_desired_replicas_with_rules(current, stabilized, min_replicas, max_replicas)
        set_hpa_condition(hpa, "ScalingLimited", out != stabilized, reason, message, now_s)
        return out

    def _rules(self, hpa) -> tuple[HPAScalingRules, HPAScalingRules]:
        b = hpa.spec.behavior
        up = default_scale_up_rules(b.scale_up)
        down = default_scale_down_rules(b.scale_down)
        if down.stabilization_window_seconds is None:  # maybeInitScaleDownStabilizationWindow
            down.stabilization_window_seconds = int(self.settings.downscale_stabilization)
        return up, down

    def _normalize_with_behaviors(self, hpa, st, current, desired, min_replicas, max_replicas, now, now_s) -> int:
        up, down = self._rules(hpa)
        if desired >= current:
            delay, pick = up.stabilization_window_seconds, min
            reason = "ScaleUpStabilized"
            message = "recent recommendations were lower than current one, applying the lowest recent recommendation"
        else:
            delay, pick = down.stabilization_window_seconds, max
            reason = "ScaleDownStabilized"
            message = ("recent recommendations were higher than current one, applying the highest recent "
                       "recommendation")
        obsolete = now - max(up.stabilization_window_seconds, down.stabilization_window_seconds)
        cutoff = now - delay
        stabilized = desired
        old = None
        for i, (rec, t) in enumerate(st.recommendations):
            if t > cutoff:
                stabilized = pick(rec, stabilized)
            if t < obsolete:
                old = i
        if old is not None:
            st.recommendations[old] = (desired, now)
        else:
            st.recommendations.append((desired, now))
        if stabilized != desired:
            set_hpa_condition(hpa, "AbleToScale", True, reason, message, now_s)
        else:
            set_hpa_condition(hpa, "AbleToScale", True, "ReadyForNewScale", "recommended size matches current size",
                              now_s)
        out, why, text = stabilized, "DesiredWithinRange", "the desired count is within the acceptable range"
        if stabilized > current:
            limit = max(current, scale_up_limit(current, st.up_events, st.down_events, up, now))
            if max_replicas > limit:
                maximum, r, t = limit, "ScaleUpLimit", \
                    "the desired replica count is increasing faster than the maximum scale rate"
            else:
                maximum, r, t = max_replicas, "TooManyReplicas", \
                    "the desired replica count is more than the maximum replica count"
            if stabilized > maximum:
                out, why, text = maximum, r, t
        elif stabilized < current:
            limit = min(current, scale_down_limit(current, st.up_events, st.down_events, down, now))
            if min_replicas < limit:
                minimum, r, t = limit, "ScaleDownLimit", \
                    "the desired replica count is decreasing faster than the maximum scale rate"
            else:
                minimum, r, t = min_replicas, "TooFewReplicas", \
                    "the desired replica count is less than the minimum replica count"
            if stabilized < minimum:
                out, why, text = minimum, r, t
        set_hpa_condition(hpa, "ScalingLimited", out != stabilized, why, text, now_s)
        return out

    def _store_scale_event(self, hpa, st: _State, previous: int, new: int, now: float) -> None:
        """storeScaleEvent: remembered only with `behavior` (its policies look back per period)."""
        if hpa.spec.behavior is None:
            return
        up, down = self._rules(hpa)
        if new > previous:
            events, rules, change = st.up_events, up, new - previous
        else:
            events, rules, change = st.down_events, down, previous - new
        longest = max((p.period_seconds for p in rules.policies or []), default=0)
        for e in events:
            if e.timestamp < now - longest:
                e.outdated = True
        for i, e in enumerate(events):
            if e.outdated:
                events[i] = ScaleEvent(change, now)
                return
        events.append(ScaleEvent(change, now))


def _spec_replicas(obj) -> int:
    r = obj.spec.replicas
    return 1 if r is None else int(r)

