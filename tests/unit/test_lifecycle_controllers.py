"""The controllers of issue 16, without root: nodes' capacity, taint-based eviction, DaemonSets, Jobs,
PodDisruptionBudgets and eviction, the API server's pod admission, the kubelet's first status, and the
validation of what steers scheduling."""
from __future__ import annotations

import pytest

from netemu.control import disruption, nodes
from netemu.control.cluster import Cluster
from netemu.control.pods import condition
from netemu.spec.errors import SpecError
from netemu.spec.load import load_text
from netemu.spec.models import DaemonSet, Job, Pod, PodDisruptionBudget, Taint
from test_control import Clock, deployment, kubelet_runs_everything
from clusters import ready_cluster


def cluster(workers: int = 3, **lab_spec) -> tuple[Cluster, Clock]:
    return ready_cluster(workers, 1, **lab_spec)


def finalize_terminating(c: Cluster) -> None:
    for p in list(c.store.list("Pod")):
        if p.metadata.deletion_timestamp:
            c.finalize_pod(p)
    c.reconcile()


# ---------------------------------------------------------------------------- nodes
def test_nodes_report_the_seed_vms_capacity_and_kubelets_allocatable():
    c, _ = cluster()
    m, w = c.store.get("Node", "", "m-k8s"), c.store.get("Node", "", "w1-k8s")
    assert m.status.capacity["cpu"] == "2" and m.status.capacity["memory"] == "3145728Ki"
    assert w.status.capacity == {"cpu": "1", "memory": "2621440Ki", "pods": "110", "ephemeral-storage": "41943040Ki",
                                 "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
    # allocatable: less kubelet's hard eviction thresholds (memory.available 100Mi, nodefs.available 10%)
    assert w.status.allocatable["memory"] == f"{2621440 - 102400}Ki"
    assert w.status.allocatable["ephemeral-storage"] == str(int(41943040 * 1024 * 0.9))
    assert [x.type for x in w.status.conditions] == ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
    c.reconcile()
    assert c.store.find("Lease", "kube-node-lease", "w1-k8s") is not None


def test_capacity_is_set_per_node_in_the_lab_document():
    text = """apiVersion: netemu.dev/v1alpha1
kind: Lab
spec:
  nodes:
  - {name: m-k8s, ip: 192.168.1.10, role: control-plane}
  - name: big
    ip: 192.168.1.101
    capacity: {cpu: 16, memory: 64Gi, pods: 250, example.com/gpu: 2}
    allocatable: {cpu: 15500m}
    taints: [{key: dedicated, value: gpu, effect: NoSchedule}]
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {containers: [{name: c, image: nginx}]}
"""
    lab = load_text(text, "lab.yaml").lab
    c = Cluster(lab)
    c.bootstrap()
    big = c.store.get("Node", "", "big")
    assert big.status.capacity["cpu"] == "16" and big.status.capacity["example.com/gpu"] == "2"
    assert big.status.allocatable["cpu"] == "15500m" and big.status.allocatable["pods"] == "250"
    assert [(t.key, t.effect) for t in big.spec.taints][0] == ("dedicated", "NoSchedule")
    bad = text.replace("allocatable: {cpu: 15500m}", "allocatable: {cpu: 17, pods: 1.5}").replace(
        "example.com/gpu: 2", "gpu: 2")
    with pytest.raises(SpecError) as e:
        load_text(bad, "lab.yaml")
    text_ = "\n".join(e.value.errors)
    assert "spec.nodes[1].allocatable.cpu: must be <= capacity (16), got 17" in text_
    assert "spec.nodes[1].capacity.gpu: must be cpu, memory, pods, ephemeral-storage" in text_


def test_a_wide_node_subnet_raises_max_pods_as_far_as_the_bridge_holds():
    c, _ = cluster(node_pod_prefix=23)
    assert c.store.get("Node", "", "w1-k8s").status.capacity["pods"] == str(2 ** 9 - 3)
    c, _ = cluster(node_pod_prefix=21)
    assert c.store.get("Node", "", "w1-k8s").status.capacity["pods"] == "1023"


# ---------------------------------------------------------------------------- taints and eviction
def test_pods_get_default_tolerations_and_leave_a_failed_node_after_them():
    c, clock = cluster(pod_eviction_timeout_seconds=7)
    c.apply([deployment(replicas=3)])
    c.reconcile()
    kubelet_runs_everything(c)
    p = c.store.list("Pod", "default")[0]
    tols = {(t.key, t.effect, t.toleration_seconds) for t in p.spec.tolerations}
    assert ("node.kubernetes.io/not-ready", "NoExecute", 7) in tols
    assert ("node.kubernetes.io/unreachable", "NoExecute", 7) in tols
    node = p.spec.node_name
    nodes.set_ready(c, c.store.get("Node", "", node), False, "NodeStatusUnknown", "gone")
    n = c.store.get("Node", "", node)
    assert {(t.key, t.effect) for t in n.spec.taints} >= {("node.kubernetes.io/unreachable", "NoExecute"),
                                                            ("node.kubernetes.io/unreachable", "NoSchedule")}
    c.reconcile()
    assert not c.store.get("Pod", "default", p.metadata.name).metadata.deletion_timestamp
    clock.t += 7.1
    c.reconcile()
    assert c.store.get("Pod", "default", p.metadata.name).metadata.deletion_timestamp
    assert any(e.reason == "TaintManagerEviction" for e in c.events_for("Pod", "default", p.metadata.name))


def test_no_execute_taints_evict_at_once_or_after_toleration_seconds():
    c, clock = cluster(workers=1)
    pods = [Pod.model_validate({"metadata": {"name": n, "namespace": "default"},
                                "spec": {"containers": [{"name": "c", "image": "nginx"}], "tolerations": tol}})
            for n, tol in (("plain", None),
                           ("brief", [{"key": "maint", "operator": "Exists", "effect": "NoExecute",
                                       "tolerationSeconds": 30}]),
                           ("forever", [{"key": "maint", "operator": "Exists", "effect": "NoExecute"}]))]
    c.apply(pods)
    c.reconcile()
    kubelet_runs_everything(c)
    n = c.store.get("Node", "", "w1-k8s")
    n.spec.taints = [Taint(key="maint", effect="NoExecute")]
    c.store.update(n)
    c.reconcile()
    state = lambda name: bool(c.store.get("Pod", "default", name).metadata.deletion_timestamp)  # noqa: E731
    assert (state("plain"), state("brief"), state("forever")) == (True, False, False)
    assert c.store.get("Node", "", "w1-k8s").spec.taints[0].time_added  # stamped, as the API server does
    clock.t += 31
    c.reconcile()
    assert (state("brief"), state("forever")) == (True, False)


def test_deletion_marks_the_grace_period_as_the_api_server_does():
    c, clock = cluster(workers=1)
    p = Pod.model_validate({"metadata": {"name": "p", "namespace": "default"},
                            "spec": {"containers": [{"name": "c", "image": "nginx"}],
                                     "terminationGracePeriodSeconds": 10}})
    c.apply([p])
    c.reconcile()
    kubelet_runs_everything(c)
    c.delete("Pod", "default", "p")
    p = c.store.get("Pod", "default", "p")
    from netemu.control.store import parse_rfc3339

    assert p.metadata.deletion_grace_period_seconds == 10
    assert parse_rfc3339(p.metadata.deletion_timestamp) == int(clock.t) + 10


# ---------------------------------------------------------------------------- admission and the first status
def test_pods_get_qos_class_requests_from_limits_and_priority():
    c, _ = cluster(workers=1)
    p = Pod.model_validate({"metadata": {"name": "p", "namespace": "default"},
                            "spec": {"priorityClassName": "system-cluster-critical",
                                     "containers": [{"name": "c", "image": "nginx",
                                                     "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}})
    from netemu.spec.defaults import apply_defaults

    apply_defaults(p)
    c.apply([p])
    p = c.store.get("Pod", "default", "p")
    assert p.status.qos_class == "Guaranteed" and p.spec.containers[0].resources.requests == {"cpu": "1",
                                                                                             "memory": "1Gi"}
    assert p.spec.priority == 2000000000 and p.spec.preemption_policy == "PreemptLowerPriority"


def test_the_kubelets_first_status_is_container_creating():
    c, _ = cluster(workers=1)
    p = Pod.model_validate({"metadata": {"name": "p", "namespace": "default"},
                            "spec": {"containers": [{"name": "c", "image": "nginx"}],
                                     "initContainers": [{"name": "setup", "image": "busybox"}]}})
    seen = []
    c.store.listeners.append(lambda kind, ev, obj: kind == "Pod" and seen.append(
        (ev, obj.spec.node_name, obj.status.phase, [s.state.waiting.reason for s in obj.status.container_statuses or []
                                                     if s.state.waiting])))
    c.apply([p])
    c.reconcile()
    assert seen[0][:3] == ("ADDED", None, "Pending")
    assert seen[1][1] == "w1-k8s"  # bound
    assert seen[2][2:] == ("Pending", ["PodInitializing"])  # behind an init container (Init:0/1)
    p = c.store.get("Pod", "default", "p")
    assert p.status.init_container_statuses[0].state.waiting.reason == "PodInitializing"
    assert condition(p, "Initialized").status == "False"


# ---------------------------------------------------------------------------- DaemonSets
def daemonset(name="agent", **spec) -> DaemonSet:
    ds = DaemonSet.model_validate({"metadata": {"name": name, "namespace": "default"},
                                   "spec": {"selector": {"matchLabels": {"app": name}},
                                            "template": {"metadata": {"labels": {"app": name}},
                                                         "spec": {"containers": [{"name": "c", "image": "nginx"}],
                                                                  **spec}}}})
    from netemu.spec.defaults import apply_defaults

    return apply_defaults(ds)


def ds_pods(c: Cluster, name="agent") -> dict[str, Pod]:
    return {p.spec.node_name: p for p in c.store.list("Pod", "default")
            if p.metadata.name.startswith(name + "-") and not p.metadata.deletion_timestamp}


def test_a_daemonset_runs_one_pod_per_eligible_node():
    from netemu.control.kubeadm import kube_proxy_daemonset

    c, _ = cluster()
    c.apply([kube_proxy_daemonset("iptables"), daemonset()])
    c.reconcile()
    kubelet_runs_everything(c)
    pods = ds_pods(c)
    assert sorted(pods) == ["w1-k8s", "w2-k8s", "w3-k8s"]  # the control plane is tainted
    p = pods["w1-k8s"]
    assert p.metadata.labels["controller-revision-hash"] and p.metadata.labels["pod-template-generation"] == "1"
    keys = {(t.key, t.effect) for t in p.spec.tolerations}
    assert ("node.kubernetes.io/unschedulable", "NoSchedule") in keys
    assert ("node.kubernetes.io/unreachable", "NoExecute") in keys
    ds = c.store.get("DaemonSet", "default", "agent")
    st = ds.status
    assert (st.desired_number_scheduled, st.current_number_scheduled, st.number_ready, st.updated_number_scheduled,
            st.number_available, st.observed_generation) == (3, 3, 3, 3, 3, 1)
    assert len(c.store.list("ControllerRevision", "default")) == 1
    # the lab's own kube-proxy DaemonSet is left to kubeadm.py
    proxy = c.store.get("DaemonSet", "kube-system", "kube-proxy")
    assert proxy.metadata.annotations["netemu.dev/run-by"] == "control-process"
    assert len([p for p in c.store.list("Pod", "kube-system") if p.metadata.name.startswith("kube-proxy-")]) == 4


def test_a_daemonset_follows_taints_cordon_selector_and_tolerations():
    c, _ = cluster()
    c.apply([daemonset()])
    c.reconcile()
    kubelet_runs_everything(c)
    # cordon: its pod stays (daemon pods tolerate node.kubernetes.io/unschedulable), and comes back there
    nodes.set_unschedulable(c, c.store.get("Node", "", "w3-k8s"), True)
    c.reconcile()
    gone = ds_pods(c)["w3-k8s"]
    c.delete_pod(gone)
    finalize_terminating(c)
    assert "w3-k8s" in ds_pods(c)
    # NoSchedule: no new pod, the one there stays; NoExecute: it goes
    n = c.store.get("Node", "", "w2-k8s")
    n.spec.taints = [Taint(key="dedicated", value="db", effect="NoSchedule")]
    c.store.update(n)
    c.reconcile()
    assert "w2-k8s" in ds_pods(c) and c.store.get("DaemonSet", "default", "agent").status.desired_number_scheduled == 2
    n.spec.taints = [Taint(key="dedicated", value="db", effect="NoExecute")]
    c.store.update(n)
    c.reconcile()
    finalize_terminating(c)
    assert sorted(ds_pods(c)) == ["w1-k8s", "w3-k8s"]
    # a toleration of everything reaches the control plane too; a nodeSelector narrows it
    c.apply([daemonset("all", tolerations=[{"operator": "Exists"}])])
    c.apply([daemonset("ssd", nodeSelector={"disk": "ssd"})])
    w1 = c.store.get("Node", "", "w1-k8s")
    w1.metadata.labels = {**w1.metadata.labels, "disk": "ssd"}
    c.store.update(w1)
    c.reconcile()
    assert sorted(ds_pods(c, "all")) == ["m-k8s", "w1-k8s", "w2-k8s", "w3-k8s"]
    assert sorted(ds_pods(c, "ssd")) == ["w1-k8s"]


def test_a_daemonset_keeps_its_pod_through_a_node_down_and_up():
    c, clock = cluster()
    c.apply([daemonset()])
    c.reconcile()
    kubelet_runs_everything(c)
    before = ds_pods(c)["w2-k8s"].metadata.name
    nodes.set_ready(c, c.store.get("Node", "", "w2-k8s"), False, "NodeStatusUnknown", "gone")
    clock.t += 600
    c.reconcile()
    assert ds_pods(c)["w2-k8s"].metadata.name == before  # tolerates unreachable:NoExecute for ever
    st = c.store.get("DaemonSet", "default", "agent").status
    assert (st.desired_number_scheduled, st.number_misscheduled) == (2, 1)
    nodes.set_ready(c, c.store.get("Node", "", "w2-k8s"), True, "KubeletReady", "ok")
    c.reconcile()
    assert c.store.get("DaemonSet", "default", "agent").status.desired_number_scheduled == 3


def test_a_daemonset_rolls_out_node_by_node():
    c, _ = cluster()
    c.apply([daemonset()])
    c.reconcile()
    kubelet_runs_everything(c)
    ds = c.store.get("DaemonSet", "default", "agent")
    ds.spec.template.spec.containers[0].image = "nginx:1.27"
    ds.metadata.generation += 1
    c.store.update(ds)
    for _ in range(10):
        c.reconcile()
        old = [p for p in ds_pods(c).values() if p.spec.containers[0].image == "nginx"]
        terminating = [p for p in c.store.list("Pod", "default") if p.metadata.deletion_timestamp]
        assert len(terminating) <= 1  # maxUnavailable 1
        finalize_terminating(c)
        kubelet_runs_everything(c)
        if not old and len(ds_pods(c)) == 3:
            break
    assert {p.spec.containers[0].image for p in ds_pods(c).values()} == {"nginx:1.27"}
    revs = sorted(r.model_extra["revision"] for r in c.store.list("ControllerRevision", "default"))
    assert revs == [1, 2]
    st = c.store.get("DaemonSet", "default", "agent").status
    assert (st.updated_number_scheduled, st.observed_generation) == (3, 2)


def test_a_host_network_daemonset_runs_only_for_addons_the_lab_does():
    c, _ = cluster()
    speaker = [{"name": "s", "image": "quay.io/metallb/speaker:v0.14"}]
    c.apply([daemonset("speaker", hostNetwork=True, containers=speaker),
             daemonset("exporter", hostNetwork=True)])
    c.reconcile()
    speakers = ds_pods(c, "speaker")
    assert sorted(speakers) == ["w1-k8s", "w2-k8s", "w3-k8s"]
    assert all(p.status.phase == "Running" and p.status.pod_ip == p.status.host_ip for p in speakers.values())
    assert ds_pods(c, "exporter") == {}
    assert any(e.reason == "FailedCreate" for e in c.events_for("DaemonSet", "default", "exporter"))


# ---------------------------------------------------------------------------- Jobs
def job(name="pi", **spec) -> Job:
    j = Job.model_validate({"metadata": {"name": name, "namespace": "default"},
                            "spec": {"template": {"spec": {"restartPolicy": spec.pop("restartPolicy", "Never"),
                                                           "containers": [{"name": "c", "image": "busybox"}]}},
                                     **spec}})
    from netemu.spec.defaults import apply_defaults

    return apply_defaults(j)


def job_pods(c: Cluster, name="pi") -> list[Pod]:
    return [p for p in c.store.list("Pod", "default") if p.metadata.name.startswith(name + "-")]


def finish(c: Cluster, pod: Pod, ok: bool) -> None:
    pod.status.phase = "Succeeded" if ok else "Failed"
    c.store.update(pod)


def test_a_job_runs_parallel_pods_to_completions():
    c, clock = cluster()
    c.apply([job(completions=3, parallelism=2)])
    c.reconcile()
    j = c.store.get("Job", "default", "pi")
    uid = j.metadata.uid
    assert j.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    pods = job_pods(c)
    assert len(pods) == 2 and all(p.metadata.labels["batch.kubernetes.io/job-name"] == "pi" for p in pods)
    assert j.status.active == 2 and j.status.start_time
    finish(c, pods[0], True)
    c.reconcile()
    assert len([p for p in job_pods(c) if p.status.phase != "Succeeded"]) == 2
    for p in job_pods(c):
        if p.status.phase != "Succeeded":
            finish(c, p, True)
    c.reconcile()
    j = c.store.get("Job", "default", "pi")
    assert j.status.succeeded == 3 and j.status.active is None
    assert [(x.type, x.status) for x in j.status.conditions] == [("SuccessCriteriaMet", "True"), ("Complete", "True")]
    assert j.status.completion_time
    from netemu.api.tables import job_cells

    assert job_cells(j.dump(), clock.t)[1:3] == ["Complete", "3/3"]


def test_a_job_fails_past_its_backoff_limit_with_back_off_between_tries():
    c, clock = cluster(restart_backoff_seconds=10)
    c.apply([job(backoffLimit=1)])
    c.reconcile()
    finish(c, job_pods(c)[0], False)
    c.reconcile()
    assert len(job_pods(c)) == 1  # the replacement waits for its back-off
    clock.t += 10
    c.reconcile()
    assert len(job_pods(c)) == 2
    finish(c, [p for p in job_pods(c) if p.status.phase == "Pending"][0], False)
    c.reconcile()
    j = c.store.get("Job", "default", "pi")
    failed = next(x for x in j.status.conditions if x.type == "Failed")
    assert (failed.reason, failed.message) == ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    assert j.status.failed == 2


def test_an_indexed_job_names_its_pods_by_index():
    c, _ = cluster()
    c.apply([job(completions=3, parallelism=3, completionMode="Indexed")])
    c.reconcile()
    pods = sorted(job_pods(c), key=lambda p: p.metadata.name)
    assert [p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in pods] == ["0", "1", "2"]
    assert [p.metadata.name.rsplit("-", 1)[0] for p in pods] == ["pi-0", "pi-1", "pi-2"]
    assert pods[1].spec.hostname == "pi-1"
    env = pods[1].spec.containers[0].env[-1]
    assert env.name == "JOB_COMPLETION_INDEX" and "job-completion-index" in env.value_from.field_ref["fieldPath"]
    finish(c, pods[0], True)
    finish(c, pods[2], True)
    c.reconcile()
    assert c.store.get("Job", "default", "pi").status.completed_indexes == "0,2"


def test_job_deadline_and_ttl():
    c, clock = cluster()
    c.apply([job(activeDeadlineSeconds=30, ttlSecondsAfterFinished=5)])
    c.reconcile()
    clock.t += 31
    c.reconcile()
    j = c.store.get("Job", "default", "pi")
    assert next(x for x in j.status.conditions if x.type == "Failed").reason == "DeadlineExceeded"
    clock.t += 6
    c.reconcile()
    assert c.store.find("Job", "default", "pi") is None


# ---------------------------------------------------------------------------- PodDisruptionBudgets
def pdb(**spec) -> PodDisruptionBudget:
    return PodDisruptionBudget.model_validate({"metadata": {"name": "web-pdb", "namespace": "default"},
                                               "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec}})


@pytest.mark.parametrize("spec, expected, desired, allowed", [
    ({"minAvailable": 2}, 3, 2, 1),
    ({"minAvailable": "50%"}, 3, 2, 1),
    ({"maxUnavailable": 1}, 3, 2, 1),
    ({"maxUnavailable": "34%"}, 3, 1, 2),
    ({"minAvailable": 3}, 3, 3, 0),
])
def test_pdb_status(spec, expected, desired, allowed):
    c, _ = cluster()
    c.apply([deployment(replicas=3), pdb(**spec)])
    c.reconcile()
    kubelet_runs_everything(c)
    st = c.store.get("PodDisruptionBudget", "default", "web-pdb").status
    assert (st.expected_pods, st.desired_healthy, st.current_healthy, st.disruptions_allowed) == (
        expected, desired, 3, allowed)
    assert st.conditions[0].type == "DisruptionAllowed" and st.conditions[0].status == ("True" if allowed else "False")


def test_eviction_honours_the_budget():
    c, _ = cluster()
    c.apply([deployment(replicas=3), pdb(minAvailable=2)])
    c.reconcile()
    kubelet_runs_everything(c)
    pods = sorted(c.store.list("Pod", "default"), key=lambda p: p.metadata.name)
    disruption.evict(c, pods[0])
    assert pods[0].metadata.deletion_timestamp
    with pytest.raises(disruption.EvictionRefused) as e:
        disruption.evict(c, pods[1])
    st = e.value.status()
    assert (st["code"], st["reason"], st["message"]) == (
        429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.")
    assert st["details"]["causes"][0] == {"reason": "DisruptionBudget", "message":
                                          "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}
    assert not pods[1].metadata.deletion_timestamp
    # once the replacement is Ready, the next eviction is allowed
    finalize_terminating(c)
    kubelet_runs_everything(c)
    disruption.evict(c, pods[1])


# ---------------------------------------------------------------------------- validation
def errors_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as e:
        load_text(text, "t.yaml")
    return e.value.errors


POD = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: nginx%s}]\n%s"


@pytest.mark.parametrize("container, spec, want", [
    (", resources: {requests: {cpu: '-1'}}", "", "spec.containers[0].resources.requests.cpu: must be greater than or "
                                                 "equal to 0"),
    (", resources: {requests: {cpu: 2}, limits: {cpu: 1}}", "", "must be less than or equal to cpu limit of 1"),
    ("", "  tolerations: [{key: a, operator: Equal, value: b, effect: NoExecut}]",
     'spec.tolerations[0].effect: supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"'),
    ("", "  tolerations: [{key: a, operator: Exists, value: b}]",
     "spec.tolerations[0].operator: value must be empty when `operator` is 'Exists'"),
    ("", "  tolerations: [{key: a, tolerationSeconds: 5, effect: NoSchedule}]",
     "spec.tolerations[0].effect: effect must be 'NoExecute' when `tolerationSeconds` is set"),
    ("", "  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: "
         "[{matchExpressions: [{key: disk, operator: Is, values: [ssd]}]}]}}}",
     "matchExpressions[0].operator: not a valid selector operator"),
    ("", "  affinity: {podAntiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: "
         "[{labelSelector: {matchLabels: {app: x}}}]}}",
     "requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Required value: can not be empty"),
    ("", "  affinity: {podAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 0, "
         "podAffinityTerm: {topologyKey: zone}}]}}", "weight: must be in the range 1-100"),
    ("", "  topologySpreadConstraints: [{maxSkew: 0, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}]",
     "spec.topologySpreadConstraints[0].maxSkew: must be greater than zero"),
    (", lifecycle: {preStop: {}}", "", "spec.containers[0].lifecycle.preStop: Required value: must specify a "
                                       "handler type"),
])
def test_bad_scheduling_specs_are_refused(container, spec, want):
    errors = errors_of(POD % (container, spec))
    assert any(want in e for e in errors), errors


def test_bad_workload_specs_are_refused():
    job_text = ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  template:\n    spec:\n"
                "      containers: [{name: c, image: busybox}]\n")
    assert any('spec.template.spec.restartPolicy: supported values: "OnFailure", "Never"' in e
               for e in errors_of(job_text))
    pdb_text = ("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: b}\n"
                "spec: {minAvailable: 1, maxUnavailable: 1, selector: {matchLabels: {app: x}}}\n")
    assert any("spec: minAvailable and maxUnavailable cannot be both set" in e for e in errors_of(pdb_text))
    ds_text = ("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {a: b}}\n"
               "  template:\n    metadata: {labels: {a: c}}\n    spec: {containers: [{name: c, image: nginx}]}\n")
    assert any("do not match spec.selector" in e for e in errors_of(ds_text))


def test_kubelet_rejects_a_pod_bound_straight_to_a_node_without_room():
    c, _ = cluster(workers=1)
    p = Pod.model_validate({"metadata": {"name": "p", "namespace": "default"},
                            "spec": {"nodeName": "w1-k8s", "containers": [
                                {"name": "c", "image": "nginx", "resources": {"requests": {"cpu": "2"}}}]}})
    c.apply([p])
    c.reconcile()
    p = c.store.get("Pod", "default", "p")
    assert (p.status.phase, p.status.reason) == ("Failed", "OutOfcpu")
    assert p.status.message == ("Pod was rejected: Node didn't have enough resource: cpu, requested: 2000, used: 0, "
                                "capacity: 1000")
    assert not p.status.pod_ip


def test_netemu_describe_node_shows_allocated_resources_as_kubectl_prints_them():
    from netemu.cli.get_cmds import _node_resources

    pods = [{"metadata": {"name": "coredns-x", "namespace": "kube-system"},
             "spec": {"containers": [{"name": "c", "image": "coredns",
                                      "resources": {"requests": {"cpu": "100m", "memory": "70Mi"},
                                                    "limits": {"memory": "170Mi"}}}]}}]
    out = _node_resources({"cpu": "2", "memory": "3043328Ki", "ephemeral-storage": "38654705664", "pods": "110"},
                          pods)
    assert out[0] == "Non-terminated Pods:          (1 in total)"
    row = next(ln for ln in out if "coredns-x" in ln).split()
    assert row[2:10] == ["100m", "(5%)", "0", "(0%)", "70Mi", "(2%)", "170Mi", "(5%)"]
    alloc = out[out.index("Allocated resources:"):]
    assert [ln.split()[:3] for ln in alloc[4:6]] == [["cpu", "100m", "(5%)"], ["memory", "70Mi", "(2%)"]]
