"""The horizontal pod autoscaler, without root: upstream's replica calculator cases (tolerance, missing
metrics, unready and hot-cpu pods, failed and deleted pods), the stabilization window, min/max and
scale-up limits, behaviors, status, conditions and events on a real Cluster, the autoscaling/v1 and
v2 objects, and `get hpa`."""
from __future__ import annotations

from typing import Optional

import pytest

from netemu.api.tables import hpa_cells
from netemu.cli import tables as cli_tables
from netemu.cli import top_cmds
from netemu.control.cluster import Cluster
from netemu.control.hpa import (
    HorizontalController, HpaSettings, MetricError, PodMetrics, convert_desired_replicas_with_rules, group_pods,
    raw_resource_replicas, resource_replicas, scale_down_limit, scale_up_limit, ScaleEvent,
)
from netemu.control.pods import set_condition
from netemu.control.store import rfc3339
from netemu.spec.autoscaling import (
    HorizontalPodAutoscaler, HPAScalingPolicy, HPAScalingRules, default_hpa, effective_metrics, hpa_problems, new_hpa,
)
from netemu.spec.models import Condition, Deployment, ObjectMeta, Pod, PodSpec, PodStatus
from clusters import Clock, ready_cluster


def hpa_row(hpa: dict, now: float) -> list[str]:
    """`get hpa`'s row as the CLI prints it: the server's cells (netemu.api.tables)."""
    return [cli_tables.cell_text(c) for c in hpa_cells(hpa, now)]


NOW = 1_700_000_000.0
HOT = NOW  # started now: within the cpu initialization period
COOL = NOW - 180  # started 3 minutes ago
TOLERANCE, CPU_INIT, READINESS_DELAY = 0.1, 120.0, 10.0  # upstream's testing values


# --------------------------------------------------------------------------- the replica calculator
def calc_pods(n: int, requests=None, readiness=None, start=None, phase=None, deleting=None,
              resource="cpu") -> list[Pod]:
    out = []
    for i in range(n):
        req = (requests or ["1.0"] * n)[i] if requests is None or i < len(requests) else None
        res = {"requests": {resource: req}} if req is not None else None
        c = {"name": "c", "image": "x", **({"resources": res} if res else {})}
        ready = (readiness or ["True"] * n)[i]
        pod = Pod(metadata=ObjectMeta(name=f"test-pod-{i}", namespace="ns", labels={"name": "test-pod"}),
                  spec=PodSpec.model_validate({"containers": [c]}),
                  status=PodStatus(phase=(phase or ["Running"] * n)[i],
                                   start_time=rfc3339(start[i] if start else 0),
                                   conditions=[Condition(type="Ready", status=ready)]))
        if deleting and deleting[i]:
            pod.metadata.deletion_timestamp = rfc3339(NOW)
        out.append(pod)
    return out


def levels(values, names=None, timestamp: float = 0.0) -> dict[str, PodMetrics]:
    names = names or [f"test-pod-{i}" for i in range(len(values))]
    return {n: PodMetrics(cpu_milli=v, memory_bytes=0, timestamp=timestamp, window=60.0) for n, v in zip(names, values)}


def calc(current, target, pods, metrics, resource="cpu"):
    return resource_replicas(current, target, resource, pods, metrics, TOLERANCE, CPU_INIT, READINESS_DELAY, NOW)


# (name, current, expected replicas, expected utilization, expected raw value, pods kwargs, levels, target)
UPSTREAM = [
    ("ScaleUp", 3, 5, 50, 500, {}, [300, 500, 700], 30),
    ("ScaleUpUnreadyLessScale", 3, 4, 60, 600, {"readiness": ["False", "True", "True"]}, [300, 500, 700], 30),
    ("ScaleUpHotCpuLessScale", 3, 4, 60, 600, {"start": [HOT, COOL, COOL]}, [300, 500, 700], 30),
    ("ScaleUpUnreadyNoScale", 3, 3, 40, 400, {"readiness": ["True", "False", "False"]}, [400, 500, 700], 30),
    ("ScaleHotCpuNoScale", 3, 3, 40, 400, {"readiness": ["True", "False", "False"], "start": [COOL, HOT, HOT]},
     [400, 500, 700], 30),
    ("ScaleUpIgnoresFailedPods", 2, 4, 60, 600, {"n": 4, "readiness": ["True", "True", "False", "False"],
                                                  "phase": ["Running", "Running", "Failed", "Failed"]}, [500, 700], 30),
    ("ScaleUpIgnoresDeletionPods", 2, 4, 60, 600, {"n": 4, "readiness": ["True", "True", "False", "False"],
                                                    "deleting": [False, False, True, True]}, [500, 700], 30),
    ("ScaleDown", 5, 3, 28, 280, {}, [100, 300, 500, 250, 250], 50),
    ("ScaleDownIncludeUnreadyPods", 5, 2, 30, 300, {"readiness": ["True", "True", "True", "False", "False"]},
     [100, 300, 500, 250, 250], 50),
    ("ScaleDownExcludeUnscheduledPods", 5, 1, 10, 100,
     {"readiness": ["True", "False", "False", "False", "False"],
      "phase": ["Running", "Pending", "Pending", "Pending", "Pending"]}, [100], 50),
    ("ScaleDownIgnoreHotCpuPods", 5, 2, 30, 300, {"start": [COOL, COOL, COOL, HOT, HOT]},
     [100, 300, 500, 250, 250], 50),
    ("ScaleDownIgnoresFailedPods", 5, 3, 28, 280,
     {"n": 7, "readiness": ["True"] * 5 + ["False"] * 2, "phase": ["Running"] * 5 + ["Failed"] * 2},
     [100, 300, 500, 250, 250], 50),
    ("Tolerance", 3, 3, 102, 1020, {"requests": ["0.9", "1.0", "1.1"]}, [1010, 1030, 1020], 100),
    ("SuperfluousMetrics", 4, 24, 587, 5875, {}, [4000, 9500, 3000, 7000, 3200, 2000], 100),
    ("MissingMetrics", 4, 3, 24, 247, {}, [400, 95], 100),
    ("MissingMetricsNoChangeEq", 2, 2, 100, 1000, {}, [1000], 100),
    ("MissingMetricsNoChangeGt", 2, 2, 190, 1900, {}, [1900], 100),
    ("MissingMetricsNoChangeLt", 2, 2, 60, 600, {}, [600], 100),
    ("MissingMetricsUnreadyChange", 3, 3, 45, 450, {"readiness": ["False", "True", "True"]}, [100, 450], 50),
    ("MissingMetricsHotCpuNoChange", 3, 3, 45, 450, {"start": [HOT, COOL, COOL]}, [100, 450], 50),
    ("MissingMetricsUnreadyScaleUp", 3, 4, 200, 2000, {"readiness": ["False", "True", "True"]}, [100, 2000], 50),
    ("MissingMetricsHotCpuScaleUp", 3, 4, 200, 2000,
     {"readiness": ["False", "True", "True"], "start": [HOT, COOL, COOL]}, [100, 2000], 50),
    ("MissingMetricsUnreadyScaleDown", 4, 3, 10, 100, {"readiness": ["False", "True", "True", "True"]},
     [100, 100, 100], 50),
    ("DuringRollingUpdateWithMaxSurge", 2, 2, 10, 100, {"n": 3}, [100, 100], 50),
]


@pytest.mark.parametrize("name,current,want,util,raw,kw,lv,target", UPSTREAM, ids=[c[0] for c in UPSTREAM])
def test_replica_calculator_upstream_cases(name, current, want, util, raw, kw, lv, target):
    kw = dict(kw)
    n = kw.pop("n", current)
    pods = calc_pods(n, **kw)
    replicas, utilization, raw_value, _ = calc(current, target, pods, levels(lv))
    assert (replicas, utilization, raw_value) == (want, util, raw)


def test_replica_calculator_errors():
    with pytest.raises(MetricError, match="no metrics returned from resource metrics API"):
        calc(4, 100, calc_pods(3), {})
    with pytest.raises(MetricError, match="missing request for cpu in container c of Pod test-pod-0"):
        calc(1, 100, calc_pods(1, requests=[]), levels([200]))
    with pytest.raises(MetricError, match="no metrics returned matched known pods"):
        calc(1, 100, calc_pods(1), levels([100], names=["an-older-pod-name"]))
    with pytest.raises(MetricError, match="pods might be unready"):
        calc(1, 50, calc_pods(1, readiness=["False"]), levels([100]))


def test_computed_tolerance_regression():
    # upstream's TestReplicaCalcComputedToleranceAlgImplementation, with single-container pods
    start, used = 10, 150
    per_pod = 2 * used
    reqs = [f"{per_pod + d}m" for d in (100, -100, 10, -10, 2, -2, 1, -1, 0, 0)]
    target = int((1 / (2 * (1 - TOLERANCE)) + .01) * 100)
    pods = calc_pods(start, requests=reqs)
    replicas, utilization, _, _ = calc(start, target, pods, levels([used] * start))
    ratio = (start * used) / (start * per_pod * target / 100)
    assert replicas == -(-int(ratio * start * 1000) // 1000) and replicas < start
    assert utilization == 50
    # within the tolerance: no change
    target = int((1 / (2 * (1 - TOLERANCE)) + .004) * 100)
    assert calc(start, target, pods, levels([used] * start))[0] == start


def test_group_pods_within_and_after_initialization():
    pod = calc_pods(1, start=[NOW - 60])[0]
    pod.status.conditions[0].last_transition_time = rfc3339(NOW - 30)
    fresh = {"test-pod-0": PodMetrics(1, 0, NOW, 30.0)}
    stale = {"test-pod-0": PodMetrics(1, 0, NOW - 5, 30.0)}
    assert group_pods([pod], fresh, "cpu", 300, 30, NOW)[0] == 1  # a full window since it became ready
    assert group_pods([pod], stale, "cpu", 300, 30, NOW)[1] == {"test-pod-0"}  # not yet
    assert group_pods([pod], stale, "memory", 300, 30, NOW)[0] == 1  # readiness only matters for cpu
    never_ready = calc_pods(1, readiness=["False"], start=[NOW - 3600])[0]
    never_ready.status.conditions[0].last_transition_time = rfc3339(NOW - 3590)  # within 30 s of start
    assert group_pods([never_ready], fresh, "cpu", 300, 30, NOW)[1] == {"test-pod-0"}
    was_ready = calc_pods(1, readiness=["False"], start=[NOW - 3600])[0]
    was_ready.status.conditions[0].last_transition_time = rfc3339(NOW - 60)  # became unready later
    assert group_pods([was_ready], fresh, "cpu", 300, 30, NOW)[0] == 1


def test_average_value_targets():
    pods = calc_pods(3, resource="memory")
    mem = {f"test-pod-{i}": PodMetrics(0, b, NOW, 15.0) for i, b in enumerate([200 << 20, 100 << 20, 300 << 20])}
    replicas, usage, _ = raw_resource_replicas(3, (100 << 20) * 1000, "memory", pods, mem, TOLERANCE, CPU_INIT,
                                               READINESS_DELAY, NOW)
    assert replicas == 6 and usage == (200 << 20) * 1000
    # cpu as an average value: 250m target, pods at 500m
    cpu = calc_pods(2)
    assert raw_resource_replicas(2, 250, "cpu", cpu, levels([500, 500]), TOLERANCE, CPU_INIT, READINESS_DELAY,
                                 NOW)[:2] == (4, 500)


def test_scale_limits_without_behavior():
    assert convert_desired_replicas_with_rules(1, 10, 1, 10) == (
        4, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
    assert convert_desired_replicas_with_rules(4, 10, 1, 10)[0] == 8
    assert convert_desired_replicas_with_rules(3, 10, 1, 5) == (
        5, "TooManyReplicas", "the desired replica count is more than the maximum replica count")
    assert convert_desired_replicas_with_rules(3, 0, 2, 5) == (
        2, "TooFewReplicas", "the desired replica count is less than the minimum replica count")
    assert convert_desired_replicas_with_rules(3, 4, 1, 10) == (
        4, "DesiredWithinRange", "the desired count is within the acceptable range")


def test_behavior_policy_limits():
    up = HPAScalingRules(select_policy="Max", policies=[HPAScalingPolicy(type="Pods", value=4, period_seconds=15),
                                                        HPAScalingPolicy(type="Percent", value=100, period_seconds=15)])
    assert scale_up_limit(1, [], [], up, NOW) == 5  # max(1 + 4, 2)
    assert scale_up_limit(10, [], [], up, NOW) == 20
    # 4 pods were added 5 s ago: the period started at 6
    assert scale_up_limit(10, [ScaleEvent(4, NOW - 5)], [], up, NOW) == 12
    up.select_policy = "Min"
    assert scale_up_limit(10, [], [], up, NOW) == 14
    up.select_policy = "Disabled"
    assert scale_up_limit(10, [], [], up, NOW) == 10
    down = HPAScalingRules(select_policy="Max", policies=[HPAScalingPolicy(type="Pods", value=1, period_seconds=60)])
    assert scale_down_limit(5, [], [], down, NOW) == 4
    assert scale_down_limit(4, [], [ScaleEvent(1, NOW - 30)], down, NOW) == 4  # one already went this minute
    assert scale_down_limit(4, [], [ScaleEvent(1, NOW - 61)], down, NOW) == 3


# --------------------------------------------------------------------------- the controller on a cluster
def make_cluster() -> tuple[Cluster, Clock]:
    return ready_cluster(3, seed=None)


def seed_deployment(replicas: int = 1, resources: Optional[dict] = None) -> Deployment:
    res = resources if resources is not None else {"requests": {"cpu": "10m"}, "limits": {"cpu": "50m"}}
    return Deployment.model_validate({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "sysnet4admin/echo-hname",
                                                       "resources": res}]}}}})


def run_pods(c: Cluster, started: float) -> list[Pod]:
    """The kubelet's part: every pod with an address runs and is ready (since `started`)."""
    c.reconcile()
    for p in c.store.list("Pod"):
        if p.status.pod_ip and not p.metadata.deletion_timestamp and p.status.phase != "Running":
            p.status.phase = "Running"
            p.status.start_time = rfc3339(started)
            set_condition(p, "Ready", True, rfc3339(started))
            c.store.update(p)
    for p in [p for p in c.store.list("Pod") if p.metadata.deletion_timestamp]:
        c.finalize_pod(p)
    c.reconcile()
    return [p for p in c.store.list("Pod") if not p.metadata.deletion_timestamp]


def usage(c: Cluster, cpu_milli: int, t: float) -> dict:
    return {(p.metadata.namespace, p.metadata.name): PodMetrics(cpu_milli, 5 << 20, t, 15.0)
            for p in c.store.list("Pod") if not p.metadata.deletion_timestamp}


def replicas(c: Cluster) -> int:
    return c.store.get("Deployment", "default", "web").spec.replicas


def conditions(hpa) -> dict:
    return {x.type: (x.status, x.reason) for x in hpa.status.conditions or []}


def events(c: Cluster) -> list[tuple[str, str]]:
    return [(e.reason, e.message) for e in c.events if e.kind == "HorizontalPodAutoscaler"]


def setup_autoscaled(behavior=None, **settings):
    c, clock = make_cluster()
    c.apply([seed_deployment()])
    run_pods(c, NOW - 600)
    hpa = new_hpa("web", "default", "Deployment", "web", 10, min_replicas=1, cpu_percent=50)
    if behavior is not None:
        hpa.spec.behavior = behavior
        default_hpa(hpa)
    c.apply([hpa])
    ctl = HorizontalController(HpaSettings(**settings))
    return c, clock, ctl


def test_scale_up_under_load_then_down_after_the_stabilization_window():
    c, clock, ctl = setup_autoscaled()
    # the seed's pods: 10m requested, capped at 50m; under load each uses its whole 50m = 500%
    nxt = ctl.reconcile(c, usage(c, 50, clock.t - 1), clock.t)
    assert nxt == clock.t + 15
    hpa = c.store.get("HorizontalPodAutoscaler", "default", "web")
    assert replicas(c) == 4  # ceil(1 x 500 / 50) = 10, but at most max(2 x 1, 4) at once
    assert events(c)[-1] == ("SuccessfulRescale",
                             "New size: 4; reason: cpu resource utilization (percentage of request) above target")
    assert hpa.status.current_replicas == 1 and hpa.status.desired_replicas == 4
    assert hpa.status.last_scale_time == rfc3339(clock.t)
    cur = hpa.status.current_metrics[0].resource
    assert (cur.name, cur.current.average_utilization, cur.current.average_value) == ("cpu", 500, "50m")
    assert conditions(hpa) == {"AbleToScale": ("True", "SucceededRescale"),
                               "ScalingActive": ("True", "ValidMetricFound"),
                               "ScalingLimited": ("True", "ScaleUpLimit")}
    assert hpa_row(hpa.dump(), clock.t)[:6] == ["web", "Deployment/web", "cpu: 500%/50%", "1", "10",
                                                               "1"]
    # not due again before the sync period
    clock.t += 5
    assert ctl.reconcile(c, usage(c, 50, clock.t), clock.t) == NOW + 15
    # the new pods start (their cpu counts once a window has passed since they became ready)
    run_pods(c, clock.t - 20)
    clock.t = NOW + 15
    ctl.reconcile(c, usage(c, 50, clock.t - 1), clock.t)
    assert replicas(c) == 8  # still above target: 4 -> ceil(4 x 10) = 40, limited to 2 x 4
    # load stops: 1m each (10%): the recommendation falls, but the window keeps the highest one
    # (40 at NOW + 15) for 300 s, so replicas even go on up to maxReplicas, as upstream does
    run_pods(c, clock.t)
    history = {}
    for step in range(1, 45):
        clock.t = NOW + 15 + 15 * step
        ctl.reconcile(c, usage(c, 1, clock.t - 1), clock.t)
        run_pods(c, clock.t)
        history[clock.t - NOW] = replicas(c)
    assert all(r == 10 for t, r in history.items() if t <= 315), history
    assert history[330] == 2  # ceil(10 x 10% / 50%): the 40 has left the window
    assert history[630] == 2 and history[645] == 1  # the 2 of 330 s (with 10 pods) is the last to go
    hpa = c.store.get("HorizontalPodAutoscaler", "default", "web")
    assert ("SuccessfulRescale", "New size: 1; reason: All metrics below target") in events(c)
    assert conditions(hpa)["ScalingLimited"] == ("False", "DesiredWithinRange")
    assert conditions(hpa)["AbleToScale"] == ("True", "ReadyForNewScale")


def test_short_windows_scale_down_quickly():
    c, clock, ctl = setup_autoscaled(sync_period=2, downscale_stabilization=10)
    ctl.reconcile(c, usage(c, 50, clock.t), clock.t)
    assert replicas(c) == 4
    run_pods(c, clock.t - 60)
    t0 = clock.t
    seen = []
    while clock.t < t0 + 30:
        clock.t += 2
        ctl.reconcile(c, usage(c, 1, clock.t), clock.t)
        run_pods(c, clock.t - 60)
        seen.append((clock.t - t0, replicas(c)))
    assert all(r >= 4 for t, r in seen if t < 10), seen  # nothing goes down within the 10 s window
    assert seen[-1][1] == 1, seen
    # 10 -> 2 once the high recommendation left the window, -> 1 when the last 2 (of t=12) did
    assert [t for t, r in seen if r == 2][0] == 12 and next(t for t, r in seen if r == 1) == 24, seen


def test_within_tolerance_no_change_and_stabilized_condition():
    c, clock, ctl = setup_autoscaled()
    ctl.reconcile(c, usage(c, 5, clock.t), clock.t)  # exactly 50%: no change
    hpa = c.store.get("HorizontalPodAutoscaler", "default", "web")
    assert replicas(c) == 1 and hpa.status.desired_replicas == 1 and hpa.status.last_scale_time is None
    assert conditions(hpa)["AbleToScale"] == ("True", "ReadyForNewScale")
    assert not [e for e in events(c) if e[0] == "SuccessfulRescale"]
    assert hpa_row(hpa.dump(), clock.t)[2] == "cpu: 50%/50%"


def test_no_metrics_yet_reports_unknown_and_the_upstream_messages():
    c, clock, ctl = setup_autoscaled()
    ctl.reconcile(c, {}, clock.t)
    hpa = c.store.get("HorizontalPodAutoscaler", "default", "web")
    assert replicas(c) == 1 and hpa.status.current_replicas == 1
    assert conditions(hpa)["ScalingActive"] == ("False", "FailedGetResourceMetric")
    msg = "failed to get cpu utilization: unable to get metrics for resource cpu: no metrics returned from " \
          "resource metrics API"
    assert ("FailedGetResourceMetric", msg) in events(c)
    assert ("FailedComputeMetricsReplicas", "invalid metrics (1 invalid out of 1), first error is: failed to get "
            "cpu resource metric value: " + msg) in events(c)
    assert hpa_row(hpa.dump(), clock.t)[2] == "cpu: <unknown>/50%"
    # metrics arrive at the next sync
    clock.t += 15
    ctl.reconcile(c, usage(c, 2, clock.t), clock.t)
    hpa = c.store.get("HorizontalPodAutoscaler", "default", "web")
    assert conditions(hpa)["ScalingActive"] == ("True", "ValidMetricFound")
    assert hpa_row(hpa.dump(), clock.t)[2] == "cpu: 20%/50%"


def test_pods_without_requests_cannot_be_autoscaled_on_utilization():
    c, clock = make_cluster()
    c.apply([seed_deployment(resources={})])
    run_pods(c, NOW - 600)
    c.apply([new_hpa("web", "default", "Deployment", "web", 5, cpu_percent=50)])
    ctl = HorizontalController()
    ctl.reconcile(c, usage(c, 5, clock.t), clock.t)
    pod = c.store.list("Pod")[0].metadata.name
    assert (f"failed to get cpu utilization: missing request for cpu in container c of Pod {pod}"
            in [m for r, m in events(c) if r == "FailedGetResourceMetric"])


def test_target_missing_and_min_max_and_disabled():
    c, clock = make_cluster()
    c.apply([new_hpa("web", "default", "Deployment", "web", 5, min_replicas=2, cpu_percent=50)])
    ctl = HorizontalController()
    ctl.reconcile(c, {}, clock.t)
    hpa = c.store.get("HorizontalPodAutoscaler", "default", "web")
    assert conditions(hpa)["AbleToScale"] == ("False", "FailedGetScale")
    assert ("FailedGetScale", 'deployments.apps "web" not found') in events(c)
    # the deployment appears with 1 replica: below minReplicas
    c.apply([seed_deployment(replicas=1)])
    run_pods(c, NOW - 600)
    clock.t += 15
    ctl.reconcile(c, {}, clock.t)
    assert replicas(c) == 2
    assert ("SuccessfulRescale", "New size: 2; reason: Current number of replicas below Spec.MinReplicas") in events(c)
    # scaled by hand above maxReplicas
    c.scale("Deployment", "default", "web", 9)
    clock.t += 15
    ctl.reconcile(c, {}, clock.t)
    assert replicas(c) == 5
    assert ("SuccessfulRescale", "New size: 5; reason: Current number of replicas above Spec.MaxReplicas") in events(c)
    # scaled to zero: autoscaling is off
    c.scale("Deployment", "default", "web", 0)
    clock.t += 15
    ctl.reconcile(c, {}, clock.t)
    hpa = c.store.get("HorizontalPodAutoscaler", "default", "web")
    assert replicas(c) == 0 and conditions(hpa)["ScalingActive"] == ("False", "ScalingDisabled")


def test_behavior_scale_down_one_pod_per_period():
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 0,
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}
    from netemu.spec.autoscaling import HorizontalPodAutoscalerBehavior

    c, clock, ctl = setup_autoscaled(behavior=HorizontalPodAutoscalerBehavior.model_validate(behavior))
    c.scale("Deployment", "default", "web", 5)
    run_pods(c, NOW - 600)
    history = []
    for _ in range(12):
        ctl.reconcile(c, usage(c, 1, clock.t), clock.t)
        run_pods(c, NOW - 600)
        history.append(replicas(c))
        clock.t += 15
    # one pod per minute: 5 -> 4 at once, then one more every 60 s (4 syncs)
    assert history[:9] == [4, 4, 4, 4, 3, 3, 3, 3, 2], history
    hpa = c.store.get("HorizontalPodAutoscaler", "default", "web")
    assert conditions(hpa)["ScalingLimited"] == ("True", "ScaleDownLimit")


def test_behavior_default_scale_up_rules():
    from netemu.spec.autoscaling import HorizontalPodAutoscalerBehavior

    c, clock, ctl = setup_autoscaled(behavior=HorizontalPodAutoscalerBehavior())
    ctl.reconcile(c, usage(c, 50, clock.t), clock.t)
    assert replicas(c) == 5  # max(1 + 4 pods, 1 + 100%) per 15 s
    hpa = c.store.get("HorizontalPodAutoscaler", "default", "web")
    assert conditions(hpa)["ScalingLimited"] == ("True", "ScaleUpLimit")


def test_deleted_hpa_is_forgotten():
    c, clock, ctl = setup_autoscaled()
    ctl.reconcile(c, usage(c, 50, clock.t), clock.t)
    c.delete("HorizontalPodAutoscaler", "default", "web")
    assert ctl.reconcile(c, {}, clock.t + 15) is None
    assert ctl._state == {}


# --------------------------------------------------------------------------- objects
def test_autoscale_creates_what_kubectl_creates():
    hpa = new_hpa("php-apache", "default", "Deployment", "php-apache", 10, min_replicas=1, cpu_percent=50)
    assert hpa.dump() == {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "php-apache", "namespace": "default"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "php-apache", "apiVersion": "apps/v1"},
                 "minReplicas": 1, "maxReplicas": 10,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": 50}}}]},
        "status": {"currentReplicas": 0, "desiredReplicas": 0}}
    # no --cpu-percent: the API server's 80% default
    assert new_hpa("x", "default", "Deployment", "x", 3).spec.metrics[0].resource.target.average_utilization == 80


def test_v1_object_becomes_v2():
    v1 = HorizontalPodAutoscaler.model_validate({
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "a"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"},
                 "maxReplicas": 4, "targetCPUUtilizationPercentage": 60}})
    assert effective_metrics(v1)[0].resource.target.average_utilization == 60
    default_hpa(v1)
    d = v1.dump()
    assert d["apiVersion"] == "autoscaling/v2" and "targetCPUUtilizationPercentage" not in d["spec"]
    assert d["spec"]["minReplicas"] == 1
    assert d["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}


def test_behavior_defaults():
    hpa = HorizontalPodAutoscaler.model_validate({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "a"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "a"}, "maxReplicas": 4,
                 "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}}}})
    b = default_hpa(hpa).spec.behavior
    assert b.scale_up.stabilization_window_seconds == 0 and b.scale_up.select_policy == "Max"
    assert [(p.type, p.value, p.period_seconds) for p in b.scale_up.policies] == [("Pods", 4, 15), ("Percent", 100, 15)]
    assert b.scale_down.stabilization_window_seconds == 30
    assert [(p.type, p.value) for p in b.scale_down.policies] == [("Percent", 100)]


def test_validation_messages():
    bad = HorizontalPodAutoscaler.model_validate({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "a"},
        "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "a"}, "minReplicas": 5, "maxReplicas": 2,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}},
                             {"type": "Resource", "resource": {"name": "memory",
                                                               "target": {"type": "AverageValue",
                                                                          "averageValue": "lots"}}},
                             {"type": "Pods", "pods": {"metric": {"name": "qps"},
                                                       "target": {"type": "AverageValue", "averageValue": "1k"}}}],
                 "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 4000}]}}}})
    errors, warnings = hpa_problems(bad)
    errors = dict(errors)
    assert errors["spec.maxReplicas"] == "must be greater than or equal to `minReplicas` (2 < 5)"
    assert errors["spec.metrics[0].resource.target.averageUtilization"] == "must be set for type Utilization"
    assert "is not a quantity" in errors["spec.metrics[1].resource.target.averageValue"]
    assert "spec.behavior.scaleUp.policies[0].value" in errors
    assert "spec.behavior.scaleUp.policies[0].periodSeconds" in errors
    assert {p for p, _ in warnings} == {"spec.scaleTargetRef.kind", "spec.metrics[2].type"}
    mixed = HorizontalPodAutoscaler.model_validate({
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "a"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "a"}, "maxReplicas": 2,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                               "target": {"type": "Utilization",
                                                                          "averageUtilization": 5}}}]}})
    assert dict(hpa_problems(default_hpa(mixed))[0])["spec"].startswith("metrics and behavior are autoscaling/v2")


def test_targets_column():
    from netemu.api.tables import hpa_targets as server_targets

    def hpa_targets(h: dict) -> str:  # the server's TARGETS cell, as `get hpa` prints it
        return server_targets(h["spec"]["metrics"], h["status"]["currentMetrics"])

    def h(metrics, current=None):
        return {"spec": {"metrics": metrics}, "status": {"currentMetrics": current or []}}
    cpu = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}
    mem = {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue",
                                                                         "averageValue": "100Mi"}}}
    assert hpa_targets(h([])) == "<none>"
    assert hpa_targets(h([cpu])) == "cpu: <unknown>/50%"
    assert hpa_targets(h([cpu], [{"type": "Resource", "resource": {"name": "cpu", "current": {
        "averageUtilization": 12, "averageValue": "1200m"}}}])) == "cpu: 12%/50%"
    assert hpa_targets(h([cpu, mem], [{"type": ""}, {"type": "Resource", "resource": {
        "name": "memory", "current": {"averageValue": "10485760"}}}])) == "cpu: <unknown>/50%, memory: 10485760/100Mi"
    assert hpa_targets(h([cpu, mem, cpu])) == "cpu: <unknown>/50%, memory: <unknown>/100Mi + 1 more..."


def test_get_hpa_table_and_describe():
    from netemu.api import tables as api_tables
    from netemu.cli import tables

    hpa = new_hpa("php-apache", "default", "Deployment", "php-apache", 10, min_replicas=1, cpu_percent=50).dump()
    hpa["metadata"]["creationTimestamp"] = rfc3339(NOW - 90)
    hpa["status"] = {"currentReplicas": 3, "desiredReplicas": 3, "currentMetrics": [
        {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 61,
                                                                     "averageValue": "122m"}}}],
        "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale",
                        "message": "recommended size matches current size"}]}
    text = tables.print_table(api_tables.table("HorizontalPodAutoscaler", "autoscaling", [hpa], NOW))
    assert text.splitlines() == [
        "NAME         REFERENCE               TARGETS        MINPODS   MAXPODS   REPLICAS   AGE",
        "php-apache   Deployment/php-apache   cpu: 61%/50%   1         10        3          90s"]
    d = top_cmds.describe_hpa(hpa)
    assert "Reference:" in d and "Deployment/php-apache" in d
    assert "resource cpu on pods  (as a percentage of request):  61% (122m) / 50%" in d
    assert "Deployment pods:" in d and "3 current / 3 desired" in d
    assert "  AbleToScale   True     ReadyForNewScale   recommended size matches current size" in d


def _wired() -> bool:
    try:
        from netemu.spec import defaults, models

        return "HorizontalPodAutoscaler" in models.KINDS and "autoscaling" in open(defaults.__file__).read()
    except Exception:
        return False


@pytest.mark.skipif(not _wired(), reason="needs the lead's wiring of netemu.spec.autoscaling (models, defaults)")
def test_lab_files_with_hpas_load(tmp_path):
    from netemu.spec.errors import SpecError
    from netemu.spec.load import load_files

    f = tmp_path / "hpa.yaml"
    f.write_text("""\
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata: {name: v1}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 5
  targetCPUUtilizationPercentage: 50
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: v2}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 10
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
""")
    spec = load_files([str(f)])
    v1, v2 = spec.objects
    assert v1.api_version == "autoscaling/v2" and v1.spec.metrics[0].resource.target.average_utilization == 50
    assert v1.metadata.namespace == "default" and v1.spec.min_replicas == 1
    assert v2.spec.max_replicas == 10
    f.write_text("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: x}\nspec:\n"
                 "  scaleTargetRef: {kind: Deployment, name: web}\n  minReplicas: 3\n  maxReplicas: 2\n")
    with pytest.raises(SpecError, match="maxReplicas: must be greater than or equal to `minReplicas`"):
        load_files([str(f)])
