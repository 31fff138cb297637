#!/usr/bin/env python3
"""Scheduling throughput (issue 16): pods bound per second for a 1,000-pod Deployment on a 20-node lab
with affinity and spread constraints, and where the time goes.

Two measurements, side by side in one run:

- the control plane alone (no kernel, no root): a Cluster of 20 workers and a control plane with the
  API server's storage attached (so every bind pays what it pays in a lab: the object dump, the watch
  window, the Scheduled event); the ReplicaSet first creates the 1,000 pods, then one scheduler pass
  binds them, timed, and profiled by the scheduler's own stages (PreFilter, Filter, Score, bind);
- a real 20-node lab (--live, as root): the Deployment created through the API, a watch client
  timing the first pod seen to the last pod seen bound (and, for scale, to all of them Running);

and, as the anchor, kube-scheduler's throughput in upstream's scalability tests (tens to a few hundred
pods per second: the scheduler_perf SchedulingBasic / SchedulingPodAntiAffinity workloads, the 100
pods/s the density SLO assumed for years). Target: at least 1,000 pods/s.

    sudo .venv/bin/python scripts/bench_scheduling.py [--pods 1000] [--nodes 20] [--live]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netemu.control import nodes as nodes_mod  # noqa: E402
from netemu.control import scheduler  # noqa: E402
from netemu.control.cluster import Cluster  # noqa: E402
from netemu.spec.models import Deployment, Lab  # noqa: E402

LAB = "benchsched"
NETWORK = "192.168.253"
ANCHOR = "kube-scheduler (upstream scalability tests): tens to a few hundred pods/s"

AFFINITY = {
    "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "bench"}},
                                           "topologyKey": "kubernetes.io/hostname"}}]},
    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "bench/rack", "operator": "In",
                                                                 "values": ["a"]}]}}]},
}
SPREAD = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
           "labelSelector": {"matchLabels": {"app": "bench"}}},
          {"maxSkew": 2, "topologyKey": "bench/rack", "whenUnsatisfiable": "ScheduleAnyway",
           "labelSelector": {"matchLabels": {"app": "bench"}}}]


def deployment(pods: int, constrained: bool) -> dict:
    spec = {"containers": [{"name": "c", "image": "sysnet4admin/echo-hname",
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    if constrained:
        spec.update(affinity=AFFINITY, topologySpreadConstraints=SPREAD)
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "bench", "namespace": "default"},
            "spec": {"replicas": pods, "selector": {"matchLabels": {"app": "bench"}},
                     "template": {"metadata": {"labels": {"app": "bench"}}, "spec": spec}}}


def lab_nodes(n: int) -> list[dict]:
    out = [{"name": "m-k8s", "ip": f"{NETWORK}.10", "role": "control-plane"}]
    for i in range(1, n + 1):
        out.append({"name": f"w{i}-k8s", "ip": f"{NETWORK}.{100 + i}", "labels": {"bench/rack": "ab"[i % 2]},
                    "capacity": {"cpu": "8", "memory": "32Gi"}})
    return out


# ---------------------------------------------------------------------------- in process
class Stages:
    """Wall time per scheduler stage, by wrapping the module's functions."""

    NAMES = ("prefilter", "run_filters", "score", "bind", "preempt")

    def __init__(self):
        self.t: dict[str, float] = defaultdict(float)
        self.saved = {}

    def __enter__(self):
        for name in self.NAMES:
            fn = getattr(scheduler, name)
            self.saved[name] = fn

            def wrap(*a, _fn=fn, _name=name, **kw):
                t0 = time.perf_counter()
                try:
                    return _fn(*a, **kw)
                finally:
                    self.t[_name] += time.perf_counter() - t0
            setattr(scheduler, name, wrap)
        return self

    def __exit__(self, *exc):
        for name, fn in self.saved.items():
            setattr(scheduler, name, fn)


def in_process(pods: int, n_nodes: int, constrained: bool) -> dict:
    from netemu.api.storage import Storage
    from netemu.spec.defaults import apply_defaults

    lab = Lab.model_validate({"metadata": {"name": "bench"}, "spec": {"nodes": lab_nodes(n_nodes),
                                                                     "nodePodPrefix": 24}})
    c = Cluster(lab)
    Storage(c)  # the API's change feed: each bind is dumped and enters the watch window, as in a lab
    c.bootstrap()
    for node in c.store.list("Node"):
        nodes_mod.set_ready(c, node, True, "KubeletReady", "ok")
    c.reconcile()
    d = apply_defaults(Deployment.model_validate(deployment(pods, constrained)))
    c.apply([d])
    sched = scheduler.reconcile
    scheduler_off = [True]

    def held(cluster):  # let the ReplicaSet make its pods first; then time the scheduler alone
        if not scheduler_off[0]:
            sched(cluster)

    from netemu.control import cluster as cluster_mod
    ctrls = cluster_mod.CONTROLLERS
    cluster_mod.CONTROLLERS = tuple(held if f is sched else f for f in ctrls)
    try:
        t0 = time.perf_counter()
        c.reconcile()
        create_s = time.perf_counter() - t0
    finally:
        cluster_mod.CONTROLLERS = ctrls
    pending = [p for p in c.store.list("Pod", "default") if not p.spec.node_name]
    assert len(pending) == pods, len(pending)
    with Stages() as st:
        t0 = time.perf_counter()
        scheduler.reconcile(c)
        bind_s = time.perf_counter() - t0
    bound = [p for p in c.store.list("Pod", "default") if p.spec.node_name]
    per_node = defaultdict(int)
    for p in bound:
        per_node[p.spec.node_name] += 1
    return {"pods": pods, "bound": len(bound), "create_s": create_s, "bind_s": bind_s,
            "rate": len(bound) / bind_s, "stages": dict(st.t),
            "skew": max(per_node.values()) - min(per_node.values()) if per_node else 0}


# ---------------------------------------------------------------------------- a real lab
def live(pods: int, n_nodes: int) -> dict:
    import yaml

    doc = {"apiVersion": "netemu.dev/v1alpha1", "kind": "Lab", "metadata": {"name": LAB},
           "spec": {"network": f"{NETWORK}.0/24", "gateway": f"{NETWORK}.1", "podCIDR": "172.29.0.0/16",
                    "serviceCIDR": "10.253.0.0/16", "clusterDNS": "10.253.0.10", "nodes": lab_nodes(n_nodes)}}
    tmp = tempfile.mkdtemp(prefix="bench-sched-")
    path = os.path.join(tmp, "lab.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)
    env = dict(os.environ, KUBECONFIG=os.path.join(tmp, "kubeconfig"))
    netemu = [sys.executable, "-m", "netemu"]
    subprocess.run(netemu + ["down", LAB], capture_output=True, env=env)
    subprocess.run(netemu + ["up", path], check=True, capture_output=True, env=env, timeout=300)
    try:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from bench_api import Api

        api = Api(LAB)
        st, body = api.request("GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dbench")
        rv = json.loads(body)["metadata"]["resourceVersion"]
        w = api.connect()
        w.request("GET", f"/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"
                         "&labelSelector=app%3Dbench")
        resp = w.getresponse()
        seen: dict[str, float] = {}
        bound: dict[str, float] = {}
        running: dict[str, float] = {}
        done = threading.Event()

        def reader():
            while not done.is_set():
                try:
                    line = resp.readline()
                except OSError:  # the connection closed under it at the end
                    return
                if not line:
                    return
                ev = json.loads(line)
                now = time.perf_counter()
                o = ev["object"]
                name = o["metadata"]["name"]
                seen.setdefault(name, now)
                if o["spec"].get("nodeName"):
                    bound.setdefault(name, now)
                if (o.get("status") or {}).get("phase") == "Running":
                    running.setdefault(name, now)
                    if len(running) >= pods:
                        done.set()

        threading.Thread(target=reader, daemon=True).start()
        t0 = time.perf_counter()
        st, body = api.request("POST", "/apis/apps/v1/namespaces/default/deployments", deployment(pods, True))
        assert st == 201, body[:300]
        done.wait(timeout=600)
        first = min(seen.values())
        out = {"pods": pods, "bound": len(bound), "running": len(running),
               "create_to_bound_s": max(bound.values()) - t0 if bound else float("nan"),
               "seen_to_bound_s": max(bound.values()) - first if bound else float("nan"),
               "to_running_s": max(running.values()) - t0 if running else float("nan")}
        w.close()
        api.close()
        return out
    finally:
        subprocess.run(netemu + ["down", LAB], capture_output=True, env=env, timeout=120)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--live", action="store_true", help="also a real lab (root): the Deployment through the API")
    args = ap.parse_args()

    rows = []
    for label, constrained in (("spread + anti-affinity + node affinity", True), ("default profile only", False)):
        r = in_process(args.pods, args.nodes, constrained)
        rows.append((label, r))
    print(f"\nScheduling {args.pods} pods of one Deployment on {args.nodes} workers (+ a control plane)\n")
    print(f"{'case':<44} {'bound':>6} {'pass':>8} {'pods/s':>9} {'skew':>5}")
    for label, r in rows:
        print(f"{'control plane, ' + label:<44} {r['bound']:>6} {r['bind_s']:>7.3f}s {r['rate']:>9,.0f} {r['skew']:>5}")
    r = rows[0][1]
    other = r["bind_s"] - sum(r["stages"].values())
    print("\nwhere the time goes (spread + affinity): " + ", ".join(
        f"{k} {v / r['bind_s'] * 100:.0f}% ({v * 1000 / args.pods:.3f} ms/pod)" for k, v in r["stages"].items()
        if k != "preempt") + f", queue/snapshot {other / r['bind_s'] * 100:.0f}%")
    print(f"(the ReplicaSet's creation of the {args.pods} pods, before: {r['create_s']:.3f}s)")
    if args.live:
        lv = live(args.pods, args.nodes)
        print(f"\nreal lab, through the API: {lv['bound']} bound {lv['seen_to_bound_s']:.3f}s after the first pod was "
              f"seen ({lv['bound'] / lv['seen_to_bound_s']:,.0f} pods/s as a watch client sees it); created -> all "
              f"bound {lv['create_to_bound_s']:.3f}s; all {lv['running']} Running after {lv['to_running_s']:.1f}s")
    print(f"\nanchor: {ANCHOR}; target: >= 1,000 pods/s")


if __name__ == "__main__":
    main()
