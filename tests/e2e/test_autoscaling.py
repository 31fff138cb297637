"""Resource limits on real cgroups, `top`, and the HorizontalPodAutoscaler under a real load loop.

The CPU cap is measured from the pod's cgroup (cpuacct.usage / cpu.stat) over 2 s; the memory
limit must get a process that goes over it OOM-killed (OOMKilled, exit code 137). The HPA test is
the seed's walkthrough with short windows: requests cpu 10m, limits cpu 50m, `autoscale --min=1
--max=4 --cpu-percent=50`, a bounded load loop from the host through the NodePort makes the
replicas grow, and stopping it makes them shrink.
"""
from __future__ import annotations

import http.client
import json
import threading
import time

from conftest import curl

from netemu.dataplane.cgroups import LabCgroups
from netemu.dataplane.metrics import read_pod
from netemu.dataplane.resources import oom_kills, read_settings

BURNERS = """\
apiVersion: v1
kind: Pod
metadata: {name: burn-50m}
spec:
  containers:
  - name: burn
    image: busybox
    command: ["/bin/sh", "-c", "while :; do :; done"]
    resources:
      requests: {cpu: 10m}
      limits: {cpu: 50m}
---
apiVersion: v1
kind: Pod
metadata: {name: burn-500m}
spec:
  containers:
  - name: burn
    image: busybox
    command: ["/bin/sh", "-c", "while :; do :; done"]
    resources:
      limits: {cpu: 500m, memory: 64Mi}
"""

HOG = """\
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  containers:
  - name: hog
    image: busybox
    command: ["/usr/bin/python3", "-c", "import time; time.sleep(1); x = b'x' * (256 << 20); time.sleep(60)"]
    resources:
      limits: {memory: 64Mi}
"""

SEED = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: np-pods
spec:
  replicas: 1
  selector:
    matchLabels: {app: np-pods}
  template:
    metadata:
      labels: {app: np-pods}
    spec:
      containers:
      - name: echo-hname
        image: sysnet4admin/echo-hname
        ports:
        - containerPort: 80
        resources:
          requests:
            cpu: "10m"
          limits:
            cpu: "50m"
---
apiVersion: v1
kind: Service
metadata:
  name: np-svc
spec:
  selector: {app: np-pods}
  ports:
  - name: http
    protocol: TCP
    port: 80
    targetPort: 80
    nodePort: 30000
  type: NodePort
"""


def _cpu_ns(lab, uid: str) -> int:
    r = read_pod(LabCgroups(lab.name), uid, time.time())
    assert r is not None, f"no cgroup for pod {uid}"
    return r.cpu_ns


def _cpu_share(lab, uid: str, seconds: float = 2.0) -> float:
    """The fraction of one core the pod used over `seconds`, from its cgroup's counter."""
    t0, c0 = time.monotonic(), _cpu_ns(lab, uid)
    time.sleep(seconds)
    t1, c1 = time.monotonic(), _cpu_ns(lab, uid)
    return (c1 - c0) / 1e9 / (t1 - t0)


def test_cpu_limit_caps_a_busy_loop_and_memory_limit_oom_kills(lab, tmp_path):
    lab.up(BURNERS, tmp_path=tmp_path, lab_spec={"metricResolutionSeconds": 1})
    pods = {p["metadata"]["name"]: p for p in lab.get("pods")}
    uid50, uid500 = pods["burn-50m"]["metadata"]["uid"], pods["burn-500m"]["metadata"]["uid"]
    cg = LabCgroups(lab.name)
    if cg.v2:
        assert read_settings(cg, uid50)["cpu.max"] == "5000 100000"
        assert read_settings(cg, uid500)["memory.max"] == str(64 << 20)
    else:
        assert read_settings(cg, uid50)["cpu.cfs_quota_us"] == "5000"
        assert read_settings(cg, uid50)["cpu.shares"] == "10"
        assert read_settings(cg, uid500)["cpu.cfs_quota_us"] == "50000"
        assert read_settings(cg, uid500)["memory.limit_in_bytes"] == str(64 << 20)

    share50 = _cpu_share(lab, uid50)
    share500 = _cpu_share(lab, uid500)
    print(f"\nlimits.cpu 50m: {share50 * 100:.2f}% of a core; limits.cpu 500m: {share500 * 100:.2f}%")
    # the caps are the point; below them a busy machine may give a loop less (CI's 2 CPUs run other
    # tests' labs too), so the floor checks only that both ran and that the quotas tell them apart
    assert 0 < share50 <= 0.065, f"50m caps a busy loop at ~5% of a core, measured {share50:.3%}"
    assert share50 * 3 < share500 <= 0.56, f"500m caps it at ~50%, measured {share500:.3%} (50m: {share50:.3%})"

    # top pods: the same figures, as metrics-server reports them
    def top_burners():
        out = lab.run("top", "pods", check=False).stdout
        rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
        return rows if {"burn-50m", "burn-500m"} <= set(rows) else None
    rows = lab.wait_for(top_burners, timeout=15, interval=0.5, what="top pods")
    assert lab.run("top", "pods").stdout.splitlines()[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    cpu50, cpu500 = int(rows["burn-50m"][1].rstrip("m")), int(rows["burn-500m"][1].rstrip("m"))
    assert 0 < cpu50 <= 65 and cpu50 * 3 < cpu500 <= 560, rows  # the caps again (no floor: see above)
    assert rows["burn-50m"][2].endswith("Mi")
    nodes = lab.run("top", "nodes").stdout.splitlines()
    assert nodes[0].split() == ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]
    busiest = max(int(line.split()[1].rstrip("m")) for line in nodes[1:] if not line.split()[1].startswith("<"))
    assert busiest > cpu50 * 3, nodes  # the node of the 500m loop shows it

    # memory: 256 MiB in a pod limited to 64 MiB is killed by the kernel
    (tmp_path / "hog.yaml").write_text(HOG)
    lab.run("apply", "-f", str(tmp_path / "hog.yaml"))

    def hog_killed():
        st = lab.get("pods", "hog")[0]["status"].get("containerStatuses") or []
        return (((st[0].get("lastState") or {}).get("terminated")) or
                ((st[0].get("state") or {}).get("terminated"))) if st else None
    term = lab.wait_for(hog_killed, timeout=30, interval=0.5, what="the hog to be killed")
    assert term["exitCode"] == 137 and term["reason"] == "OOMKilled", term
    assert "OOMKilled" in lab.run("describe", "pod", "hog").stdout
    assert oom_kills(cg, lab.get("pods", "hog")[0]["metadata"]["uid"]) >= 1


def _load(address: str, port: int, stop: threading.Event, deadline: float, counts: list) -> None:
    while not stop.is_set() and time.time() < deadline:
        conn = http.client.HTTPConnection(address, port, timeout=5)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            counts[0] += 1
        except OSError:
            counts[1] += 1
        finally:
            conn.close()


def test_hpa_scales_up_under_load_and_back_down(lab, tmp_path):
    spec = {"metricResolutionSeconds": 1, "hpaSyncPeriodSeconds": 2, "hpaDownscaleStabilizationSeconds": 5}
    lab.up(SEED, tmp_path=tmp_path, lab_spec=spec)
    out = lab.run("autoscale", "deployment", "np-pods", "--min=1", "--max=4", "--cpu-percent=50").stdout
    assert out.strip() == "horizontalpodautoscaler.autoscaling/np-pods autoscaled"
    again = lab.run("autoscale", "deployment", "np-pods", "--max=4", check=False)
    assert again.returncode != 0 and "already exists" in again.stderr

    def hpa():
        return lab.get("hpa", "np-pods")[0]

    def replicas() -> int:
        return lab.get("deployment", "np-pods")[0]["spec"]["replicas"]

    def utilization():
        cur = (hpa().get("status") or {}).get("currentMetrics") or [{}]
        return ((cur[0].get("resource") or {}).get("current") or {}).get("averageUtilization")

    # metrics flow: TARGETS shows a percentage, top shows the pod
    lab.wait_for(lambda: utilization() is not None, timeout=20, interval=0.5, what="the HPA to see cpu metrics")
    table = lab.run("get", "hpa").stdout.splitlines()
    assert table[0].split() == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]
    row = table[1].split()
    assert row[:2] == ["np-pods", "Deployment/np-pods"] and row[2] == "cpu:" and row[3].endswith("/50%"), table
    assert row[4:7] == ["1", "4", "1"], table
    assert replicas() == 1
    pod = lab.pods("app=np-pods")[0]["metadata"]["name"]
    assert pod in lab.run("top", "pods").stdout

    # a bounded load loop from the host through the NodePort
    node = lab.node_ips["w1-k8s"]
    assert curl(lab, node, 30000).strip() == pod  # routed into the lab, answered by the pod
    stop, counts = threading.Event(), [0, 0]
    deadline = time.time() + 60
    workers = [threading.Thread(target=_load, args=(node, 30000, stop, deadline, counts), daemon=True)
               for _ in range(4)]
    t0 = time.time()
    for w in workers:
        w.start()
    try:
        peak = lab.wait_for(lambda: replicas() if replicas() >= 3 else None, timeout=45, interval=0.5,
                            what="the HPA to scale up under load")
        up_after = time.time() - t0
        top = lab.run("top", "pods").stdout
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=10)
    print(f"\nload: {counts[0]} requests ({counts[1]} failed) in {time.time() - t0:.1f}s; "
          f"scaled to {peak} after {up_after:.1f}s\n{top}")
    assert counts[0] > 100
    events = lab.run("get", "events").stdout
    assert "SuccessfulRescale" in events
    assert "cpu resource utilization (percentage of request) above target" in events

    # load stopped: back to minReplicas once the 5 s stabilization window has passed
    t1 = time.time()
    lab.wait_for(lambda: replicas() == 1, timeout=60, interval=1, what="the HPA to scale back down")
    down_after = time.time() - t1
    assert down_after >= 3, f"scaled down after {down_after:.1f}s: the stabilization window is 5 s"
    lab.wait_for(lambda: len(lab.pods("app=np-pods")) == 1, timeout=30, what="the extra pods to go")
    print(f"scaled back to 1 replica {down_after:.1f}s after the load stopped")
    events = lab.run("get", "events").stdout
    assert "New size: 1; reason: All metrics below target" in events
    described = lab.run("describe", "hpa", "np-pods").stdout
    assert "Deployment/np-pods" in described and "ScalingActive" in described and "ValidMetricFound" in described
    assert json.loads(lab.run("get", "hpa", "np-pods", "-o", "json").stdout)["apiVersion"] == "autoscaling/v2"
