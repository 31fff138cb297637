#!/usr/bin/env python3
"""Big labs (issue 15): does a change cost what it touches, or what exists?

Two labs of the same pods on 10 workers, measured one after the other in one run:

  many   5,000 pods in 1,000 Deployments of 5, each with its Service, in 10 namespaces
  one    the same 5,000 pods in one Deployment, with one Service

For each: `netemu up` to all pods Ready (wall time of the command); one Deployment scaled by +30
through the API to all its pods Ready (a watch on the Deployment sees readyReplicas reach the number);
the control process's CPU while the lab is idle for 60 s (its own utime+stime, pods excluded); and
`get pods` latency through the API (one namespace, and every namespace). The ratio many/one says
whether the number of Deployments matters. Targets: scale +30 under 1 s and within 1.2x of `one`,
idle CPU under 1 % of a core.

Run as root:  .venv/bin/python scripts/bench_scale.py [--pods 5000] [--deployments 1000] [--idle 60]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_api import Api, pct  # noqa: E402

NETEMU = [sys.executable, "-m", "netemu"]
LAB = "benchscale"
NET = "192.168.249"
WORKERS = 10
NAMESPACES = 10
SCALE_BY = 30
CLK_TCK = os.sysconf("SC_CLK_TCK")
MB_PER_POD = 4.5  # what a pod costs this machine, processes and kernel (3,000 pods took 13 GB)


def mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def lab_yaml(pods: int, deployments: int) -> str:
    import yaml

    per_node = pods // WORKERS + SCALE_BY + 20
    nodes = [{"name": "m-k8s", "ip": f"{NET}.10", "role": "control-plane"}] + [
        {"name": f"w{i}-k8s", "ip": f"{NET}.{100 + i}", "capacity": {"pods": str(per_node)}}
        for i in range(1, WORKERS + 1)]
    docs = [{"apiVersion": "netemu.dev/v1alpha1", "kind": "Lab", "metadata": {"name": LAB},
             "spec": {"network": f"{NET}.0/24", "gateway": f"{NET}.1", "podCIDR": "172.30.0.0/16",
                      "nodePodPrefix": 22, "serviceCIDR": "10.249.0.0/16", "clusterDNS": "10.249.0.10",
                      "nodes": nodes}}]
    docs += [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns{i}"}} for i in range(NAMESPACES)]
    for d in range(deployments):
        name, ns = f"d{d}", f"ns{d % NAMESPACES}"
        labels = {"app": name}
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
                     "spec": {"replicas": pods // deployments, "selector": {"matchLabels": labels},
                              "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                                  {"name": "echo", "image": "sysnet4admin/echo-hname",
                                   "ports": [{"containerPort": 80}]}]}}}})
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                     "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 80}]}})
    return yaml.safe_dump_all(docs)


def control_pid() -> int:
    """The lab's control process (daemon.pid; its supervisor is its parent, the launcher its child)."""
    return int(open(f"/run/netemu/{LAB}/daemon.pid").read().split()[0])


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def scale_to_ready(api: Api, ns: str, name: str) -> float:
    """PATCH the Deployment's scale by +SCALE_BY; seconds until a watch sees all its replicas ready."""
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"
    st, body = api.request("GET", f"{path}?fieldSelector=metadata.name%3D{name}")
    listing = json.loads(body)  # the list's resourceVersion: the object's own may be older than the watch window
    want = listing["items"][0]["spec"]["replicas"] + SCALE_BY
    w = api.connect()
    w.request("GET", f"{path}?watch=true&fieldSelector=metadata.name%3D{name}"
                     f"&resourceVersion={listing['metadata']['resourceVersion']}")
    resp = w.getresponse()
    done = threading.Event()

    def reader():
        while True:
            line = resp.readline()
            if not line:
                return
            event = json.loads(line)
            if event["type"] == "ERROR":
                raise SystemExit(f"watch: {event['object'].get('message')}")
            status = event["object"].get("status") or {}
            if status.get("readyReplicas") == want and status.get("replicas") == want:
                done.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    t0 = time.perf_counter()
    st, body = api.request("PATCH", f"{path}/{name}/scale", {"spec": {"replicas": want}},
                           ctype="application/merge-patch+json")
    assert st == 200, body[:300]
    ok = done.wait(120)
    took = time.perf_counter() - t0
    w.close()
    return took if ok else float("nan")


def get_latency(api: Api, path: str, n: int = 5) -> float:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        st, _ = api.request("GET", path)
        out.append(time.perf_counter() - t0)
        assert st == 200
    return pct(out, 50)


def measure(label: str, pods: int, deployments: int, idle: float) -> dict:
    tmp = tempfile.mkdtemp(prefix="bench-scale-")
    path = os.path.join(tmp, "lab.yaml")
    with open(path, "w") as f:
        f.write(lab_yaml(pods, deployments))
    env = dict(os.environ, KUBECONFIG=os.path.join(tmp, "kubeconfig"))
    subprocess.run(NETEMU + ["down", LAB], capture_output=True, env=env)
    out = {"label": label, "pods": pods, "deployments": deployments}
    try:
        t0 = time.perf_counter()
        res = subprocess.run(NETEMU + ["up", path, "--timeout", "900"], capture_output=True, text=True, env=env,
                             timeout=1200)
        out["up_s"] = time.perf_counter() - t0
        if res.returncode != 0:
            raise SystemExit(f"{label}: netemu up failed: {res.stderr.strip()[-800:]}")
        api = Api(LAB)
        time.sleep(5)  # the first metrics sample and leases come and go
        pid = control_pid()
        c0, t0 = cpu_seconds(pid), time.perf_counter()
        time.sleep(idle)
        out["idle_cpu_pct"] = 100 * (cpu_seconds(pid) - c0) / (time.perf_counter() - t0)
        target = ("ns3", "d3") if deployments > 1 else ("ns0", "d0")
        out["scale_s"] = scale_to_ready(api, *target)
        time.sleep(2)
        out["scale_again_s"] = scale_to_ready(api, *target)
        out["get_ns_s"] = get_latency(api, f"/api/v1/namespaces/{target[0]}/pods")
        out["get_all_s"] = get_latency(api, "/api/v1/pods")
        api.close()
        t0 = time.perf_counter()
        res = subprocess.run(NETEMU + ["down", LAB], capture_output=True, text=True, env=env, timeout=600)
        out["down_s"] = time.perf_counter() - t0
        out["down_killed"] = "killing it" in res.stderr
        return out
    finally:
        if os.path.exists(f"/run/netemu/{LAB}"):
            subprocess.run(NETEMU + ["down", LAB], capture_output=True, env=env, timeout=600)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--deployments", type=int, default=1000)
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU measurement")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it builds real labs")
    need, have = args.pods * MB_PER_POD + 1024, mem_available_mb()
    if need > have:  # a lab past the machine's memory thrashes it (and whatever else runs on it)
        raise SystemExit(f"{args.pods:,} pods need about {need / 1024:.1f} GB and {have / 1024:.1f} GB is available: "
                         f"use fewer (--pods {int((have - 1024) / MB_PER_POD) // 1000 * 1000})")
    many = measure("many", args.pods, args.deployments, args.idle)
    one = measure("one", args.pods, 1, args.idle)
    print(f"\n{args.pods:,} pods on {WORKERS} workers; {args.deployments:,} Deployments + Services "
          f"in {NAMESPACES} namespaces (many) vs one Deployment + Service (one)\n")
    rows = [("up to all Ready (s)", "up_s", "{:.1f}"),
            (f"scale +{SCALE_BY} to Ready (s)", "scale_s", "{:.2f}"),
            (f"again +{SCALE_BY} (s)", "scale_again_s", "{:.2f}"),
            (f"idle control CPU over {args.idle:.0f} s (%)", "idle_cpu_pct", "{:.2f}"),
            ("get pods, one namespace (s)", "get_ns_s", "{:.3f}"),
            ("get pods, all namespaces (s)", "get_all_s", "{:.3f}"),
            ("down (s)", "down_s", "{:.1f}")]
    print(f"{'':38} {'many':>10} {'one':>10} {'many/one':>9}")
    for title, key, fmt in rows:
        a, b = many.get(key, float("nan")), one.get(key, float("nan"))
        ratio = a / b if b else float("nan")
        print(f"{title:38} {fmt.format(a):>10} {fmt.format(b):>10} {ratio:>8.2f}x")
    for r in (many, one):
        if r.get("down_killed"):
            print(f"note: {r['label']}: down had to kill the control process (it did not stop in time)")
    print(f"\ntargets: scale +{SCALE_BY} < 1 s and within 1.2x of one; idle CPU < 1 %")


if __name__ == "__main__":
    main()
