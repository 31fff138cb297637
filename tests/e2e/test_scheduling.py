"""Scheduling and pod lifecycle as a real cluster shows them, driven by the real kubectl (issue 16): nodes'
capacity in `kubectl describe node`, seed 003's pod that does not fit, seed 002's `kubectl get pod -w`
while deleting and draining, taints and labels steering pods, a DaemonSet following cordon, taints and
a node going down and up, graceful deletion (preStop, grace period) losing no request, init containers,
Jobs. Skipped, with the reason, where kubectl is not installed.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from conftest import KUBECTL, NP_PODS, NP_SVC, curl, jsonpath, kube_lab, kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed on this machine")]


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    with kube_lab(tmp_path_factory, "s", NP_PODS.format(replicas=3) + NP_SVC) as lab:
        yield lab


def apply(lab, text: str) -> str:
    return kubectl(lab, "apply", "-f", "-", input=text).stdout


class Watch:
    """`kubectl get pods -w` in the background: the lines it printed."""

    def __init__(self, lab, *args: str):
        self.proc = subprocess.Popen([KUBECTL, "get", "pods", "-w", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=dict(os.environ, KUBECONFIG=lab.kubeconfig))
        time.sleep(1.0)

    def stop(self) -> list[str]:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return out.splitlines()


def rows(lines: list[str], name: str) -> list[str]:
    """The STATUS column of a pod's lines, in order."""
    return [ln.split()[2] for ln in lines if ln.split() and ln.split()[0] == name]


# ---------------------------------------------------------------------------- nodes
def test_describe_node_shows_capacity_allocated_resources_and_pods(kube):
    out = kubectl(kube, "describe", "node", "w1-k8s").stdout
    cap = out[out.index("Capacity:"):out.index("Allocatable:")]
    assert "cpu:                1" in cap and "memory:             2560Mi" in cap and "pods:               110" in cap
    alloc = out[out.index("Allocatable:"):out.index("System Info:")]
    assert "memory:             2460Mi" in alloc and "ephemeral-storage:  38654705664" in alloc
    assert "Non-terminated Pods:" in out and "Allocated resources:" in out
    assert "kube-proxy-" in out[out.index("Non-terminated Pods:"):]
    assert "HolderIdentity:  w1-k8s" in out  # the node's Lease
    m = kubectl(kube, "describe", "node", "m-k8s").stdout
    pods = m[m.index("Non-terminated Pods:"):m.index("Allocated resources:")]
    line = next(ln for ln in pods.splitlines() if "kube-apiserver-m-k8s" in ln)
    assert "250m (12%)" in line  # kubeadm's request, of the control plane's 2 CPUs
    allocated = m[m.index("Allocated resources:"):]
    assert any(ln.split()[:1] == ["cpu"] for ln in allocated.splitlines())


# ---------------------------------------------------------------------------- seed 003
def test_a_pod_that_does_not_fit_is_not_deployed(kube):
    kubectl(kube, "run", "big", "--image=nginx", "--overrides", json.dumps(
        {"spec": {"containers": [{"name": "big", "image": "nginx", "resources": {"requests": {"cpu": "64"}}}]}}))
    want = ("0/4 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
            "3 Insufficient cpu. preemption: 0/4 nodes are available: 1 Preemption is not helpful for scheduling, "
            "3 No preemption victims found for incoming pod.")
    kube.wait_for(lambda: want in kubectl(kube, "describe", "pod", "big").stdout, timeout=15,
                  what="the FailedScheduling event")
    desc = kubectl(kube, "describe", "pod", "big").stdout
    assert "Warning  FailedScheduling" in desc and "default-scheduler" in desc
    assert jsonpath(kube, "get", "pod", "big", "-o", "jsonpath={.status.phase}") == "Pending"
    assert jsonpath(kube, "get", "pod", "big", "-o", "jsonpath={.spec.nodeName}") == ""
    row = kubectl(kube, "get", "pod", "big").stdout.splitlines()[1].split()
    assert row[1:3] == ["0/1", "Pending"]
    kubectl(kube, "delete", "pod", "big", "--wait=false")


# ---------------------------------------------------------------------------- seed 002
def test_get_pod_watch_shows_the_lifecycle_while_deleting(kube):
    victim = jsonpath(kube, "get", "pods", "-l", "app=np-pods", "-o", "jsonpath={.items[0].metadata.name}")
    before = set(jsonpath(kube, "get", "pods", "-o", "jsonpath={.items[*].metadata.name}").split())
    w = Watch(kube)
    try:
        kubectl(kube, "delete", "pod", victim)
        time.sleep(2.0)
    finally:
        lines = w.stop()
    assert rows(lines, victim)[0] == "Running"
    assert "Terminating" in rows(lines, victim), lines
    new = [ln.split()[0] for ln in lines[1:] if ln.split()[0] not in before]
    assert new, lines
    states = rows(lines, new[0])
    # Pending (created, then bound), ContainerCreating (the kubelet took it), Running, in that order
    assert states[0] == "Pending" and "ContainerCreating" in states and states[-1] == "Running", lines
    assert states.index("ContainerCreating") > 0 and states.index("Running") > states.index("ContainerCreating")


def test_get_pod_watch_while_draining(kube):
    on_w3 = jsonpath(kube, "get", "pods", "-l", "app=np-pods", "--field-selector", "spec.nodeName=w3-k8s",
                     "-o", "jsonpath={.items[*].metadata.name}").split()
    if not on_w3:  # put one there
        kubectl(kube, "scale", "deployment", "np-pods", "--replicas=6")
        kubectl(kube, "rollout", "status", "deployment/np-pods", "--timeout=60s", timeout=90)
        on_w3 = jsonpath(kube, "get", "pods", "-l", "app=np-pods", "--field-selector", "spec.nodeName=w3-k8s",
                         "-o", "jsonpath={.items[*].metadata.name}").split()
    assert on_w3
    w = Watch(kube)
    try:
        out = kubectl(kube, "drain", "w3-k8s", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s",
                      timeout=90).stdout
        time.sleep(2.0)
    finally:
        lines = w.stop()
        kubectl(kube, "uncordon", "w3-k8s")
    assert "node/w3-k8s drained" in out
    for name in on_w3:
        assert "Terminating" in rows(lines, name), lines
    statuses = {s for ln in lines[1:] for s in ln.split()[2:3]}
    assert {"Pending", "ContainerCreating", "Running", "Terminating"} <= statuses, lines
    kubectl(kube, "scale", "deployment", "np-pods", "--replicas=3")


# ---------------------------------------------------------------------------- taints and labels
def test_taints_and_labels_steer_pods(kube):
    kubectl(kube, "label", "nodes", "w3-k8s", "disk=ssd")
    kubectl(kube, "taint", "nodes", "w2-k8s", "dedicated=db:NoSchedule")
    try:
        apply(kube, """\
apiVersion: v1
kind: Pod
metadata: {name: ssd-pod}
spec:
  nodeSelector: {disk: ssd}
  containers: [{name: c, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-pod}
spec:
  nodeSelector: {kubernetes.io/hostname: w2-k8s}
  tolerations: [{key: dedicated, operator: Equal, value: db, effect: NoSchedule}]
  containers: [{name: c, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata: {name: no-db-pod}
spec:
  nodeSelector: {kubernetes.io/hostname: w2-k8s}
  containers: [{name: c, image: nginx}]
""")
        kube.wait_for(lambda: jsonpath(kube, "get", "pod", "ssd-pod", "-o", "jsonpath={.spec.nodeName}") == "w3-k8s",
                      what="the ssd pod on w3-k8s")
        kube.wait_for(lambda: jsonpath(kube, "get", "pod", "db-pod", "-o", "jsonpath={.spec.nodeName}") == "w2-k8s",
                      what="the tolerating pod on w2-k8s")
        msg = jsonpath(kube, "get", "pod", "no-db-pod", "-o",
                       "jsonpath={.status.conditions[?(@.type=='PodScheduled')].message}")
        assert "1 node(s) had untolerated taint {dedicated: db}" in msg, msg
        assert "2 node(s) didn't match Pod's node affinity/selector" in msg, msg
        # untainting lets it go
        kubectl(kube, "taint", "nodes", "w2-k8s", "dedicated=db:NoSchedule-")
        kube.wait_for(lambda: jsonpath(kube, "get", "pod", "no-db-pod", "-o", "jsonpath={.spec.nodeName}") == "w2-k8s",
                      what="the pod bound once the taint is gone")
    finally:
        kubectl(kube, "taint", "nodes", "w2-k8s", "dedicated=db:NoSchedule-", check=False)
        kubectl(kube, "label", "nodes", "w3-k8s", "disk-")
        kubectl(kube, "delete", "pod", "ssd-pod", "db-pod", "no-db-pod", "--wait=false")


# ---------------------------------------------------------------------------- DaemonSets
DAEMONSET = """\
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers:
      - name: agent
        image: nginx
        resources: {requests: {cpu: 50m, memory: 32Mi}}
"""


def _agents(kube) -> dict[str, str]:
    items = json.loads(kubectl(kube, "get", "pods", "-l", "app=agent", "-o", "json").stdout)["items"]
    return {p["spec"].get("nodeName"): p["metadata"]["name"] for p in items
            if not p["metadata"].get("deletionTimestamp")}


def _ds(kube) -> list[str]:
    return kubectl(kube, "get", "ds", "agent").stdout.splitlines()[1].split()[1:6]


def test_a_daemonset_follows_cordon_taints_and_a_node_down_and_up(kube):
    assert "daemonset.apps/agent created" in apply(kube, DAEMONSET)
    try:
        kube.wait_for(lambda: _ds(kube) == ["3", "3", "3", "3", "3"], what="a pod per worker Ready")
        assert sorted(_agents(kube)) == ["w1-k8s", "w2-k8s", "w3-k8s"]
        kubectl(kube, "rollout", "status", "ds/agent", "--timeout=30s", timeout=60)
        # cordon: as on a real cluster, its daemon pod stays (daemon pods tolerate unschedulable)
        kubectl(kube, "cordon", "w3-k8s")
        time.sleep(1)
        assert "w3-k8s" in _agents(kube) and _ds(kube)[0] == "3"
        kubectl(kube, "uncordon", "w3-k8s")
        # a NoExecute taint it does not tolerate takes it away, and it comes back when the taint goes
        kubectl(kube, "taint", "nodes", "w2-k8s", "maintenance=now:NoExecute")
        kube.wait_for(lambda: "w2-k8s" not in _agents(kube) and _ds(kube)[0] == "2", what="the pod off w2-k8s")
        kubectl(kube, "taint", "nodes", "w2-k8s", "maintenance=now:NoExecute-")
        kube.wait_for(lambda: _ds(kube) == ["3", "3", "3", "3", "3"], what="the pod back on w2-k8s")
        # a node down: its pod stays (tolerated for ever), the node no longer counts; up: back to 3 Ready
        before = _agents(kube)["w1-k8s"]
        kube.run("node", "down", "w1-k8s")
        kube.wait_for(lambda: _ds(kube)[0] == "2", what="DESIRED 2 with w1-k8s down")
        assert _agents(kube)["w1-k8s"] == before
        kube.run("node", "up", "w1-k8s")
        kube.wait_for(lambda: _ds(kube) == ["3", "3", "3", "3", "3"], timeout=30, what="3 Ready after node up")
        assert _agents(kube)["w1-k8s"] == before
        # a rolling update replaces them, node by node
        kubectl(kube, "set", "image", "ds/agent", "agent=nginx:1.27")
        kubectl(kube, "rollout", "status", "ds/agent", "--timeout=60s", timeout=90)
        images = jsonpath(kube, "get", "pods", "-l", "app=agent", "-o", "jsonpath={.items[*].spec.containers[0].image}")
        assert set(images.split()) == {"nginx:1.27"}
        assert "2" in kubectl(kube, "rollout", "history", "ds/agent").stdout.split()
    finally:
        kubectl(kube, "taint", "nodes", "w2-k8s", "maintenance=now:NoExecute-", check=False)
        kubectl(kube, "uncordon", "w3-k8s", check=False)
        kubectl(kube, "delete", "ds", "agent", "--wait=false")


# ---------------------------------------------------------------------------- graceful termination
GRACEFUL = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: graceful}
spec:
  replicas: 2
  selector: {matchLabels: {app: graceful}}
  template:
    metadata: {labels: {app: graceful}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: web
        image: sysnet4admin/echo-hname
        ports: [{containerPort: 80}]
        lifecycle:
          preStop:
            exec: {command: [sh, -c, "sleep 2"]}
---
apiVersion: v1
kind: Service
metadata: {name: graceful}
spec:
  type: NodePort
  selector: {app: graceful}
  ports: [{port: 80, targetPort: 80, nodePort: 30180}]
"""


def test_a_graceful_delete_loses_no_request(kube):
    apply(kube, GRACEFUL)
    try:
        kubectl(kube, "rollout", "status", "deployment/graceful", "--timeout=60s", timeout=90)
        victim = jsonpath(kube, "get", "pods", "-l", "app=graceful", "-o", "jsonpath={.items[0].metadata.name}")
        ip = kube.node_ips["w1-k8s"]
        answers: list[str] = []
        stop = threading.Event()

        def loop():
            deadline = time.time() + 30
            while not stop.is_set() and time.time() < deadline:
                answers.append(curl(kube, ip, 30180, timeout=2).strip())

        t = threading.Thread(target=loop)
        t.start()
        try:
            time.sleep(0.5)
            t0 = time.monotonic()
            kubectl(kube, "delete", "pod", victim, timeout=60)  # waits until it is gone
            took = time.monotonic() - t0
            time.sleep(1.0)
        finally:
            stop.set()
            t.join()
        assert took >= 2.0, took  # the preStop hook ran before SIGTERM
        failed = [a for a in answers if not a.startswith("graceful-")]
        assert len(answers) > 10 and not failed, (len(answers), failed[:5])
        events = kubectl(kube, "get", "events", "--field-selector", f"involvedObject.name={victim}").stdout
        assert "Killing" in events and "Stopping container web" in events
    finally:
        kubectl(kube, "delete", "-f", "-", "--wait=false", input=GRACEFUL)


# ---------------------------------------------------------------------------- init containers, Jobs
def test_init_containers_run_in_order_before_the_app(kube):
    apply(kube, """\
apiVersion: v1
kind: Pod
metadata: {name: init-demo}
spec:
  initContainers:
  - {name: first, image: busybox, command: [sh, -c, "sleep 1"]}
  - {name: second, image: busybox, command: [sh, -c, "sleep 1"]}
  containers:
  - {name: app, image: nginx}
""")
    w = Watch(kube, "init-demo")
    try:
        kube.wait_for(lambda: jsonpath(kube, "get", "pod", "init-demo", "-o", "jsonpath={.status.phase}") == "Running",
                      timeout=30, what="the app running")
        time.sleep(0.5)
    finally:
        lines = w.stop()
        states = rows(lines, "init-demo")
    pod = json.loads(kubectl(kube, "get", "pod", "init-demo", "-o", "json").stdout)
    inits = pod["status"]["initContainerStatuses"]
    assert [s["state"]["terminated"]["reason"] for s in inits] == ["Completed", "Completed"]
    first_done = inits[0]["state"]["terminated"]["finishedAt"]
    assert first_done <= inits[1]["state"]["terminated"]["startedAt"]
    assert any(s.startswith("Init:") for s in states) and states[-1] == "Running", states
    kubectl(kube, "delete", "pod", "init-demo", "--wait=false")


def test_a_job_runs_to_its_completions(kube):
    apply(kube, """\
apiVersion: batch/v1
kind: Job
metadata: {name: count}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox, command: [sh, -c, "echo done"]}
""")
    res = kubectl(kube, "wait", "--for=condition=complete", "job/count", "--timeout=60s", timeout=90, check=False)
    assert res.returncode == 0, res.stderr + kubectl(kube, "get", "job,pods", "-o", "wide").stdout
    row = kubectl(kube, "get", "job", "count").stdout.splitlines()[1].split()
    assert row[1:3] == ["Complete", "3/3"]
    pods = json.loads(kubectl(kube, "get", "pods", "-l", "batch.kubernetes.io/job-name=count", "-o", "json").stdout)
    assert len(pods["items"]) == 3 and {p["status"]["phase"] for p in pods["items"]} == {"Succeeded"}
    assert "done" in kubectl(kube, "logs", pods["items"][0]["metadata"]["name"]).stdout
    kubectl(kube, "delete", "job", "count", "--wait=false")


def test_a_drain_is_blocked_by_a_pod_disruption_budget_then_allowed(kube):
    apply(kube, """\
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: np-pdb}
spec:
  minAvailable: 3
  selector: {matchLabels: {app: np-pods}}
""")
    res = kubectl(kube, "drain", "w1-k8s", "--ignore-daemonsets", "--timeout=8s", check=False, timeout=60)
    assert "Cannot evict pod as it would violate the pod's disruption budget." in res.stderr
    kubectl(kube, "patch", "pdb", "np-pdb", "--type=merge", "-p", '{"spec":{"minAvailable":2}}')
    kubectl(kube, "drain", "w1-k8s", "--ignore-daemonsets", "--timeout=60s", timeout=90)
    kubectl(kube, "uncordon", "w1-k8s")
    kubectl(kube, "delete", "pdb", "np-pdb")
